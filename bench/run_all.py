"""Run every benchmark, each in its own process, and say which failed (exit 1 if any).

    python bench/run_all.py --quick    # CI: every script in quick mode (a smoke test, < 3 min on 2 cores)
    python bench/run_all.py            # the full measurements (about 30-40 min on 2 idle CPU cores)
    python bench/run_all.py --only overhead,tta
"""
from __future__ import annotations
import argparse, os, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import SCRIPTS  # noqa: E402


def main():
    p = argparse.ArgumentParser(prog='bench/run_all.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true')
    p.add_argument('--only', default=None, help='comma-separated subset of ' + ', '.join(SCRIPTS))
    p.add_argument('--report', action='store_true', help='render BENCHMARKS.md afterwards (bench/report.py)')
    a = p.parse_args()
    names = a.only.split(',') if a.only else SCRIPTS
    bad = [n for n in names if n not in SCRIPTS]
    if bad: p.error(f"unknown benchmark(s) {bad}; choose from {SCRIPTS}")
    env = dict(os.environ, PYTHONUNBUFFERED='1', MPLBACKEND='Agg')
    if a.quick: env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # smoke test on a shared CI CPU: no spinning threads
    t_all, status = time.time(), []
    for n in names:
        cmd = [sys.executable, str(HERE/f'{n}.py')] + (['--quick'] if a.quick else [])
        print(f"\n===== {' '.join(['python', f'bench/{n}.py'] + cmd[2:])}", flush=True)
        t = time.time()
        rc = subprocess.run(cmd, env=env, cwd=HERE.parent).returncode
        status.append((n, rc, time.time() - t))
    print('\n| benchmark | exit | seconds |\n|---|---|---|')
    for n, rc, s in status: print(f'| {n} | {rc} | {s:.0f} |')
    print(f'total {time.time() - t_all:.0f} s')
    if a.report and not a.quick: subprocess.run([sys.executable, str(HERE/'report.py')], cwd=HERE.parent)
    failed = [n for n, rc, _ in status if rc]
    if failed:
        print(f'FAILED: {", ".join(failed)}', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__': main()
