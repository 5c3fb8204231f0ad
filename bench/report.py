"""Render bench/results/*.json into BENCHMARKS.md: for each benchmark the exact command, when and where it ran,
its tables (as the script printed them), its goals, and the commentary in bench/notes/<name>.md when present.

    python bench/report.py                 # writes BENCHMARKS.md at the repo root
    python bench/report.py --allow-quick   # also render quick-mode (smoke test) results, marked as such
"""
from __future__ import annotations
import argparse, json, sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import SCRIPTS as ORDER, md_table, fmt, verdict  # noqa: E402

HEADINGS = {'overhead': 'Framework overhead', 'data_pipeline': 'Data pipeline', 'quality': 'Quality at the same epochs', 'ablation': 'Ablation', 'lr_rule': 'The learning-rate rule',
            'default_run': 'The default run', 'tta': 'TTA cost', 'memory': 'Peak memory',
            'gpu': 'GPU throughput and mixed precision', 'native_resolution': 'Native-resolution training'}
NUM = {n: f'{i + 1}.' for i, n in enumerate(ORDER)}


def env_line(e:dict) -> str:
    where = e.get('gpu') or e.get('cpu')
    lib = f"unetlearn {e.get('unetlearn')} (commit {e.get('commit')}{', library modified' if e.get('library_modified') else ''})"
    return (f"{where}, {e.get('cpu_count')} CPUs ({e.get('torch_threads')} torch threads); Python {e.get('python')}, "
            f"torch {e.get('torch')}, torchvision {e.get('torchvision')}, fastai {e.get('fastai')}, smp {e.get('smp')}; {lib}; "
            f"load average {e.get('load_avg_1min')} at start, {e.get('load_avg_1min_end')} at end")


def section(d:dict) -> str:
    out = [f"## {NUM.get(d['name'], '')} {d['title']}".replace('##  ', '## '), '']
    if d.get('quick'): out += ['> QUICK MODE (smoke test with tiny sizes): these numbers check that the script runs; they are not a measurement.', '']
    out += [f"Command: `{d['command']}` ({d['wall_s']:.0f} s wall, {d['started']})  ", f"Machine: {env_line(d['env'])}", '']
    for t in d['tables']:
        out += [f"**{t['title']}**", '', md_table(t['headers'], t['rows']), '']
        if t.get('note'): out += [f"_{t['note']}_", '']
    if d.get('goals'):
        out += ['| goal | measured | target | verdict |', '|---|---|---|---|']
        for g in d['goals']:
            out.append(f"| {g['what']} | {fmt(g['value'])} | {g['target']} | {verdict(g['met'], bold=True)}"
                       + (f" ({g['detail']})" if g.get('detail') else '') + ' |')
        out.append('')
    for n in d.get('notes', []): out += [f"- {n}"]
    if d.get('notes'): out.append('')
    extra = HERE/'notes'/f"{d['name']}.md"
    if extra.exists(): out += [extra.read_text().strip(), '']
    return '\n'.join(out)


def main():
    p = argparse.ArgumentParser(prog='bench/report.py', description=__doc__)
    p.add_argument('--results', default=str(HERE/'results'))
    p.add_argument('--out', default=str(ROOT/'BENCHMARKS.md'))
    p.add_argument('--allow-quick', action='store_true')
    a = p.parse_args()
    res = {}
    for f in sorted(Path(a.results).glob('*.json')):
        try: d = json.loads(f.read_text())
        except json.JSONDecodeError: continue
        if d.get('quick') and not a.allow_quick: print(f"skipping {f.name}: quick-mode result (use --allow-quick)"); continue
        res[d['name']] = d
    head = ["# unetlearn benchmarks", '',
            "Measurements, not claims: each table below is produced by one script in `bench/` (the command is given) and is "
            "rendered here from its JSON result by `python bench/report.py`, so the numbers are the ones the script printed. "
            "Timings are medians of interleaved repeats with their spread (quartiles, or min-max below 4 repeats). "
            "Re-run everything with `python bench/run_all.py --report`; CI runs every script in quick mode "
            "(`tests/test_bench.py`, the same as `python bench/run_all.py --quick`) to keep the scripts working.", '']
    intro = HERE/'notes'/'_intro.md'
    if intro.exists(): head += [intro.read_text().strip(), '']
    goals = [(n, g) for n in ORDER if n in res for g in res[n].get('goals', [])]
    if goals:
        head += ['## Goals at a glance', '', '| benchmark | goal | measured | target | verdict |', '|---|---|---|---|---|']
        for n, g in goals:
            head.append(f"| {NUM[n]} {n} | {g['what']} | {fmt(g['value'])} | {g['target']} | {verdict(g['met'], bold=True)} |")
        head.append('')
    body = []
    for n in ORDER:
        if n in res: body.append(section(res[n]))
        else:
            why = ('not run here: this machine has no GPU (`python bench/gpu.py` on a CUDA machine fills it in)' if n == 'gpu'
                   else f'no result yet: run `python bench/{n}.py`')
            body.append(f"## {NUM[n]} {HEADINGS.get(n, n)}\n\n_{why}._\n")
            extra = HERE/'notes'/f'{n}.md'
            if extra.exists(): body.append(extra.read_text().strip() + '\n')
    Path(a.out).write_text('\n'.join(head + body).rstrip() + '\n')
    print(f"wrote {a.out} ({', '.join(res) or 'no results'})")


if __name__ == '__main__': main()
