"""The README's first command, `unetlearn train` with no arguments (the built-in brain-MRI sample), over several
seeds: the per-epoch validation Dice, the best epoch, and how far the last epoch is from the best. With
`--processes 2` the same command also runs under `torchrun --nproc_per_node 2` (two CPU processes, gloo): one model
trained with DDP on the same data and epochs, whose Dice should match the single-process runs within seed noise.

Goals: the best epoch is never epoch 0 (an untrained network's accident), the last epoch's Dice is within 0.05 of the
best, and the 2-process runs reach the single-process Dice within seed noise.

    python bench/default_run.py                  # 3 seeds, one process (about 6 min on 2 idle cores)
    python bench/default_run.py --processes 2    # and the same 3 seeds under torchrun with 2 processes
    python bench/default_run.py --quick          # smoke test: 1 seed, 1 epoch at 32 px
"""
from __future__ import annotations
import json, os, shutil, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
from _common import Result, parser, ROOT, mean_sd


def train(seed:int, out, processes:int, quick:bool) -> dict:
    base = ['train', '--seed', str(seed), '--out', str(out)] + (['--epochs', '1', '--size', '32'] if quick else [])
    if processes > 1:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(processes), '--master_port',
               str(29500 + seed), '-m', 'unetlearn'] + base
    else: cmd = [sys.executable, '-m', 'unetlearn'] + base
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2)//processes)), MPLBACKEND='Agg')
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode: raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    m = json.loads((out/'metrics.json').read_text())
    dice = [h['dice'] for h in m['history']]
    return dict(seed=seed, processes=processes, dice=dice, best_epoch=int(np.argmax(dice)), saved_epoch=m['best']['epoch'],
                final=dice[-1], best=max(dice), saved_dice=m['final']['dice'], lr=m['lr'], time_s=m['time_s'],
                warnings=m.get('warnings', []))


def main():
    p = parser('default_run', __doc__)
    p.add_argument('--seeds', type=int, default=None, help='seeds (default 3)')
    p.add_argument('--processes', type=int, default=1, help='also run under torchrun with this many processes (2)')
    a = p.parse_args()
    seeds = list(range(1 if a.quick else (a.seeds or 3)))
    r = Result('default_run', '`unetlearn train` with no arguments: the default recipe on the built-in sample', a)
    tmp = tempfile.mkdtemp(prefix='unetlearn-default-')
    runs = []
    try:
        for procs in sorted({1, a.processes}):
            for seed in seeds:
                out = Path(tmp)/f'p{procs}-seed{seed}'
                run = train(seed, out, procs, a.quick)
                runs.append(run)
                print(f"{procs} process(es), seed {seed}: dice per epoch {[round(d, 3) for d in run['dice']]}, best epoch "
                      f"{run['best_epoch']}, saved epoch {run['saved_epoch']}, lr {run['lr']:.2e}, {run['time_s']:.0f} s", flush=True)
    finally: shutil.rmtree(tmp, ignore_errors=True)
    rows = [[str(x['processes']), str(x['seed']), ' '.join(f"{d:.3f}" for d in x['dice']), str(x['best_epoch']),
             str(x['saved_epoch']), f"{x['final']:.3f}", f"{x['best'] - x['final']:.3f}", f"{x['time_s']:.0f}"] for x in runs]
    r.table('Validation Dice per epoch of `unetlearn train` (brain-MRI sample, 2 patients in validation)',
            ['processes', 'seed', 'Dice per epoch', 'best epoch', 'saved epoch', 'last Dice', 'best - last', 'time s'], rows)
    one = [x for x in runs if x['processes'] == 1]
    r.goal('runs whose best epoch is epoch 0', sum(x['best_epoch'] == 0 for x in one), '0', all(x['best_epoch'] > 0 for x in one))
    gap = max(x['best'] - x['final'] for x in one)
    r.goal('largest best - last Dice over seeds', gap, '<= 0.05', gap <= .05)
    multi = [x for x in runs if x['processes'] > 1]
    if multi:
        d = float(np.mean([x['final'] for x in multi]) - np.mean([x['final'] for x in one]))
        r.goal(f'{a.processes} processes - 1 process, last-epoch Dice (mean over seeds)', d, 'within seed noise',
               abs(d) <= 2*max(np.std([x['final'] for x in one]), .02),
               f"1 process {mean_sd([x['final'] for x in one])}, {a.processes} processes {mean_sd([x['final'] for x in multi])}")
    r.d['data'].update(runs=runs)
    r.save()


if __name__ == '__main__': main()
