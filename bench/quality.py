"""Quality at the same epochs: unetlearn's default recipe versus the STRONG plain-fastai recipe a user writes for a
random encoder, same architecture (DynamicUnet resnet18 with self-attention, random encoder: no downloads), same
validation files, same number of epochs, several seeds, every run scored with unetlearn's metrics.

- unetlearn default: `seg_dataloaders(...)` (flips + lighting, masks decoded) -> `unet_learner(dls, 'resnet18',
  pretrained='none')` (loss, metrics, BatchNorm re-estimation before validation) -> `find_lr(learn)` (the LR rule) ->
  `fine_tune(learn, E, lr)` (a random encoder is never frozen: E epochs, one cycle).
- plain fastai (strong): `SegmentationDataLoaders.from_label_func(..., item_tfms=Resize(size))` with masks fixed to
  class indices (ISBI 0/255 -> 0/1) -> `fastai.vision.learner.unet_learner(dls, resnet18, pretrained=False,
  self_attention=True)` -> `learn.fit_one_cycle(E, 1e-3)` (not `fine_tune`, which would freeze the random encoder).
- Scores: Dice and IoU (global over the validation set; CamVid sets: mean over classes present, the ignore class
  excluded), image-wise IoU (the mean of per-image IoU, an empty prediction on an empty image scoring 1, as the Kaggle
  salt metric rewards) and pixel accuracy.

    python bench/quality.py            # full: 3 data sets x 3 seeds x 2 recipes (about 30 min on 2 idle cores)
    python bench/quality.py --quick    # smoke test: a few images at 32 px, 1 epoch
"""
from __future__ import annotations
import functools, gc, json, time, warnings
from pathlib import Path
from _common import Result, RESULTS, parser, mean_sd, quiet, dataset, image_files

import numpy as np
import torch

SPLIT_SEED = 42  # the validation files are the same for every seed and recipe
# image size (h, w), batch size, epochs: small enough for 2 CPU cores, the same for both recipes
SETTINGS = {'isbi2012_em': dict(size=(64, 64), bs=4, epochs=8),
            'camvid_tiny': dict(size=(48, 64), bs=8, epochs=5),
            'camvid_segnet_val': dict(size=(48, 64), bs=8, epochs=5)}
IGNORE = {'isbi2012_em': None, 'camvid_tiny': 30, 'camvid_segnet_val': 11}  # Void, Unlabelled


def _isbi_label(o, label_dir):
    "The common fastai-forum fix for 0/255 masks: integer-divide by 255 (here 0 = membrane stays class 0)."
    from PIL import Image
    from fastai.vision.core import PILMask
    return PILMask.create(np.array(Image.open(Path(label_dir)/Path(o).name)) // 255)


def _camvid_label(o, label_dir): return Path(label_dir)/f'{Path(o).stem}_P{Path(o).suffix}'
def _same_name_label(o, label_dir): return Path(label_dir)/Path(o).name


def setup(name:str, quick:bool) -> dict:
    kw = dataset(name)
    files = image_files(kw['images'])
    st = dict(SETTINGS[name])
    if quick: files, st = files[:6], dict(size=(32, 32), bs=2, epochs=1)
    codes = [l.strip() for l in Path(kw['codes']).read_text().splitlines() if l.strip()] if 'codes' in kw and not isinstance(kw['codes'], list) else None
    if name == 'isbi2012_em':
        masks = [Path(kw['masks'])/f.name for f in files]
        plain_codes, label = ['membrane', 'cell'], functools.partial(_isbi_label, label_dir=kw['masks'])
        lib = dict(masks=masks, foreground=0, mask_mode='binary')
    elif name == 'camvid_tiny':
        masks = [Path(kw['masks'])/f'{f.stem}_P{f.suffix}' for f in files]
        plain_codes, label = codes, functools.partial(_camvid_label, label_dir=kw['masks'])
        lib = dict(masks=masks, codes=kw['codes'])
    else:
        masks = [Path(kw['masks'])/f.name for f in files]
        plain_codes, label = codes, functools.partial(_same_name_label, label_dir=kw['masks'])
        lib = dict(masks=masks, codes=kw['codes'], ignore_index=IGNORE[name])
    from fastai.data.transforms import RandomSplitter
    _, vidx = RandomSplitter(valid_pct=.2, seed=SPLIT_SEED)(files)
    valid = sorted(files[i].name for i in vidx)
    return dict(name=name, files=files, lib=lib, plain_codes=plain_codes, label=label, valid=valid,
                path=Path(kw['images']).parent, quick=quick, **st)


def lib_dls(s, seed):
    from unetlearn.data import seg_dataloaders
    return seg_dataloaders(s['files'], valid_file=s['valid'], size=s['size'], bs=s['bs'], seed=seed, progress=False, **s['lib'])


def plain_dls(s):
    from fastai.vision.data import SegmentationDataLoaders
    from fastai.vision.augment import Resize
    return SegmentationDataLoaders.from_label_func(s['path'], s['files'], s['label'], valid_pct=.2, seed=SPLIT_SEED,
                                                   codes=s['plain_codes'], bs=s['bs'], item_tfms=Resize(s['size']))


def make_learner(recipe:str, s, seed:int, arch:str='resnet18', **kw):
    "A fresh Learner of `recipe` ('plain' or 'unetlearn'), seeded; `kw` go to unetlearn's `unet_learner`."
    from fastai.torch_core import set_seed
    set_seed(seed)
    if recipe == 'plain':
        import torchvision
        from fastai.vision.learner import unet_learner as fastai_unet_learner
        learn = fastai_unet_learner(plain_dls(s), getattr(torchvision.models, arch), pretrained=False, self_attention=True)
    else:
        from unetlearn.learner import unet_learner
        from unetlearn.train import set_precision
        learn = unet_learner(lib_dls(s, seed), arch, pretrained='none', **kw)
        set_precision(learn, 'auto', verbose=False)
    got = sorted(Path(p).name for p in learn.dls.valid.items)
    if got != s['valid']: raise RuntimeError(f"{recipe}: validation files differ from the shared split")
    return learn


def evaluate(recipe:str, learn, s) -> dict:
    "unetlearn's metrics on the validation files (raw outputs, no resizing: both pipelines give the same target pixels)."
    from fastcore.basics import noop
    from unetlearn.metrics import dice_score, iou_score, pixel_accuracy
    with quiet(): preds, targs = learn.get_preds(dl=learn.dls.valid, act=noop)
    preds, targs = preds.as_subclass(torch.Tensor), targs.as_subclass(torch.Tensor).long()
    if s['name'] == 'isbi2012_em':
        if recipe == 'plain': labels, targs = (preds.argmax(1) == 0).long(), (targs == 0).long()  # class 0 = membrane
        else: labels = (preds[:, 0] > 0).long() if preds.shape[1] == 1 else preds.argmax(1)
        n, ii = 2, None
    else: labels, n, ii = preds.argmax(1), preds.shape[1], IGNORE[s['name']]
    kw = dict(n_classes=n, ignore_index=ii)
    return dict(dice=dice_score(labels, targs, **kw), iou=iou_score(labels, targs, **kw),
                iou_image=iou_score(labels, targs, average='image', **kw), acc=pixel_accuracy(labels, targs, ignore_index=ii))


# Cached runs are reused only under the same recipe version: bump it with every change to the library that can change
# a training result (recipe, loss, data pipeline, LR rule), so that no figure comes from older code.
RECIPE_VERSION = 'issue9-2'  # issue9-2: no augmentation by default
# The plain-fastai runs depend on fastai and on `evaluate` only: their own version, bumped when either changes.
PLAIN_VERSION = 'issue9-1'


class RunCache:
    "Finished runs, one JSON line each in bench/results/runs.jsonl, keyed by what determines them (shared with lr_rule.py)."
    def __init__(self, quick:bool):
        self.path, self.rows = None if quick else RESULTS/'runs.jsonl', {}  # a smoke test keeps nothing
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                r = json.loads(line); self.rows[r['key']] = r
    def key(self, **k) -> str:
        "The cache key of a run: what determines it, and the version of the code it ran (a `recipe_version` in `k` wins)."
        v = PLAIN_VERSION if k.get('recipe') == 'plain' else RECIPE_VERSION
        return json.dumps(dict(dict(recipe_version=v), **k), sort_keys=True)
    def get(self, key): return self.rows.get(key)
    def put(self, key, row):
        row = dict(row, key=key); self.rows[key] = row
        if self.path is None: return row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, 'a') as f: f.write(json.dumps(row) + '\n')
        return row


def run_one(cache:RunCache, s, recipe:str, seed:int, lr='rule', loss:str='default', cached_only:bool=False):
    """Train one Learner and score it: recipe 'plain' (fit_one_cycle at `lr`) or 'unetlearn' (`lr` a number, or 'rule':
    `find_lr` chooses); `loss` 'default' or a `get_loss` name. Cached; `cached_only`: None instead of training."""
    rule = {}
    if lr == 'rule':  # the rule's own version: changing it does not invalidate the fixed-LR runs
        import inspect
        from unetlearn.schedule import LR_DIV, find_lr
        div = LR_DIV['sigmoid' if s['name'] == 'isbi2012_em' else 'softmax']  # the binary set has the sigmoid head
        rule = dict(rule=f"lowest loss / {div:g}, clamp {inspect.signature(find_lr).parameters['clamp'].default}")
    key = cache.key(dataset=s['name'], recipe=recipe, seed=seed, lr=lr, loss=loss, size=list(s['size']), bs=s['bs'],
                    quick=s['quick'], **rule, **({} if lr == 'finder' else dict(epochs=s['epochs'])))  # the finder needs no epochs
    if (hit := cache.get(key)) is not None or cached_only: return hit
    from unetlearn.train import find_lr, fine_tune
    with quiet(): learn = make_learner(recipe, s, seed)
    if loss != 'default':
        from unetlearn.losses import get_loss
        learn.loss_func = get_loss(loss, learn.n_out, IGNORE[s['name']])
    info, t0 = {}, time.perf_counter()
    with quiet():
        if lr == 'finder':  # only the LR finder's curve, kept so that candidate rules can be compared without training
            f = find_lr(learn, num_it=20 if s['quick'] else 100)
            row = dict(dataset=s['name'], recipe=recipe, seed=seed, lr=lr, lrs=f.lrs, losses=f.losses, suggestions=f.suggestions)
            return cache.put(key, row)
        if recipe == 'plain': learn.fit_one_cycle(s['epochs'], lr)
        else:
            if lr == 'rule':
                f = find_lr(learn, num_it=20 if s['quick'] else 100)
                info = dict(lr_found=f.lr, rule=f.rule, suggestions=f.suggestions)
            fine_tune(learn, s['epochs'], info.get('lr_found', lr), verbose=False)
    wall = time.perf_counter() - t0
    dm = getattr(learn, 'divergence_monitor', None)
    row = dict(dataset=s['name'], recipe=recipe, seed=seed, lr=lr, loss=loss, epochs=s['epochs'], train_s=round(wall, 1),
               spikes=None if dm is None else len(dm.events), **info, **evaluate(recipe, learn, s))
    del learn; gc.collect()
    return cache.put(key, row)


def main():
    p = parser('quality', __doc__)
    p.add_argument('--seeds', type=int, default=None, help='seeds per recipe (default 3)')
    p.add_argument('--datasets', default='isbi2012_em,camvid_tiny,camvid_segnet_val')
    p.add_argument('--recipes', default='unetlearn,plain', help='which recipes to run (the table needs both)')
    a = p.parse_args()
    q = a.quick
    seeds = list(range(a.seeds or (1 if q else 3)))
    r = Result('quality', 'Quality at the same epochs: unetlearn default recipe vs the strong plain-fastai recipe', a)
    warnings.filterwarnings('ignore')
    import fastai.callback.schedule, fastai.callback.progress  # noqa: F401  (a user's session: fit_one_cycle, progress bars)
    names = [n for n in a.datasets.split(',') if dataset(n)][:1 if q else None]  # CI smoke test: one data set
    if not names:
        r.note('../shared/data not found: nothing to measure (set UNETLEARN_DATA)'); r.save(); return
    cache, runs, table = RunCache(q), [], []
    for name in names:
        s = setup(name, q)
        for recipe, lr in [(r_, lr_) for r_, lr_ in (('unetlearn', 'rule'), ('plain', 1e-3)) if r_ in a.recipes.split(',')]:
            for seed in seeds:
                run = run_one(cache, s, recipe, seed, lr)
                runs.append(run)
                print(f"{name} {recipe} seed {seed}: lr {run.get('lr_found', run['lr'])} dice {run['dice']:.3f} iou {run['iou']:.3f} "
                      f"image-wise iou {run['iou_image']:.3f} acc {run['acc']:.3f} ({run['train_s']:.0f} s)", flush=True)
        for recipe in ('unetlearn', 'plain'):
            rs = [x for x in runs if x['dataset'] == name and x['recipe'] == recipe]
            if not rs: continue
            label = {'unetlearn': 'unetlearn default (LR rule)', 'plain': 'plain fastai, fit_one_cycle(E, 1e-3)'}[recipe]
            lrs = ', '.join(f"{x.get('lr_found', x['lr']):.1e}" for x in rs)
            table.append([name, label, str(s['epochs']), lrs, mean_sd([x['dice'] for x in rs]), mean_sd([x['iou'] for x in rs]),
                          mean_sd([x['iou_image'] for x in rs]), mean_sd([x['acc'] for x in rs]), mean_sd([x['train_s'] for x in rs], 0)])
    r.d['data'].update(runs=runs, seeds=seeds, split_seed=SPLIT_SEED, settings={n: SETTINGS[n] for n in names})
    sizes = '; '.join(f"{n} {SETTINGS[n]['size'][0]}x{SETTINGS[n]['size'][1]} px, batch {SETTINGS[n]['bs']}" for n in names)
    r.table(f"Validation scores after the same epochs, {len(seeds)} seed(s) (mean ± sd); {sizes}; DynamicUnet resnet18 with "
            "self-attention, random encoder",
            ['data set', 'recipe', 'epochs', 'LR per seed', 'Dice', 'IoU', 'image-wise IoU', 'pixel acc', 'train s'], table,
            note='ISBI: membrane class (value 0) as foreground. CamVid sets: mean over classes present, Void / Unlabelled '
                 'excluded; accuracy without them. Same validation files for every run. The unetlearn time includes the LR '
                 'finder (100 iterations).')
    for name in names:
        a_ = [x for x in runs if x['dataset'] == name and x['recipe'] == 'unetlearn']
        b_ = [x for x in runs if x['dataset'] == name and x['recipe'] == 'plain']
        if not (a_ and b_): continue
        d = float(np.mean([x['dice'] for x in a_]) - np.mean([x['dice'] for x in b_]))
        r.goal(f'{name}: Dice, unetlearn default - strong plain fastai', d, '>= 0.05', d >= .05,
               f"per seed unetlearn {[round(x['dice'], 3) for x in a_]}, plain {[round(x['dice'], 3) for x in b_]}")
        d2 = float(np.mean([x['iou_image'] for x in a_]) - np.mean([x['iou_image'] for x in b_]))
        r.goal(f'{name}: image-wise IoU, unetlearn default - strong plain fastai', d2, '>= 0 (not worse)', d2 >= -0.01,
               f"per seed unetlearn {[round(x['iou_image'], 3) for x in a_]}, plain {[round(x['iou_image'], 3) for x in b_]}")
    r.save()


if __name__ == '__main__': main()
