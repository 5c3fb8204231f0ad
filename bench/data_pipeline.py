"""Data pipeline: batches/s of `seg_dataloaders` alone (decode + resize + augment + normalise, the training
loader) versus the model's training step at the same batch size and size; goal: loading <= 10% of the step.
Also where loading time goes, stage by stage, and the same loader with worker processes.

    python bench/data_pipeline.py            # full: isbi2012_em and camvid_tiny at 128 px, batch 8
    python bench/data_pipeline.py --quick    # smoke test
"""
from __future__ import annotations
import time
from _common import Result, parser, summary, med_range, fmt, quiet, dataset, image_files, step_times

import torch


def loader_times(dl, epochs:int) -> list:
    "Seconds per batch while iterating `dl` (every batch of `epochs` epochs, first-batch iterator setup included)."
    ts = []
    for _ in range(epochs):
        t = time.perf_counter()
        for _b in dl:
            now = time.perf_counter(); ts.append(now - t); t = now
    return ts


def stage_times(dl, n_batches:int) -> dict:
    "Seconds per batch of each stage of fastai's loader, run by hand on the same items the loader would use."
    ds, bs = dl.dataset, dl.bs
    img_tl, msk_tl = ds.tls[0], ds.tls[1]
    res = {k: [] for k in ('decode image', 'decode mask', 'item tfms (resize, to tensor)', 'collate', 'batch tfms (flip, lighting, normalise)')}
    idxs = list(range(len(ds)))
    for b in range(n_batches):
        items = [idxs[(b*bs + j) % len(idxs)] for j in range(bs)]
        t0 = time.perf_counter(); imgs = [img_tl[i] for i in items]
        t1 = time.perf_counter(); msks = [msk_tl[i] for i in items]
        t2 = time.perf_counter(); its = [dl.after_item((x, y)) for x, y in zip(imgs, msks)]
        t3 = time.perf_counter(); batch = dl.create_batch(its)
        t4 = time.perf_counter(); dl.after_batch(batch)
        t5 = time.perf_counter()
        for k, v in zip(res, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)): res[k].append(v)
    return {k: summary(v) for k, v in res.items()}


def main():
    p = parser('data_pipeline', __doc__)
    p.add_argument('--size', type=int, default=None)
    p.add_argument('--bs', type=int, default=None)
    p.add_argument('--archs', default=None, help="comma-separated models to time (default resnet34,smp:Unet:resnet34)")
    p.add_argument('--workers', type=int, default=None, help='also time the loader with this many worker processes (default 2; 0 = skip)')
    a = p.parse_args()
    q = a.quick
    size, bs = a.size or (32 if q else 128), a.bs or (2 if q else 8)
    archs = (a.archs or ('resnet18' if q else 'resnet34,smp:Unet:resnet34')).split(',')
    epochs, n_steps, workers = (1, 1, 0) if q else (4, 3, 2 if a.workers is None else a.workers)
    r = Result('data_pipeline', 'Data pipeline: seg_dataloaders throughput vs training step', a)
    from fastai.torch_core import set_seed
    from unetlearn.data import seg_dataloaders
    from unetlearn.learner import unet_learner
    rows, stage_rows, ratios = [], [], []
    names = [n for n in ('isbi2012_em', 'camvid_tiny') if dataset(n)]
    if not names:
        r.note('../shared/data not found: nothing to measure (set UNETLEARN_DATA)')
        r.save(); return
    for name in names:
        kw = dataset(name)
        if q:  # a handful of files
            ims = image_files(kw['images'])[:6]
            kw['images'] = ims
            kw['masks'] = [kw['masks']/(p.name if name == 'isbi2012_em' else f'{p.stem}_P{p.suffix}') for p in ims]
            kw.pop('pattern', None)
        set_seed(42)
        dls = seg_dataloaders(**kw, size=size, bs=bs, num_workers=0, progress=False)
        lt = loader_times(dls.train, epochs)
        ls = summary(lt)
        st = stage_times(dls.train, 2 if q else 8)
        r.d['data'][name] = dict(loader=ls, loader_raw=lt, stages=st, n_train=len(dls.train_ds), batches_per_epoch=len(dls.train))
        lw = None
        if workers:
            dlw = dls.train.new(num_workers=workers)
            lw = summary(loader_times(dlw, epochs))
            r.d['data'][name]['loader_workers'] = lw
        tot = sum(v['median'] for v in st.values())
        for k, v in st.items(): stage_rows.append([name, k, med_range(v, 2, 1e3), f"{v['median']/tot*100:.0f}%"])
        rows.append([name, f"{len(dls.train_ds)} imgs, {len(dls.train)} batches/epoch", med_range(ls, 1, 1e3),
                     fmt(1/ls['median'], 2), med_range(lw, 1, 1e3) if lw else 'n/a'])
        xb = dls.one_batch()
        for arch in archs:
            set_seed(0)
            with quiet(): learn = unet_learner(dls, arch, pretrained='none')
            sts = summary(step_times(learn.model, learn.loss_func, xb, n_steps))
            r.d['data'][name][f'step_{arch}'] = sts
            ratio = ls['median']/sts['median']
            ratios.append((name, arch, ratio))
            r.d['data'][name][f'ratio_{arch}'] = ratio
            print(f"{name} {arch}: step {sts['median']*1e3:.0f} ms, loading {ls['median']*1e3:.1f} ms/batch = {ratio*100:.1f}% of the step", flush=True)
            del learn
    r.table(f'Loader alone (training DataLoader: decode, resize to {size}px, flip + lighting, normalise; batch {bs}, '
            f'num_workers=0; {epochs} epochs)', ['data set', 'items', 'ms/batch', 'batches/s', f'ms/batch, {workers} workers'], rows,
            note='median [quartiles] over every batch of every epoch (first batch of an epoch included).')
    r.table('Loading vs training step (same batch size and image size)',
            ['data set', 'model', 'step ms', 'loading ms/batch', 'loading / step'],
            [[n, a_, med_range(r.d['data'][n][f'step_{a_}'], 0, 1e3), fmt(r.d['data'][n]['loader']['median']*1e3, 1), f"{x*100:.1f}%"]
             for n, a_, x in ratios],
            note='step = forward, loss, backward, AdamW step, zero_grad (median of the timed steps after one warm-up); CPU.')
    r.table('Where loading time goes (ms per batch, stage by stage)', ['data set', 'stage', 'ms/batch', 'share'], stage_rows)
    worst = max(ratios, key=lambda t: t[2])
    r.goal('loading / step (worst data set and model)', worst[2], '<= 0.10', worst[2] <= .10, f"{worst[0]}, {worst[1]}")
    r.save()


if __name__ == '__main__': main()
