"""Quality per CPU budget: unetlearn's default recipe versus a plain-fastai recipe written the way fastai's docs
suggest, same architecture (random encoder: no downloads), same wall-clock budget per run, several seeds, both
evaluated with unetlearn's metrics on the same validation files; plus DynamicUnet versus smp Unet (same encoder,
unetlearn recipe, same budget: the faster network gets more epochs).

- unetlearn: `seg_dataloaders(...)` (flips + lighting) -> `unet_learner(dls, arch, pretrained='none')` (self-attention,
  loss and metrics from the data, Void ignored) -> `set_precision` -> `unetlearn.train.fine_tune(learn, E-1)`
  (a random encoder is never frozen: E epochs, all layers at lr 1e-3).
- plain fastai: `SegmentationDataLoaders.from_label_func(path, fnames, label_func, codes=codes, item_tfms=Resize(size))`
  -> `fastai.vision.learner.unet_learner(dls, resnet18, pretrained=False)` -> `learn.fine_tune(E-1)` (1 frozen epoch,
  then all layers with slice(1e-5, 1e-3)). ISBI labels are 0/255: the label function applies the usual `mask // 255`
  fix (without it fastai stops with "Target 255 is out of bounds"); CamVid has no ignore index there.
- E (epochs) is chosen per data set and network from a timed estimate of one epoch so that training fills the budget;
  the table reports the time each run really took.

    python bench/quality.py            # full: 3 seeds, 45 s budget per run (about 15-20 min on 2 idle cores)
    python bench/quality.py --quick    # smoke test: a few images at 32 px, 1 epoch
"""
from __future__ import annotations
import functools, gc, math, time, warnings
from pathlib import Path
from _common import Result, parser, summary, fmt, mean_sd, quiet, dataset, image_files, plain, step_times

import numpy as np
import torch

SPLIT_SEED = 42  # the validation files are the same for every seed and recipe


def _isbi_label(o, label_dir):
    "The common fastai-forum fix for 0/255 masks: integer-divide by 255 (here 0 = membrane stays class 0)."
    from PIL import Image
    from fastai.vision.core import PILMask
    return PILMask.create(np.array(Image.open(Path(label_dir)/Path(o).name)) // 255)


def _camvid_label(o, label_dir): return Path(label_dir)/f'{Path(o).stem}_P{Path(o).suffix}'


def setup(name:str, quick:bool) -> dict:
    kw = dataset(name)
    files = image_files(kw['images'])
    if quick: files = files[:6]
    if name == 'isbi2012_em':
        size, bs = (32, 32) if quick else (128, 128), 2 if quick else 4
        masks = [Path(kw['masks'])/f.name for f in files]
        plain_codes, label = ['membrane', 'cell'], functools.partial(_isbi_label, label_dir=kw['masks'])
        lib = dict(masks=masks, foreground=0, mask_mode='binary')
    else:
        size, bs = (32, 32) if quick else (48, 64), 2 if quick else 8  # 96x128 frames at half scale, aspect kept
        masks = [Path(kw['masks'])/f'{f.stem}_P{f.suffix}' for f in files]
        plain_codes = [l.strip() for l in Path(kw['codes']).read_text().splitlines() if l.strip()]
        label = functools.partial(_camvid_label, label_dir=kw['masks'])
        lib = dict(masks=masks, codes=kw['codes'])
    from fastai.data.transforms import RandomSplitter
    _, vidx = RandomSplitter(valid_pct=.2, seed=SPLIT_SEED)(files)
    valid = sorted(files[i].name for i in vidx)
    return dict(name=name, files=files, size=size, bs=bs, lib=lib, plain_codes=plain_codes, label=label, valid=valid,
                path=Path(kw['images']).parent)


def lib_dls(s, seed):
    from unetlearn.data import seg_dataloaders
    return seg_dataloaders(s['files'], valid_file=s['valid'], size=s['size'], bs=s['bs'], seed=seed, progress=False, **s['lib'])


def plain_dls(s):
    from fastai.vision.data import SegmentationDataLoaders
    from fastai.vision.augment import Resize
    return SegmentationDataLoaders.from_label_func(s['path'], s['files'], s['label'], valid_pct=.2, seed=SPLIT_SEED,
                                                   codes=s['plain_codes'], bs=s['bs'], item_tfms=Resize(s['size']))


def make_learner(recipe:str, s, seed:int, arch:str):
    from fastai.torch_core import set_seed
    set_seed(seed)
    if recipe == 'plain':
        import torchvision
        from fastai.vision.learner import unet_learner as fastai_unet_learner
        dls = plain_dls(s)
        learn = fastai_unet_learner(dls, getattr(torchvision.models, arch), pretrained=False)
    else:
        from unetlearn.learner import unet_learner
        from unetlearn.train import set_precision
        dls = lib_dls(s, seed)
        learn = unet_learner(dls, arch, pretrained='none')
        set_precision(learn, 'auto', verbose=False)
    got = sorted(Path(p).name for p in learn.dls.valid.items)
    if got != s['valid']: raise RuntimeError(f"{recipe}: validation files differ from the shared split")
    return learn


def train(recipe:str, learn, epochs:int):
    if recipe == 'plain': learn.fine_tune(epochs - 1)             # fastai: 1 frozen epoch + (epochs-1); 1 = frozen only
    else:
        from unetlearn.train import fine_tune
        fine_tune(learn, epochs=epochs - 1, freeze_epochs=1, verbose=False)  # random encoder: `epochs` unfrozen


def epoch_estimate(learn, n:int=2) -> float:
    "Seconds for one training epoch + validation, from timed steps on a real batch (model state restored after)."
    import copy
    x, y = batch = plain(learn.dls.one_batch())
    m = learn.model
    state = copy.deepcopy(m.state_dict())
    ts = step_times(m, learn.loss_func, batch, n)
    m.eval()
    t = time.perf_counter()
    with torch.no_grad(): m(x)
    t_fwd = time.perf_counter() - t
    m.load_state_dict(state); m.train()
    t_load = 0.
    it = iter(learn.dls.train); t = time.perf_counter(); next(it); t_load = time.perf_counter() - t
    step = float(np.median(ts))
    return len(learn.dls.train)*(step + t_load) + len(learn.dls.valid)*(t_fwd + t_load)


def evaluate(recipe:str, learn, s) -> dict:
    "unetlearn's metrics on the validation files, per file order-independent; targets returned for the identity check."
    from fastcore.basics import noop
    from unetlearn.metrics import dice_score, iou_score, pixel_accuracy
    with quiet(): preds, targs = learn.get_preds(dl=learn.dls.valid, act=noop)
    preds, targs = preds.as_subclass(torch.Tensor), targs.as_subclass(torch.Tensor).long()
    names = [Path(p).name for p in learn.dls.valid.items]
    if s['name'] == 'isbi2012_em':
        if recipe == 'plain': labels, targs = (preds.argmax(1) == 0).long(), (targs == 0).long()  # class 0 = membrane
        else: labels = (preds[:, 0] > 0).long()                                                     # sigmoid > 0.5
        n, ii = 2, None
    else:
        labels, n, ii = preds.argmax(1), preds.shape[1], 30                                          # Void = 30
    res = dict(dice=dice_score(labels, targs, n_classes=n, ignore_index=ii), iou=iou_score(labels, targs, n_classes=n, ignore_index=ii),
               acc=pixel_accuracy(labels, targs, ignore_index=ii))
    return res, dict(zip(names, targs))


def main():
    p = parser('quality', __doc__)
    p.add_argument('--budget', type=float, default=None, help='seconds of training per run (default 45; quick: 1 epoch)')
    p.add_argument('--seeds', type=int, default=None, help='seeds per recipe (default 3)')
    p.add_argument('--arch', default='resnet18', help='torchvision ResNet of both DynamicUnets (and of smp Unet\'s encoder)')
    p.add_argument('--datasets', default='isbi2012_em,camvid_tiny')
    p.add_argument('--no-smp', action='store_true', help='skip the DynamicUnet vs smp Unet runs')
    a = p.parse_args()
    q = a.quick
    budget, n_seeds = a.budget or 45., a.seeds or (1 if q else 3)
    seeds = list(range(n_seeds))
    r = Result('quality', 'Quality per CPU budget: unetlearn recipe vs plain fastai recipe, DynamicUnet vs smp Unet', a)
    warnings.filterwarnings('ignore')
    import fastai.callback.schedule, fastai.callback.progress  # noqa: F401  (a user's session: fine_tune, progress bars)
    recipes = [('unetlearn', a.arch), ('plain', a.arch)] + ([] if a.no_smp else [('unetlearn', f'smp:Unet:{a.arch}')])
    names = [n for n in a.datasets.split(',') if dataset(n)]
    if not names:
        r.note('../shared/data not found: nothing to measure (set UNETLEARN_DATA)'); r.save(); return
    runs, table = [], []
    for name in names:
        s = setup(name, q)
        epochs, targets = {}, {}
        for recipe, arch in recipes:
            key = f'{recipe}/{arch}'
            for seed in seeds:
                with quiet(): learn = make_learner(recipe, s, seed, arch)
                if key not in epochs:
                    est = epoch_estimate(learn, 1 if q else 2)
                    epochs[key] = 1 if q else max(1, int(budget/est + .5))
                    print(f"{name} {key}: estimated {est:.1f} s/epoch -> {epochs[key]} epoch(s) for a {budget:.0f} s budget", flush=True)
                    r.d['data'].setdefault('epoch_estimates', {})[f'{name}/{key}'] = est
                E = epochs[key]
                t0, c0 = time.perf_counter(), time.process_time()
                with quiet(): train(recipe, learn, E)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                m, tg = evaluate(recipe, learn, s)
                if recipe == 'unetlearn' and 'smp' not in arch and seed == seeds[0]: targets['unetlearn'] = tg
                if recipe == 'plain' and seed == seeds[0]: targets['plain'] = tg
                imgs = len(learn.dls.train)*learn.dls.train.bs*E
                run = dict(dataset=name, recipe=recipe, arch=arch, seed=seed, epochs=E, train_s=wall, cpu_s=cpu, img_per_s=imgs/wall, **m)
                runs.append(run)
                print(f"{name} {key} seed {seed}: {E} epochs in {wall:.0f} s ({imgs/wall:.2f} img/s): dice {m['dice']:.3f} "
                      f"iou {m['iou']:.3f} acc {m['acc']:.3f}", flush=True)
                del learn; gc.collect()
        if 'unetlearn' in targets and 'plain' in targets:
            same = all(torch.equal(targets['unetlearn'][k], targets['plain'][k]) for k in targets['plain'])
            r.d['data'].setdefault('valid_targets_identical', {})[name] = same
            print(f"{name}: validation targets identical in both pipelines: {same}", flush=True)
        for recipe, arch in recipes:
            rs = [x for x in runs if x['dataset'] == name and x['recipe'] == recipe and x['arch'] == arch]
            label = {'unetlearn': 'unetlearn default', 'plain': 'plain fastai docs'}[recipe]
            net = f"smp Unet {arch.split(':')[-1]}" if arch.startswith('smp') else f"DynamicUnet {arch}"
            table.append([name, label, net, str(rs[0]['epochs']), mean_sd([x['train_s'] for x in rs], 0),
                          mean_sd([x['img_per_s'] for x in rs], 2), mean_sd([x['dice'] for x in rs]), mean_sd([x['iou'] for x in rs]),
                          mean_sd([x['acc'] for x in rs])])
    r.d['data'].update(runs=runs, budget_s=budget, seeds=seeds, split_seed=SPLIT_SEED)
    sizes = ', '.join(f"{n} {setup(n, q)['size'][0]}x{setup(n, q)['size'][1]} px batch {setup(n, q)['bs']}" for n in names)
    r.table(f"Validation scores after a {'1-epoch' if q else f'{budget:.0f} s'} training budget, {len(seeds)} seed(s) "
            f"(mean ± sd); {sizes}",
            ['data set', 'recipe', 'network', 'epochs', 'train s', 'train img/s', 'Dice', 'IoU', 'pixel acc'], table,
            note='ISBI: Dice/IoU of the membrane class (foreground = value 0), accuracy over all pixels. CamVid: mean Dice/IoU '
                 'over classes present (Void ignored), accuracy without Void. Same validation files for every run, scored '
                 'with unetlearn.metrics on raw outputs (no resizing: both pipelines give the same target pixels).')
    for name in names:
        a_ = [x['dice'] for x in runs if x['dataset'] == name and x['recipe'] == 'unetlearn' and x['arch'] == a.arch]
        b_ = [x['dice'] for x in runs if x['dataset'] == name and x['recipe'] == 'plain']
        if a_ and b_:
            d = float(np.mean(a_) - np.mean(b_))
            r.goal(f'{name}: Dice unetlearn - plain fastai (same budget)', d, '> 0', d > 0,
                   f"{len(a_)} seeds each; per-seed unetlearn {[round(x, 3) for x in a_]}, plain {[round(x, 3) for x in b_]}")
    r.save()


if __name__ == '__main__': main()
