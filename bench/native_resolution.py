"""Native-resolution training: random patches at native resolution versus whole images resized to N, the same wall
time per run, every run scored at native resolution; plus the recipe `unetlearn.plan` proposes for the same budget,
and the peak memory of sliding-window prediction of a 4000x4000 image.

- patch: `patch_dataloaders(patch=P)` (a third of the patches centred on foreground, whole images to validate);
  predictions by sliding windows of P px, half overlapping, Gaussian-blended (what the model's config asks for).
- resize: `seg_dataloaders(size=N)` (the longer side to N, aspect kept as a multiple of 32: ISBI 128x128, CamVid
  96x128); predictions resized back to the image size (bilinear probabilities).
- Both: smp Unet resnet18, random encoder, unetlearn's loss (BCE/CE + Dice), AdamW one-cycle at a fixed LR whose
  schedule runs on the wall clock (`TimeBudget`: training stops at the budget), no validation during training, the
  same number of samples per epoch (each training image listed as often as it holds patches), BatchNorm statistics
  re-estimated once at the end, 3 seeds, arms interleaved seed by seed (a shared machine slows both alike).
- Score: Dice at native resolution on the same validation files (ISBI: the membranes; CamVid: mean over the classes
  present, Unlabelled excluded), with unetlearn's `dice_score`.

    python bench/native_resolution.py            # full: 2 data sets x 3 seeds x 2 arms, 90 s each (about 50 min, shared 2 cores)
    python bench/native_resolution.py --quick    # smoke test: 8 ISBI images, 64 px, a 4 s budget, 1 seed
"""
from __future__ import annotations
import gc, json, subprocess, sys, time, warnings
from pathlib import Path
from _common import Result, parser, mean_sd, quiet, dataset, image_files, ROOT

import numpy as np
import torch

SPLIT_SEED = 42
LR = 2e-3
IGNORE = {'isbi2012_em': None, 'camvid_segnet_val': 11}


def _fastai_callback():
    from fastai.callback.core import Callback, CancelFitException, CancelValidException
    class TimeBudget(Callback):
        "One-cycle schedule on the wall clock: `pct_train` = elapsed / budget; the fit stops at the budget; no validation."
        order = 50   # after TrainEvalCallback, before ParamScheduler reads pct_train
        def __init__(self, seconds:float): self.seconds = seconds
        def before_fit(self): self.t0, self.steps = time.perf_counter(), 0
        def before_batch(self):
            if not self.training: return
            e = time.perf_counter() - self.t0
            if e >= self.seconds: raise CancelFitException()
            self.learn.pct_train = e / self.seconds
        def after_batch(self):
            if self.training: self.steps += 1
        def before_validate(self): raise CancelValidException()
    return TimeBudget


def setup(name:str, quick:bool) -> dict:
    kw = dataset(name)
    files = image_files(kw['images'])
    if quick: files = files[:8]
    from fastai.data.transforms import RandomSplitter
    _, vidx = RandomSplitter(valid_pct=.2, seed=SPLIT_SEED)(files)
    valid = sorted(files[i].name for i in vidx)
    masks = [Path(kw['masks'])/f.name for f in files]   # both sets: the mask has its image's name
    lib = {k: v for k, v in kw.items() if k not in ('images', 'masks', 'pattern')}
    return dict(name=name, files=files, masks=masks, lib=lib, valid=valid, side=64 if quick else 128, bs=4 if quick else 8)


def arm_dls(s, arm:dict, seed:int):
    from unetlearn.patches import patch_dataloaders, _Repeat
    from unetlearn.data import seg_dataloaders
    from unetlearn.splits import file_splitter
    common = dict(bs=arm['bs'], seed=seed, progress=False, **s['lib'])
    if arm['mode'] == 'patch':
        return patch_dataloaders(s['files'], s['masks'], patch=arm['patch'], valid_file=s['valid'], per_image=arm['per_image'], **common)
    return seg_dataloaders(s['files'], s['masks'], size=arm['size'], splitter=_Repeat(file_splitter(s['valid']), arm['per_image']), **common)


def score(learn, s, arm) -> float:
    "Dice at native resolution over the validation files, predictions as `unetlearn.inference` makes them."
    from unetlearn.export import SegModel
    from unetlearn.inference import predict_proba
    from unetlearn.metrics import dice_score
    seg = SegModel.from_learner(learn)
    if arm['mode'] == 'patch': seg.config.setdefault('patch', list(arm['patch']))   # until the config allow-list has it
    dec = learn.dls.decoder
    labels, truths = [], []
    for f, m in zip(s['files'], s['masks']):
        if f.name not in s['valid']: continue
        labels.append(seg.decode(torch.from_numpy(predict_proba(seg, f))).long())
        truths.append(torch.from_numpy(np.asarray(dec(m))).long())
    n = len(learn.dls.codes)
    return float(dice_score(torch.stack(labels), torch.stack(truths), n_classes=n, ignore_index=IGNORE[s['name']]))


def run_arm(s, arm:dict, seed:int, budget:float) -> dict:
    from fastai.torch_core import set_seed
    from unetlearn.learner import unet_learner
    from unetlearn.callbacks import recalibrate_bn
    TimeBudget = _fastai_callback()
    set_seed(seed)
    with quiet():
        dls = arm_dls(s, arm, seed)
        learn = unet_learner(dls, 'smp:Unet:resnet18', pretrained='none', bn_batches=0)
        tb = TimeBudget(budget)
        t0 = time.perf_counter()
        learn.fit_one_cycle(10_000, LR, cbs=[tb])
        train_s = time.perf_counter() - t0
        recalibrate_bn(learn.model, learn.dls.train, 20)
        t1 = time.perf_counter()
        d = score(learn, s, arm)
    row = dict(dataset=s['name'], arm=arm['name'], seed=seed, dice=d, train_s=round(train_s, 1), steps=tb.steps,
               samples=tb.steps * arm['bs'], score_s=round(time.perf_counter() - t1, 1))
    del learn, dls; gc.collect()
    return row


def arms_for(s, plan) -> list:
    "The patch and resize arms at the same side, and the plan's recipe when it differs from both."
    from unetlearn.plan import _fit
    from PIL import Image
    with Image.open(s['files'][0]) as im: h, w = im.size[::-1]
    side = s['side']
    per_image = max(1, round(h * w / side ** 2))
    arms = [dict(name=f'patch {side}', mode='patch', patch=(side, side), bs=s['bs'], per_image=per_image),
            dict(name=f'resize {_fit((side, side), (h, w))[1]}x{_fit((side, side), (h, w))[0]}', mode='resize',
                 size=_fit((side, side), (h, w)), bs=s['bs'], per_image=per_image)]
    mine = dict(mode=plan.mode, patch=plan.patch, size=plan.size, bs=plan.bs)
    same = [a for a in arms if all(a.get(k) == v for k, v in mine.items() if v is not None)]
    if same and plan.arch == 'smp:Unet:resnet18': return arms, same[0]['name']
    arms.append(dict(name='plan', per_image=per_image, **mine))
    return arms, 'plan'


PEAK_CODE = r'''
import sys, time, numpy as np, torch, torch.nn as nn
torch.set_num_threads(2)
from unetlearn.export import SegModel
from unetlearn.inference import predict_proba
def status(key):   # kB, from the kernel's accounting of this process
    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])
side, patch = int(sys.argv[1]), int(sys.argv[2])
net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
seg = SegModel(net, {'mean': [.5] * 3, 'std': [.25] * 3}).eval()
seg.config['patch'] = [patch, patch]
img = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
before = status('VmRSS')
open('/proc/self/clear_refs', 'w').write('5')   # reset the peak (VmHWM) to the current size: imports do not count
t = time.time(); p = predict_proba(seg, img, bs=4)
print(before, status('VmHWM'), p.shape[1], p.shape[2], time.time() - t)
'''


def peak_memory(side:int, patch:int) -> dict:
    "Peak resident memory (MB) of sliding-window prediction of a side x side RGB image, in a fresh process."
    r = subprocess.run([sys.executable, '-c', PEAK_CODE, str(side), str(patch)], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if r.returncode: raise RuntimeError(r.stderr[-2000:])
    before, after, h, w, secs = r.stdout.split()[-5:]
    return dict(side=side, patch=patch, rss_before_mb=int(before) / 1024, peak_mb=int(after) / 1024,   # kB -> MB
                grown_mb=(int(after) - int(before)) / 1024, out=(int(h), int(w)), seconds=float(secs))


def main():
    p = parser('native_resolution', __doc__)
    p.add_argument('--seeds', type=int, default=None, help='seeds per arm (default 3)')
    p.add_argument('--budget', type=float, default=None, help='training seconds per run (default 90; quick: 4)')
    p.add_argument('--datasets', default='isbi2012_em,camvid_segnet_val')
    p.add_argument('--no-memory', action='store_true', help='skip the 4000x4000 peak-memory measurement')
    p.add_argument('--reuse', metavar='JSON', help="take the runs of an earlier result of this script (same data set, arm, seed, "
                   "budget, LR and mode) instead of training them again, e.g. after a change to the plan's rules only")
    a = p.parse_args()
    q = a.quick
    seeds, budget = list(range(a.seeds or (1 if q else 3))), a.budget or (4. if q else 90.)
    r = Result('native_resolution', 'Native-resolution patches vs resized images, same wall time, scored at native resolution', a)
    warnings.filterwarnings('ignore')
    torch.set_num_threads(2)
    names = [n for n in a.datasets.split(',') if dataset(n)][:1 if q else None]
    if not names:
        r.note('../shared/data not found: nothing to measure (set UNETLEARN_DATA)'); r.save(); return
    from unetlearn.plan import plan_training
    runs, table, plans, prev = [], [], {}, {}
    if a.reuse:
        d = json.loads(Path(a.reuse).read_text())
        if d['data'].get('budget_s') == budget and d['data'].get('lr') == LR and d.get('quick') == q:
            prev = {(x['dataset'], x['arm'], x['seed']): dict(x, reused=a.reuse) for x in d['data']['runs']}
        r.note(f"{len(prev)} run(s) reused from {a.reuse}" + ('' if prev else ' (none matched: other budget, LR or mode)'))
    for name in names:
        s = setup(name, q)
        with quiet(): plan = plan_training(s['files'], s['masks'], device='cpu', minutes=budget / 60, sample=6 if q else 40, **s['lib'])
        if q: plan.patch, plan.size, plan.bs = (plan.patch and (s['side'], s['side'])), (plan.size and (s['side'], s['side'])), s['bs']
        plans[name] = str(plan)
        print(f"\n{name}: plan for {budget:g} s on the CPU\n{plan}", flush=True)
        arms, plan_arm = arms_for(s, plan)
        for seed in seeds:
            for arm in arms:   # interleaved: both arms see the same machine load
                row = prev.get((name, arm['name'], seed)) or run_arm(s, arm, seed, budget)
                runs.append(row)
                print(f"{name} {arm['name']} seed {seed}{' (reused)' if row.get('reused') else ''}: dice {row['dice']:.3f} ({row['steps']} steps, {row['samples']} samples in "
                      f"{row['train_s']:.0f} s; scored in {row['score_s']:.0f} s)", flush=True)
        for arm in arms:
            rs = [x for x in runs if x['dataset'] == name and x['arm'] == arm['name']]
            table.append([name, arm['name'] + (' (the plan\'s choice)' if arm['name'] == plan_arm else ''), mean_sd([x['dice'] for x in rs]),
                          ', '.join(f"{x['dice']:.3f}" for x in rs), mean_sd([x['steps'] for x in rs], 0), mean_sd([x['train_s'] for x in rs], 0)])
        dice = {arm['name']: float(np.mean([x['dice'] for x in runs if x['dataset'] == name and x['arm'] == arm['name']])) for arm in arms}
        pa, ra = arms[0]['name'], arms[1]['name']
        if name == 'isbi2012_em':
            r.goal(f'{name}: Dice, patch - resize (native-resolution score)', dice[pa] - dice[ra], '>= 0.05', dice[pa] - dice[ra] >= .05)
        best = max(dice[pa], dice[ra])
        r.goal(f"{name}: Dice, the plan's choice ({plan_arm}) - the better arm", dice[plan_arm] - best, '>= 0 (never worse)',
               dice[plan_arm] >= best - 1e-9, f"plan: {plan.mode}")
    r.d['data'].update(runs=runs, seeds=seeds, budget_s=budget, lr=LR, plans=plans, split_seed=SPLIT_SEED)
    r.table(f"Dice at native resolution after {budget:g} s of training per run, {len(seeds)} seed(s) (mean ± sd); smp Unet "
            "resnet18, random encoder, AdamW one-cycle at 2e-3 on the wall clock, batch 8",
            ['data set', 'arm', 'Dice', 'per seed', 'optimiser steps', 'train s'], table,
            note='ISBI: the membranes (value 0) as foreground, 24 training / 6 validation images of 512x512. CamVid: 480x360, '
                 'mean Dice over the classes present, Unlabelled excluded, 81 / 20 images. Patch predictions: sliding windows of '
                 'the patch, half overlapping, Gaussian-blended; resize predictions: resized back (bilinear probabilities).')
    if not a.no_memory:
        m = peak_memory(512 if q else 4000, 64 if q else 256)
        r.d['data']['memory'] = m
        acc = m['side'] ** 2 * 4 * 2 / 2 ** 20
        r.table(f"Peak memory of sliding-window prediction, one {m['side']}x{m['side']} RGB image, {m['patch']} px windows",
                ['image', 'windows', 'peak resident MB', 'grown by MB (peak - before)', 'accumulators MB (1 class + weights)', 'seconds'],
                [[f"{m['side']}x{m['side']}", f"{m['patch']} px, 4 per batch", m['peak_mb'], m['grown_mb'], acc, m['seconds']]],
                note='A fresh process (python, torch, unetlearn imported first); a 3-conv network, so the figure is the '
                     'sliding window\'s own memory: the uint8 image and its padded copy, one float map per output channel and '
                     'one weight map, and 4 windows of activations.')
    r.save()


if __name__ == '__main__': main()
