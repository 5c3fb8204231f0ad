"""TTA cost and effect: time of flip (2 passes) and D4 (8 passes) test-time augmentation relative to one pass, with
`unetlearn.inference` (predictions mapped back before averaging), end to end at the images' original size and for
the network alone on a batch; and their effect on validation Dice (ISBI membranes), next to fastai's `learn.tta`.
Goals: flip <= 2.1x, D4 <= 8.5x one pass.

    python bench/tta.py            # full: train a resnet18 DynamicUnet on isbi2012_em for --train-budget s, then time
    python bench/tta.py --quick    # smoke test
"""
from __future__ import annotations
import time, warnings
from pathlib import Path
from _common import Result, parser, summary, med_range, fmt, quiet, dataset, image_files, sync

import numpy as np
import torch

MODES = ('none', 'flip', 'd4')


def main():
    p = parser('tta', __doc__)
    p.add_argument('--train-budget', type=float, default=120., help='seconds of training for the model whose TTA is measured')
    p.add_argument('--arch', default='resnet18')
    p.add_argument('--repeats', type=int, default=None)
    a = p.parse_args()
    q = a.quick
    reps = a.repeats or (2 if q else 5)
    r = Result('tta', 'TTA cost (flip, D4) relative to one pass, and effect on validation Dice', a)
    warnings.filterwarnings('ignore')
    kw = dataset('isbi2012_em')
    if kw is None:
        r.note('../shared/data not found: nothing to measure (set UNETLEARN_DATA)'); r.save(); return
    import fastai.callback.schedule, fastai.callback.progress  # noqa: F401
    from fastai.torch_core import set_seed
    from fastcore.basics import noop
    from unetlearn.data import seg_dataloaders
    from unetlearn.learner import unet_learner
    from unetlearn.train import fine_tune
    from unetlearn.inference import predict_files, tta_probs
    from unetlearn.export import as_seg_model
    from unetlearn.metrics import dice_score
    files = image_files(kw['images'])[:8 if q else None]
    masks = [Path(kw['masks'])/f.name for f in files]
    size, bs = (32, 2) if q else (128, 4)
    set_seed(0)
    dls = seg_dataloaders(files, masks, foreground=0, mask_mode='binary', size=size, bs=bs, valid_pct=.2, seed=42, progress=False)
    with quiet(): learn = unet_learner(dls, a.arch, pretrained='none')
    # epochs for the training budget, from one timed epoch
    t0 = time.perf_counter()
    with quiet(): fine_tune(learn, epochs=0, freeze_epochs=1, verbose=False)
    t_epoch = time.perf_counter() - t0
    more = 0 if q else max(0, int(a.train_budget/t_epoch + .5) - 1)
    if more:
        with quiet(): fine_tune(learn, epochs=more - 1, freeze_epochs=1, verbose=False)
    train_s = time.perf_counter() - t0
    r.d['data']['training'] = dict(arch=a.arch, size=size, bs=bs, epochs=1 + more, seconds=train_s, n_train=len(dls.train_ds))
    print(f"trained {a.arch} DynamicUnet at {size}px: {1 + more} epoch(s) in {train_s:.0f} s", flush=True)

    seg = as_seg_model(learn).eval()
    valid = [Path(p) for p in dls.valid.items]
    truth = np.stack([dls.decoder(Path(kw['masks'])/p.name) for p in valid])          # original size, 1 = membrane
    H, W = truth.shape[1:]
    # end to end: read, resize to the training size, network, TTA, map back, resize to the original size, decode
    t_e2e = {m: [] for m in MODES}
    dice = {}
    for i in range(reps + 1):
        for m in MODES:
            sync('cpu'); t = time.perf_counter()
            pr = predict_files(seg, valid, bs=len(valid), tta=m, progress=False)
            dt = time.perf_counter() - t
            if i: t_e2e[m].append(dt)           # the first round warms up
            else: dice[m] = dice_score(torch.from_numpy(np.stack(pr.masks)).long(), torch.from_numpy(truth).long(), n_classes=2)
    # the network alone: tta_probs on a normalised batch at the training size
    xb = dls.valid.one_batch()[0].as_subclass(torch.Tensor)
    t_net = {m: [] for m in MODES}
    with torch.no_grad():
        for i in range(reps + 1):
            for m in MODES:
                t = time.perf_counter(); tta_probs(seg, xb, m); dt = time.perf_counter() - t
                if i: t_net[m].append(dt)
    ratio = lambda tt, m: summary([x/y for x, y in zip(tt[m], tt['none'])])
    rows = []
    for m, passes in zip(MODES, (1, 2, 8)):
        rows.append([m, str(passes), med_range(summary(t_e2e[m]), 2, 1e3), med_range(ratio(t_e2e, m), 2),
                     med_range(summary(t_net[m]), 2, 1e3), med_range(ratio(t_net, m), 2), fmt(dice[m])])
    r.d['data'].update(end_to_end=t_e2e, network=t_net, dice=dice, n_valid=len(valid), original_size=[H, W])
    r.table(f'TTA on {len(valid)} validation images of isbi2012_em ({H}x{W}, predicted at {size}px and mapped back), '
            f'{reps} interleaved repeats', ['TTA', 'passes', 'end to end ms', 'x one pass', f'network only ms (batch {xb.shape[0]})',
                                            'x one pass', 'Dice (original size)'], rows,
            note='end to end = predict_files (read, resize, network, inverse transforms, average, resize back, decode); '
                 'median [quartiles]; ratios per interleaved round.')
    rf, rd = ratio(t_e2e, 'flip')['median'], ratio(t_e2e, 'd4')['median']
    r.goal('flip TTA time / one pass (end to end)', rf, '<= 2.1', rf <= 2.1, f"network only {fmt(ratio(t_net, 'flip')['median'])}")
    r.goal('D4 TTA time / one pass (end to end)', rd, '<= 8.5', rd <= 8.5, f"network only {fmt(ratio(t_net, 'd4')['median'])}")

    # at the training size, beside fastai's learn.tta (averages augmented predictions without undoing the flips)
    with quiet(): probs, targs = learn.get_preds(dl=dls.valid)
    targs = targs.as_subclass(torch.Tensor).long()
    d_none = dice_score((probs.as_subclass(torch.Tensor)[:, 0] > .5).long(), targs, n_classes=2)
    with torch.no_grad():
        xs = [b[0].as_subclass(torch.Tensor) for b in dls.valid]
        d_flip = dice_score(torch.cat([(tta_probs(seg, x, 'flip')[:, 0] > .5).long() for x in xs]), targs, n_classes=2)
        d_d4 = dice_score(torch.cat([(tta_probs(seg, x, 'd4')[:, 0] > .5).long() for x in xs]), targs, n_classes=2)
    set_seed(0)
    from fastai.learner import Learner
    with quiet(): fp, ft = Learner.tta(learn, dl=dls.valid)  # fastai's own (SegLearner.tta undoes its flips)
    d_fastai = dice_score((fp.as_subclass(torch.Tensor)[:, 0] > .5).long(), ft.as_subclass(torch.Tensor).long(), n_classes=2)
    r.d['data']['train_size_dice'] = dict(none=d_none, flip=d_flip, d4=d_d4, fastai_tta=d_fastai)
    r.table(f'Dice at the training size ({size}px) with each TTA', ['prediction', 'Dice'],
            [['one pass (learn.get_preds)', fmt(d_none)], ['unetlearn flip TTA (mapped back)', fmt(d_flip)],
             ['unetlearn D4 TTA (mapped back)', fmt(d_d4)], ["fastai learn.tta (training augmentations, not mapped back)", fmt(d_fastai)]])
    r.save()


if __name__ == '__main__': main()
