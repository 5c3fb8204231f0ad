"""Which part of the default recipe helps or hurts: the unetlearn recipe with one ingredient changed at a time, side by
side with the strong plain-fastai recipe, same network, same validation files, same epochs, several seeds.

Variants (each is the default recipe with one change; `plain` is bench/quality.py's baseline):
- `default`: the recipe until issue9-1: flips + lighting, CE/BCE + Dice, BatchNorm re-estimation, the learning rate
  given by --lr (today's default is `noaug`)
- `noaug`: no flips, no lighting            - `nolight`: flips only
- `ce`: plain CE (or BCE) loss, no Dice      - `nobn`: no BatchNorm re-estimation before validation
- `bdice`: CE/BCE + a soft Dice summed over the whole batch per class (classes present in the batch), not per image
- `clean`: the default, with the random augmentations switched off for the last third of the epochs
- `plain`: fastai's own DataBlock and unet_learner, fit_one_cycle
The learning rate is the same fixed value for every variant (`--lr 1e-3`) or `rule` (the LR finder and unetlearn's
rule, for the unetlearn variants). Runs are cached in bench/results/runs.jsonl (as bench/quality.py's).

    python bench/ablation.py --datasets camvid_segnet_val --variants default,noaug,ce,plain --seeds 3
    python bench/ablation.py --quick
"""
from __future__ import annotations
import gc, time, warnings
import numpy as np
from _common import Result, parser, mean_sd, quiet, dataset
import quality as Q

# The recipe these variants change is unetlearn's default until issue9-1 (flips + lighting); it is written out here so
# that the table means the same after the library's defaults change. Bump ABLATION_VERSION when the library changes
# otherwise (loss, model, training), so that no cached figure comes from older code.
BASE = dict(aug='flip', lighting=True)
ABLATION_VERSION = 'issue9-1'
# one change each: (seg_dataloaders arguments, unet_learner arguments, loss); join with '+' to combine, e.g. nolight+bdice
VARIANTS = {'default': ({}, {}, 'default'), 'noaug': (dict(aug='none', lighting=False), {}, 'default'),
            'nolight': (dict(lighting=False), {}, 'default'), 'ce': ({}, {}, 'plain'), 'nobn': ({}, dict(bn_batches=0), 'default'),
            'bdice': ({}, {}, 'batch-dice'), 'clean': ({}, {}, 'default'), 'plain': None}


def parse_variant(variant:str) -> tuple:
    "(seg_dataloaders kwargs, unet_learner kwargs, loss, clean finish) of a variant name such as 'nolight+bdice'."
    dkw, lkw, loss = dict(BASE), {}, 'default'
    for part in variant.split('+'):
        if part not in VARIANTS or part == 'plain': raise SystemExit(f"unknown variant {part!r}; choose from {', '.join(VARIANTS)}")
        d, l, lo = VARIANTS[part]
        dkw.update(d); lkw.update(l)
        if lo != 'default': loss = lo
    return dkw, lkw, loss, 'clean' in variant.split('+')


def clean_finish_cb(frac:float=1/3):
    "A callback that switches the random batch augmentations off for the last `frac` of the epochs of each fit."
    from fastai.callback.core import Callback
    from fastai.vision.augment import RandTransform
    class CleanFinish(Callback):
        def before_fit(self): self.ps = {}
        def before_epoch(self):
            if not self.training or not hasattr(self.learn, 'n_epoch'): return
            off = self.epoch >= self.n_epoch*(1 - frac)
            for t in self.dls.train.after_batch.fs:
                if isinstance(t, RandTransform):
                    self.ps.setdefault(id(t), t.p)
                    t.p = 0. if off else self.ps[id(t)]
        def after_fit(self):
            for t in self.dls.train.after_batch.fs:
                if id(t) in self.ps: t.p = self.ps[id(t)]
    return CleanFinish()


def batch_dice_loss(n_out:int, ignore_index):
    "CE/BCE + soft Dice summed over the whole batch per class, averaged over the classes present in the batch's masks."
    from unetlearn.losses import SoftDiceLoss, ComboLoss, SegCELoss, SegBCELoss
    first = SegBCELoss(ignore_index=ignore_index) if n_out == 1 else SegCELoss(ignore_index=ignore_index)
    return ComboLoss([first, SoftDiceLoss(ignore_index=ignore_index, batch_dice=True)])


def _loss_name(s) -> str: return 'bce' if s['name'] == 'isbi2012_em' else 'ce'


def run_variant(cache, s, variant:str, seed:int, lr, cached_only:bool=False):
    "Train and score one run of `variant` (cached); `cached_only`: None instead of training."
    if variant == 'plain': return Q.run_one(cache, s, 'plain', seed, 1e-3 if lr == 'rule' else lr, cached_only=cached_only)
    dkw, lkw, loss, clean = parse_variant(variant)
    key = cache.key(recipe_version=ABLATION_VERSION, dataset=s['name'], recipe='ablation', variant=variant, seed=seed, lr=lr, size=list(s['size']), bs=s['bs'],
                    epochs=s['epochs'], quick=s['quick'])
    if (hit := cache.get(key)) is not None or cached_only: return hit
    from fastai.torch_core import set_seed
    from unetlearn.data import seg_dataloaders
    from unetlearn.learner import unet_learner
    from unetlearn.losses import get_loss
    from unetlearn.train import find_lr, fine_tune
    with quiet():
        set_seed(seed)
        dls = seg_dataloaders(s['files'], valid_file=s['valid'], size=s['size'], bs=s['bs'], seed=seed, progress=False,
                              **s['lib'], **dkw)
        learn = unet_learner(dls, 'resnet18', pretrained='none', **lkw)
        if clean: learn.add_cb(clean_finish_cb())
        if loss == 'plain': learn.loss_func = get_loss(_loss_name(s), learn.n_out, ignore_index=Q.IGNORE[s['name']])
        if loss == 'batch-dice': learn.loss_func = batch_dice_loss(learn.n_out, Q.IGNORE[s['name']])
        t0, info = time.perf_counter(), {}
        if lr == 'rule':
            f = find_lr(learn, num_it=20 if s['quick'] else 100)
            info = dict(lr_found=f.lr)
        fine_tune(learn, s['epochs'], info.get('lr_found', lr), verbose=False)
        wall = time.perf_counter() - t0
    row = dict(dataset=s['name'], variant=variant, seed=seed, lr=lr, train_s=round(wall, 1), **info, **Q.evaluate('unetlearn', learn, s))
    del learn; gc.collect()
    return cache.put(key, row)


def main():
    p = parser('ablation', __doc__)
    p.add_argument('--seeds', type=int, default=None, help='seeds per variant (default 3)')
    p.add_argument('--datasets', default='camvid_segnet_val,camvid_tiny,isbi2012_em')
    p.add_argument('--variants', default='default,noaug,ce,nobn,plain')
    p.add_argument('--lr', default='1e-3', help="a fixed learning rate for every variant, or 'rule'")
    p.add_argument('--cached-only', action='store_true', help='report the cached runs only (train nothing)')
    p.add_argument('--epochs', type=int, default=None, help="epochs per run (default: bench/quality.py's per data set)")
    a = p.parse_args()
    lr = a.lr if a.lr == 'rule' else float(a.lr)
    seeds = list(range(a.seeds or (1 if a.quick else 3)))
    r = Result('ablation', 'The default recipe with one ingredient changed at a time', a)
    warnings.filterwarnings('ignore')
    import fastai.callback.schedule, fastai.callback.progress  # noqa: F401
    names = [n for n in a.datasets.split(',') if dataset(n)][:1 if a.quick else None]
    if not names: r.note('real data not found: nothing to measure'); r.save(); return
    cache, runs, table = Q.RunCache(a.quick), [], []
    variants = a.variants.split(',')
    for name in names:
        s = Q.setup(name, a.quick)
        if a.epochs: s['epochs'] = a.epochs
        for seed in seeds:  # seeds outermost: a cut-short run still has every variant side by side
            for v in variants:
                x = run_variant(cache, s, v, seed, lr, a.cached_only)
                if x is None: continue
                runs.append(dict(x, variant=v))
                print(f"{name} {v} seed {seed}: dice {x['dice']:.3f} image-wise iou {x['iou_image']:.3f} ({x['train_s']:.0f} s)", flush=True)
        base = {x['seed']: x['dice'] for x in runs if x['dataset'] == name and x['variant'] == 'plain'}
        for v in variants:
            rs = [x for x in runs if x['dataset'] == name and x['variant'] == v]
            if not rs: continue
            gain = [x['dice'] - base[x['seed']] for x in rs if x['seed'] in base] if v != 'plain' else []
            table.append([name, v, ', '.join(f"{x['dice']:.3f}" for x in rs), mean_sd([x['dice'] for x in rs]),
                          mean_sd(gain) if gain else '', mean_sd([x['iou_image'] for x in rs])])
    r.d['data'].update(runs=runs, seeds=seeds, lr=lr)
    r.table(f"Dice per variant, {len(seeds)} seed(s), lr {lr}; sizes as bench/quality.py, epochs "
            + (str(a.epochs) if a.epochs else "as bench/quality.py"),
            ['data set', 'variant', 'Dice per seed', 'Dice', 'Dice - plain (paired by seed)', 'image-wise IoU'], table)
    r.save()


if __name__ == '__main__': main()
