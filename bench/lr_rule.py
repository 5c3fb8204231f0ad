"""The learning-rate rule against a grid of fixed learning rates, on each real data set: unetlearn's default recipe
(`unet_learner(dls, 'resnet18', pretrained='none')` + `fine_tune(learn, E, lr)`), the same epochs, data, validation
files and seeds as bench/quality.py, for each LR of the grid and for the LR that `find_lr` (the rule) chooses. Reports
where the rule's choice falls against the grid-best LR, and the Dice it reaches.

Goal: on every data set the rule's Dice is within 0.02 of the grid-best LR's, and not below the Dice at 1e-3 (the LR
of fastai's `fit_one_cycle` default).

    python bench/lr_rule.py            # full: 3 data sets x 4 LRs x 2 seeds + the rule (about 45 min on 2 idle cores)
    python bench/lr_rule.py --quick    # smoke test
Runs are cached in bench/results/runs.jsonl (shared with bench/quality.py) while the library's code is unchanged.
"""
from __future__ import annotations
import warnings
import numpy as np
from _common import Result, parser, dataset, fmt
from quality import setup, run_one, RunCache

GRID = [3e-4, 1e-3, 3e-3, 1e-2]


def main():
    p = parser('lr_rule', __doc__)
    p.add_argument('--seeds', type=int, default=None, help='seeds per LR (default 2)')
    p.add_argument('--datasets', default='isbi2012_em,camvid_tiny,camvid_segnet_val')
    p.add_argument('--grid', default=','.join(map(str, GRID)), help='fixed learning rates, comma-separated')
    p.add_argument('--only', choices=['grid', 'rule'], default=None, help='run only the grid or only the rule')
    p.add_argument('--loss-ablation', action='store_true', help='also: plain CE against the default CE + Dice at 1e-3 on the '
                   'multi-class sets (same recipe otherwise)')
    p.add_argument('--cached-grid', action='store_true', help='grid runs only from the cache (bench/results/runs.jsonl): '
                   'report the seeds that were run, train none')
    a = p.parse_args()
    q = a.quick
    seeds, grid = list(range(a.seeds or (1 if q else 2))), [float(x) for x in a.grid.split(',')]
    if q: grid, a.datasets = grid[1:3], a.datasets.split(',')[0]  # CI smoke test: one data set, two LRs
    r = Result('lr_rule', 'The LR rule against a grid of fixed learning rates (unetlearn default recipe, same epochs)', a)
    warnings.filterwarnings('ignore')
    names = [n for n in a.datasets.split(',') if dataset(n)]
    if not names:
        r.note('../shared/data not found: nothing to measure (set UNETLEARN_DATA)'); r.save(); return
    cache, runs = RunCache(q), []
    for name in names:
        s = setup(name, q)
        if a.only == 'grid':
            for seed in seeds: run_one(cache, s, 'unetlearn', seed, 'finder', cached_only=a.cached_grid)
        arms = ([] if a.only == 'rule' else grid) + ([] if a.only == 'grid' else ['rule'])
        for lr in arms:
            for seed in seeds:
                run = run_one(cache, s, 'unetlearn', seed, lr, cached_only=a.cached_grid and lr != 'rule')
                if run is None: continue
                runs.append(run)
                extra = f" (rule chose {run['lr_found']:.2e}: {run['rule']}; {run['suggestions']})" if lr == 'rule' else ''
                print(f"{name} lr {lr} seed {seed}: dice {run['dice']:.3f} iou {run['iou']:.3f} spikes {run['spikes']}{extra}", flush=True)
        rows = {lr: [x for x in runs if x['dataset'] == name and x['lr'] == lr] for lr in arms}
        dice = {lr: float(np.mean([x['dice'] for x in rs])) for lr, rs in rows.items() if rs}
        table = [[fmt(lr) if lr != 'rule' else 'rule: ' + ', '.join(f"{x['lr_found']:.1e}" for x in rows[lr]) + ' (per seed)',
                  ' / '.join(f"{x['dice']:.3f}" for x in rows[lr]), f"{dice[lr]:.3f}", str(sum(x['spikes'] or 0 for x in rows[lr]))]
                 for lr in arms if rows[lr]]
        r.table(f"{name}: Dice per learning rate ({s['size'][0]}x{s['size'][1]} px, batch {s['bs']}, {s['epochs']} epochs, "
                f"DynamicUnet resnet18, random encoder)", ['learning rate', 'Dice per seed', 'mean Dice', 'loss spikes'], table)
        fs = [run_one(cache, s, 'unetlearn', seed, 'finder', cached_only=True) for seed in seeds]
        fs = [f for f in fs if f is not None]
        if fs:
            from unetlearn.schedule import lr_rule, LR_DIV
            div = LR_DIV['sigmoid' if name == 'isbi2012_em' else 'softmax']
            sug = [dict(f['suggestions'], rule=lr_rule(f['lrs'], f['losses'], div=div)[0]) for f in fs]
            r.table(f"{name}: where fastai's suggestions and the rule fall on the LR finder's curve (one line per seed)",
                    ['seed', 'valley', 'slide', 'minimum', 'steep', f'rule (lowest loss / {div:g})'],
                    [[str(f['seed'])] + [f"{x.get(k, float('nan')):.1e}" for k in ('valley', 'slide', 'minimum', 'steep', 'rule')]
                     for f, x in zip(fs, sug)])
        if 'rule' in dice and any(lr in dice for lr in grid):
            best = max((lr for lr in grid if lr in dice), key=dice.get)
            gap = dice[best] - dice['rule']
            r.goal(f"{name}: grid-best Dice - rule's Dice", gap, '<= 0.02', gap <= .02,
                   f"grid best {best:g} ({dice[best]:.3f}); rule chose {[round(x['lr_found'], 6) for x in rows['rule']]}")
            if 1e-3 in dice:
                d = dice['rule'] - dice[1e-3]
                r.goal(f"{name}: rule's Dice - Dice at 1e-3", d, '>= 0', d >= 0, '')
        if a.loss_ablation and name != 'isbi2012_em':
            ce = [x for x in (run_one(cache, s, 'unetlearn', seed, 1e-3, loss='ce', cached_only=a.cached_grid) for seed in seeds) if x]
            cd = [x for x in runs if x['dataset'] == name and x['lr'] == 1e-3 and x['loss'] == 'default']
            runs.extend(ce)
            r.table(f"{name}: loss, CE alone vs the default CE + Dice (lr 1e-3, {s['epochs']} epochs)",
                    ['loss', 'Dice per seed', 'mean Dice', 'IoU', 'pixel acc'],
                    [[lbl, ' / '.join(f"{x['dice']:.3f}" for x in xs), f"{np.mean([x['dice'] for x in xs]):.3f}",
                      f"{np.mean([x['iou'] for x in xs]):.3f}", f"{np.mean([x['acc'] for x in xs]):.3f}"]
                     for lbl, xs in (('CE', ce), ('CE + Dice (default)', cd)) if xs])
    r.d['data'].update(runs=runs, seeds=seeds, grid=grid)
    r.save()


if __name__ == '__main__': main()
