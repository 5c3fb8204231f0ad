"""Framework overhead: one training epoch of a unetlearn Learner (fastai `Learner` + unetlearn's loss and metrics)
versus a hand-written PyTorch loop (forward, loss, backward, optimizer step, zero_grad; validation Dice/IoU), on the
same model and the same in-memory batches, interleaved A B A B..., then where any excess goes (component timings
and a cProfile breakdown by package).

    python bench/overhead.py            # full (a few minutes on 2 CPU cores)
    python bench/overhead.py --quick    # smoke test
"""
from __future__ import annotations
import cProfile, pstats, time
from _common import Result, parser, summary, med_range, fmt, quiet, sync

import torch
from torch import nn


def make_batches(n:int, bs:int, size:int, seed:int, device) -> list:
    "`n` (image, mask) batches: normalised-looking noise images, blob masks (~30% foreground), as plain tensors."
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(bs, 3, size, size, generator=g)
        low = torch.randn(bs, 1, max(size//8, 2), max(size//8, 2), generator=g)
        y = (nn.functional.interpolate(low, size=(size, size), mode='bilinear', align_corners=False)[:, 0] > .5).long()
        out.append((x.to(device), y.to(device)))
    return out


def fastai_dls(train, valid, device):
    "fastai DataLoaders serving the given batches as they come out of unetlearn's pipeline (TensorImage/TensorMask)."
    from fastai.data.core import DataLoaders, TfmdDL
    from fastai.torch_core import TensorImage, TensorMask
    typed = lambda bl: [(TensorImage(x), TensorMask(y)) for x, y in bl]
    # num_workers=0 as seg_dataloaders' default (fastai's own default forks a worker pool every epoch)
    mk = lambda bl: TfmdDL(typed(bl), bs=None, shuffle=False, num_workers=0)
    dls = DataLoaders(mk(train), mk(valid), device=device)
    dls.codes, dls.n_classes, dls.ignore_index = ['background', 'foreground'], 2, None
    return dls


def clock_cb():
    from fastai.callback.core import Callback
    class Clock(Callback):
        "Wall time of the training and validation phases of each epoch."
        order = -50  # before TrainEvalCallback: starts first
        def __init__(self): self.t_train, self.t_valid = [], []
        def before_train(self): sync(self.dls.device); self.t0 = time.perf_counter()
        def after_train(self): sync(self.dls.device); self.t_train.append(time.perf_counter() - self.t0)
        def before_validate(self): sync(self.dls.device); self.t0 = time.perf_counter()
        def after_validate(self): sync(self.dls.device); self.t_valid.append(time.perf_counter() - self.t0)
    return Clock()


def fastai_epoch(learn, clock, lr) -> dict:
    t = time.perf_counter()
    with quiet(): learn.fit_one_cycle(1, lr)
    sync(learn.dls.device)
    return dict(total=time.perf_counter() - t, train=clock.t_train[-1], valid=clock.t_valid[-1])


def hand_epoch(model, opt, loss_fn, train, valid, lr, device) -> dict:
    "The seed-S3 style loop: one-cycle AdamW, then validation loss, Dice and IoU from a confusion count."
    from unetlearn.metrics import confusion, pred_to_labels
    t0 = time.perf_counter()
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=len(train), pct_start=.25)
    model.train()
    for xb, yb in train:
        out = model(xb)
        loss = loss_fn(out, yb)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    sync(device)
    t1 = time.perf_counter()
    model.eval()
    tot, n, cm = 0., 0, torch.zeros(2, 2, dtype=torch.long)
    with torch.no_grad():
        for xb, yb in valid:
            out = model(xb)
            tot += float(loss_fn(out, yb))*len(xb); n += len(xb)
            cm += confusion(pred_to_labels(out), yb, 2).sum(0).cpu()
    tp, fp, fn = cm[1, 1].item(), cm[0, 1].item(), cm[1, 0].item()
    dice, iou = 2*tp/max(2*tp + fp + fn, 1), tp/max(tp + fp + fn, 1)
    sync(device)
    t2 = time.perf_counter()
    return dict(total=t2 - t0, train=t1 - t0, valid=t2 - t1, valid_loss=tot/max(n, 1), dice=dice, iou=iou)


def _time(f, n:int, device) -> list:
    ts = []
    for _ in range(n):
        sync(device); t = time.perf_counter(); f(); sync(device); ts.append(time.perf_counter() - t)
    return ts


def components(learn, hand_model, hand_opt, batch, reps:int, device) -> dict:
    """Per-step cost of the pieces that differ between the two loops, interleaved, on the U-Net's parameters:
    fastai's optimizer step vs torch.optim.AdamW, fastai's zero_grad (zeroes in place) vs torch's (sets to None).
    (The forward pass gets the same plain tensors in both loops: fastai's CastToTensor callback strips
    TensorImage/TensorMask before the model sees them.)"""
    x, y = batch
    res = {k: [] for k in ('opt_step_fastai', 'opt_step_torch_adamw', 'zero_grad_fastai', 'zero_grad_torch')}
    def grads():
        for p in learn.model.parameters(): p.grad = torch.ones_like(p) * 1e-3
        for p in hand_model.parameters(): p.grad = torch.ones_like(p) * 1e-3
    grads(); learn.opt.step(); hand_opt.step()  # optimizer state exists before timing
    for _ in range(reps):
        grads()
        res['opt_step_fastai'] += _time(learn.opt.step, 1, device)
        res['opt_step_torch_adamw'] += _time(hand_opt.step, 1, device)
        res['zero_grad_fastai'] += _time(learn.opt.zero_grad, 1, device)
        res['zero_grad_torch'] += _time(hand_opt.zero_grad, 1, device)
    learn.opt.zero_grad(); hand_opt.zero_grad()
    return {k: summary(v) for k, v in res.items()}


class _Tiny(nn.Module):
    "A 1x1 convolution: a model so cheap that a step's time is the training loop's own cost."
    def __init__(self): super().__init__(); self.c = nn.Conv2d(3, 1, 1)
    def forward(self, x): return self.c(x)


def fixed_cost(steps:int, bs:int, size:int, reps:int, device) -> dict:
    "Per-step time of the Learner and of the hand loop around a 1x1-conv model (same loss, metrics, batches)."
    from fastai.learner import Learner
    from unetlearn.losses import default_loss
    from unetlearn.metrics import default_metrics
    train, valid = make_batches(steps, bs, size, 2, device), make_batches(1, bs, size, 3, device)
    dls = fastai_dls(train, valid, device)
    clock = clock_cb()
    torch.manual_seed(0)
    learn = Learner(dls, _Tiny().to(device), loss_func=default_loss(1), metrics=default_metrics(1), cbs=[clock])
    hand = _Tiny().to(device); hand.load_state_dict(learn.model.state_dict())
    opt = torch.optim.AdamW(hand.parameters(), lr=1e-3, betas=(.9, .99), eps=1e-5, weight_decay=.01)
    A, B = [], []
    for i in range(reps + 1):
        a = fastai_epoch(learn, clock, 1e-3)
        b = hand_epoch(hand, opt, learn.loss_func, train, valid, 1e-3, device)
        if i: A.append(a['train']/steps); B.append(b['train']/steps)
    return dict(learner=summary(A), hand=summary(B), diff=summary([a - b for a, b in zip(A, B)]))


_GROUPS = [('fastai', '/fastai/'), ('fastcore', '/fastcore/'), ('fasttransform', '/fasttransform/'),
           ('fastprogress', '/fastprogress/'), ('unetlearn', '/unetlearn/'), ('torch (python)', '/torch/')]

def profile_groups(f) -> dict:
    "cProfile `f()`; own time (tottime) summed by package, C calls counted as 'torch/C ops & builtins'."
    pr = cProfile.Profile()
    pr.enable(); f(); pr.disable()
    st = pstats.Stats(pr)
    groups, top = {}, []
    for (fname, line, func), (cc, nc, tt, ct, callers) in st.stats.items():
        g = next((name for name, pat in _GROUPS if pat in fname.replace('\\', '/')), None)
        if g is None: g = 'torch/C ops & builtins' if fname == '~' else 'other python'
        groups[g] = groups.get(g, 0.) + tt
        top.append((tt, nc, f"{fname.split('site-packages/')[-1]}:{line}({func})"))
    top.sort(reverse=True)
    return dict(total=st.total_tt, groups=groups, top=[dict(tottime=t, calls=n, func=s) for t, n, s in top[:12]])


def main():
    p = parser('overhead', __doc__)
    p.add_argument('--arch', default=None, help="model (default resnet18; quick: resnet18)")
    p.add_argument('--size', type=int, default=None)
    p.add_argument('--bs', type=int, default=None)
    p.add_argument('--steps', type=int, default=None, help='training batches per epoch')
    p.add_argument('--repeats', type=int, default=None, help='interleaved A/B epochs')
    p.add_argument('--device', default='cpu')
    a = p.parse_args()
    q = a.quick
    arch, size, bs = a.arch or 'resnet18', a.size or (32 if q else 64), a.bs or (2 if q else 8)
    steps, nvalid, reps = a.steps or (2 if q else 6), 1 if q else 2, a.repeats or (2 if q else 6)
    dev = torch.device(a.device)
    r = Result('overhead', 'Framework overhead: unetlearn Learner vs hand-written PyTorch loop', a)
    from fastai.torch_core import set_seed
    import fastai.callback.schedule, fastai.callback.progress  # noqa: F401 (fit_one_cycle, progress bar: a user's session)
    from unetlearn.learner import unet_learner
    set_seed(0)
    train, valid = make_batches(steps, bs, size, 0, dev), make_batches(nvalid, bs, size, 1, dev)
    dls = fastai_dls(train, valid, dev)
    clock = clock_cb()
    learn = unet_learner(dls, arch, pretrained='none', normalize=False, cbs=[clock])
    learn.model.to(dev)
    from unetlearn.learner import create_seg_model
    hand_model = create_seg_model(arch, learn.n_out, (size, size), pretrained='none')  # DynamicUnet's hooks block deepcopy
    hand_model.load_state_dict(learn.model.state_dict())
    hand_model.to(dev)
    loss_fn = learn.loss_func
    lr = 1e-3
    hand_opt = torch.optim.AdamW(hand_model.parameters(), lr=lr, betas=(.9, .99), eps=1e-5, weight_decay=.01)
    cfg = dict(arch=arch, size=size, bs=bs, train_steps=steps, valid_batches=nvalid, repeats=reps, device=str(dev),
               loss=repr(loss_fn), metrics=[type(m).__name__ for m in learn.metrics],
               fastai_callbacks=[type(c).__name__ for c in learn.cbs], n_params=sum(p.numel() for p in learn.model.parameters()))
    r.d['data']['config'] = cfg
    print(f"config: {cfg}", flush=True)
    # warm-up epoch each (allocator, oneDNN primitive caches, optimizer state)
    if not q: fastai_epoch(learn, clock, lr); hand_epoch(hand_model, hand_opt, loss_fn, train, valid, lr, dev)
    # C: the same Learner with torch's AdamW through fastai's OptimWrapper (the candidate fix for the optimizer cost)
    from functools import partial
    from fastai.optimizer import OptimWrapper
    clock_c = clock_cb()
    learn_c = unet_learner(dls, arch, pretrained='none', normalize=False, cbs=[clock_c],
                           opt_func=partial(OptimWrapper, opt=partial(torch.optim.AdamW, betas=(.9, .99), eps=1e-5)))
    learn_c.model.load_state_dict(learn.model.state_dict()); learn_c.model.to(dev)
    if not q: fastai_epoch(learn_c, clock_c, lr)
    A, B, C = [], [], []
    for i in range(reps):
        A.append(fastai_epoch(learn, clock, lr))
        B.append(hand_epoch(hand_model, hand_opt, loss_fn, train, valid, lr, dev))
        C.append(fastai_epoch(learn_c, clock_c, lr))
        print(f"repeat {i+1}/{reps}: Learner step {A[-1]['train']/steps*1e3:.1f} ms, hand step {B[-1]['train']/steps*1e3:.1f} ms, "
              f"Learner+torch AdamW {C[-1]['train']/steps*1e3:.1f} ms; ratios {A[-1]['train']/B[-1]['train']:.3f}, "
              f"{C[-1]['train']/B[-1]['train']:.3f}", flush=True)
    step_a = summary([x['train']/steps for x in A]); step_b = summary([x['train']/steps for x in B])
    val_a = summary([x['valid']/nvalid for x in A]); val_b = summary([x['valid']/nvalid for x in B])
    tot_a = summary([x['total'] for x in A]); tot_b = summary([x['total'] for x in B])
    ratio_step = summary([x['train']/y['train'] for x, y in zip(A, B)])
    step_c = summary([x['train']/steps for x in C]); ratio_c = summary([x['train']/y['train'] for x, y in zip(C, B)])
    ratio_val = summary([x['valid']/y['valid'] for x, y in zip(A, B)])
    ratio_tot = summary([x['total']/y['total'] for x, y in zip(A, B)])
    r.d['data'].update(fastai=A, hand=B, fastai_torch_adamw=C, step_fastai_torch_adamw=step_c, ratio_step_torch_adamw=ratio_c,
                       step_fastai=step_a, step_hand=step_b, ratio_step=ratio_step,
                       ratio_valid=ratio_val, ratio_epoch=ratio_tot)
    r.table(f'Per-step time, {arch} DynamicUnet, batch {bs} x {size}px, {steps} steps + {nvalid} valid batches per epoch, '
            f'{reps} interleaved repeats (A B C) on {dev}',
            ['phase', 'unetlearn Learner (ms)', 'hand loop (ms)', 'ratio (paired)'],
            [['training step', med_range(step_a, 1, 1e3), med_range(step_b, 1, 1e3), med_range(ratio_step, 3)],
             ['training step, Learner with torch AdamW (OptimWrapper)', med_range(step_c, 1, 1e3), med_range(step_b, 1, 1e3),
              med_range(ratio_c, 3)],
             ['validation batch (loss + Dice + IoU)', med_range(val_a, 1, 1e3), med_range(val_b, 1, 1e3), med_range(ratio_val, 3)],
             ['whole epoch (fit_one_cycle(1) call)', med_range(tot_a, 1, 1e3), med_range(tot_b, 1, 1e3), med_range(ratio_tot, 3)]],
            note='median [quartiles; min-max below 4 repeats]; ratio = Learner / hand loop, computed per A/B pair.')
    met = ratio_step['median'] <= 1.03
    r.goal('training step ratio (Learner / hand loop)', ratio_step['median'], '<= 1.03', met,
           f"spread {fmt(ratio_step['min'])}-{fmt(ratio_step['max'])} over {reps} pairs")
    r.goal('same, Learner with torch AdamW via OptimWrapper', ratio_c['median'], '<= 1.03', ratio_c['median'] <= 1.03,
           f"spread {fmt(ratio_c['min'])}-{fmt(ratio_c['max'])}")

    # where the difference goes: components, interleaved
    comp = components(learn, hand_model, hand_opt, train[0], 2 if q else 7, dev)
    fc = fixed_cost(20 if not q else 3, bs, size, 2 if q else 5, dev)
    comp['fixed'] = fc
    r.d['data']['components'] = comp
    ms = lambda k: comp[k]['median']*1e3
    r.table('Where the difference can come from (median ms per step [quartiles], interleaved)',
            ['component', 'fastai / unetlearn', 'plain PyTorch', 'difference (ms)'],
            [['whole step around a 1x1-conv model (loop, callbacks, loss, bookkeeping)', med_range(fc['learner'], 2, 1e3),
              med_range(fc['hand'], 2, 1e3), f"{fc['diff']['median']*1e3:+.2f}"],
             [f'optimizer step on the U-Net ({cfg["n_params"]/1e6:.1f} M parameters): fastai Adam vs torch AdamW', med_range(comp['opt_step_fastai'], 2, 1e3),
              med_range(comp['opt_step_torch_adamw'], 2, 1e3), f"{ms('opt_step_fastai') - ms('opt_step_torch_adamw'):+.2f}"],
             ['zero_grad on the U-Net (fastai zeroes in place; torch sets to None)', med_range(comp['zero_grad_fastai'], 2, 1e3),
              med_range(comp['zero_grad_torch'], 2, 1e3), f"{ms('zero_grad_fastai') - ms('zero_grad_torch'):+.2f}"]],
            note='fastai casts TensorImage/TensorMask batches to plain tensors before the model (CastToTensor), so the '
                 'forward and backward passes are the same computation in both loops.')

    # cProfile of one epoch each: own time by package
    pa = profile_groups(lambda: fastai_epoch(learn, clock, lr))
    pb = profile_groups(lambda: hand_epoch(hand_model, hand_opt, loss_fn, train, valid, lr, dev))
    r.d['data']['profile'] = dict(fastai=pa, hand=pb)
    names = sorted(set(pa['groups']) | set(pb['groups']), key=lambda k: -pa['groups'].get(k, 0))
    r.table('cProfile of one epoch (own time by package, seconds; profiler overhead included)',
            ['package', 'unetlearn Learner', 'hand loop', 'difference'],
            [[k, f"{pa['groups'].get(k, 0):.3f}", f"{pb['groups'].get(k, 0):.3f}", f"{pa['groups'].get(k, 0) - pb['groups'].get(k, 0):+.3f}"]
             for k in names] + [['total', f"{pa['total']:.3f}", f"{pb['total']:.3f}", f"{pa['total'] - pb['total']:+.3f}"]])
    print('\ntop functions by own time, Learner epoch:')
    for t in pa['top'][:8]: print(f"  {t['tottime']:.3f}s {t['calls']:>7} {t['func']}")
    excess = (step_a['median'] - step_b['median'])*1e3
    r.note(f"median step difference {excess:+.1f} ms ({(ratio_step['median'] - 1)*100:+.1f}%); of which, measured separately: "
           f"loop and callbacks {fc['diff']['median']*1e3:+.2f} ms, optimizer step {ms('opt_step_fastai') - ms('opt_step_torch_adamw'):+.2f} ms, "
           f"zero_grad {ms('zero_grad_fastai') - ms('zero_grad_torch'):+.2f} ms (medians of separate runs: they need not add up).")
    r.save()


if __name__ == '__main__': main()
