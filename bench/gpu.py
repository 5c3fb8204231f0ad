"""GPU throughput: training and inference images/s of the same U-Nets in fp32, fp16 (autocast + GradScaler), bf16
(autocast), each with and without channels_last; plus, on the same GPU, the unetlearn Learner (with the precision
`set_precision('auto')` picks) vs a hand-written AMP loop, and the CPU data loader vs the GPU step.
Runs only where CUDA exists (on a CPU machine it prints a skip and exits 0); about 2-4 minutes on one GPU.

    python bench/gpu.py            # full
    python bench/gpu.py --quick    # smaller batches and fewer steps
"""
from __future__ import annotations
import time, warnings
from _common import Result, parser, summary, med_range, fmt, quiet, dataset, image_files, sync

import torch

CONFIGS = [('fp32', None, False), ('fp32', None, True), ('fp16', torch.float16, False), ('fp16', torch.float16, True),
           ('bf16', torch.bfloat16, False), ('bf16', torch.bfloat16, True)]


def bench_model(arch:str, bs:int, size:int, steps:int, rounds:int, dev) -> dict:
    "img/s of training steps and of inference for every config, rounds interleaved across configs."
    from unetlearn.learner import create_seg_model
    from unetlearn.losses import default_loss
    torch.manual_seed(0)
    base = create_seg_model(arch, 1, (size, size), pretrained='none').to(dev)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    loss_fn = default_loss(1)
    x = torch.randn(bs, 3, size, size, device=dev)
    y = (torch.rand(bs, size, size, device=dev) > .7).long()
    res = {f"{n}{'+CL' if cl else ''}": dict(train=[], infer=[]) for n, _, cl in CONFIGS}
    for rnd in range(rounds):
        for name, dt, cl in CONFIGS:
            key = f"{name}{'+CL' if cl else ''}"
            m = base
            m.load_state_dict(state)
            mf = torch.channels_last if cl else torch.contiguous_format
            m = m.to(memory_format=mf)
            xi = x.contiguous(memory_format=mf)
            opt = torch.optim.AdamW(m.parameters(), 1e-4, fused=True)
            scaler = torch.amp.GradScaler(dev.type, enabled=dt is torch.float16)
            def step():
                with torch.autocast(dev.type, dtype=dt, enabled=dt is not None):
                    out = m(xi)
                loss = loss_fn(out.float(), y)
                scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)
            m.train()
            for _ in range(3): step()           # warm-up: cudnn autotune, allocator
            sync(dev); t = time.perf_counter()
            for _ in range(steps): step()
            sync(dev); res[key]['train'].append(bs*steps/(time.perf_counter() - t))
            m.eval()
            with torch.no_grad(), torch.autocast(dev.type, dtype=dt, enabled=dt is not None):
                for _ in range(3): m(xi)
                sync(dev); t = time.perf_counter()
                for _ in range(steps): m(xi)
                sync(dev); res[key]['infer'].append(bs*steps/(time.perf_counter() - t))
            del opt, scaler
    base.to(memory_format=torch.contiguous_format)
    return {k: dict(train=summary(v['train']), infer=summary(v['infer']), raw=v) for k, v in res.items()}


def learner_vs_loop(arch:str, bs:int, size:int, steps:int, rounds:int, dev) -> dict:
    "Per-step time of the unetlearn Learner (set_precision('auto') = fp16 on CUDA) vs a hand AMP loop, same batches."
    import fastai.callback.schedule  # noqa: F401
    from overhead import make_batches, fastai_dls, clock_cb
    from unetlearn.learner import unet_learner, create_seg_model
    from unetlearn.train import set_precision
    train, valid = make_batches(steps, bs, size, 0, dev), make_batches(1, bs, size, 1, dev)
    clock = clock_cb()
    with quiet():
        learn = unet_learner(fastai_dls(train, valid, dev), arch, pretrained='none', normalize=False, cbs=[clock])
        prec = set_precision(learn, 'auto', verbose=False)
    learn.model.to(dev)
    hand = create_seg_model(arch, learn.n_out, (size, size), pretrained='none').to(dev)
    hand.load_state_dict(learn.model.state_dict())
    opt = torch.optim.AdamW(hand.parameters(), 1e-3, betas=(.9, .99), eps=1e-5, weight_decay=.01)
    scaler = torch.amp.GradScaler(dev.type)
    loss_fn = learn.loss_func
    A, B = [], []
    for i in range(rounds + 1):
        t = time.perf_counter()
        with quiet(): learn.fit_one_cycle(1, 1e-3)
        sync(dev)
        a_ = clock.t_train[-1]
        b_ = _hand_amp_epoch(hand, opt, scaler, loss_fn, train, dev)
        if i: A.append(a_/steps); B.append(b_/steps)
    return dict(precision=prec, learner=summary(A), hand=summary(B), ratio=summary([a/b for a, b in zip(A, B)]))


def _hand_amp_epoch(model, opt, scaler, loss_fn, train, dev) -> float:
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=len(train), pct_start=.25)
    model.train()
    sync(dev); t = time.perf_counter()
    for xb, yb in train:
        with torch.autocast(dev.type, dtype=torch.float16): out = model(xb)
        loss = loss_fn(out.float(), yb)
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); sched.step(); opt.zero_grad(set_to_none=True)
    sync(dev)
    return time.perf_counter() - t


def loader_vs_step(arch:str, bs:int, size:int, dev, workers=(0, 8)) -> dict | None:
    "The CPU loader (isbi2012_em, num_workers 0 and 8) vs the fp16 GPU training step at the same batch and size."
    kw = dataset('isbi2012_em')
    if kw is None: return None
    from data_pipeline import loader_times
    from unetlearn.data import seg_dataloaders
    from unetlearn.learner import create_seg_model
    from unetlearn.losses import default_loss
    m = create_seg_model(arch, 1, (size, size), pretrained='none').to(dev).train()
    opt, scaler, loss_fn = torch.optim.AdamW(m.parameters(), 1e-4, fused=True), torch.amp.GradScaler(dev.type), default_loss(1)
    x, y = torch.randn(bs, 3, size, size, device=dev), (torch.rand(bs, size, size, device=dev) > .7).long()
    ts = []
    for i in range(25 if dev.type == 'cuda' else 3):
        sync(dev); t = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.float16): out = m(x)
        loss = loss_fn(out.float(), y); scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)
        sync(dev)
        if i >= (5 if dev.type == 'cuda' else 1): ts.append(time.perf_counter() - t)
    gpu_step_s = summary(ts)['median']
    out = {}
    for nw in workers:
        dls = seg_dataloaders(**kw, size=size, bs=bs, num_workers=nw, progress=False)
        out[nw] = summary(loader_times(dls.train, 3))
    return dict(loader=out, gpu_step_s=gpu_step_s)


def _driver():
    import subprocess
    try: return subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'], capture_output=True,
                               text=True, timeout=20).stdout.strip() or None
    except Exception: return None


def main():
    p = parser('gpu', __doc__)
    p.add_argument('--archs', default='resnet34,smp:Unet:resnet34')
    p.add_argument('--bs', type=int, default=None)
    p.add_argument('--size', type=int, default=None)
    p.add_argument('--dry-run-cpu', action='store_true', help='exercise the code on the CPU (tiny; checks the script, measures nothing)')
    a = p.parse_args()
    if a.dry_run_cpu: a.quick = True
    if not torch.cuda.is_available() and not a.dry_run_cpu:
        print(f"SKIP bench/gpu.py: no CUDA device (torch {torch.__version__}, torch.version.cuda={torch.version.cuda}); "
              "run it on a GPU machine: python bench/gpu.py")
        return
    q = a.quick
    bs, size = a.bs or (8 if q else 32), a.size or (128 if q else 256)
    steps, rounds = (5, 1) if q else (20, 3)
    if a.dry_run_cpu: bs, size, steps, a.archs, a.out = 2, 32, 1, 'resnet18', a.out or '/tmp/gpu_dry_run.json'
    warnings.filterwarnings('ignore')
    torch.backends.cudnn.benchmark = True
    dev = torch.device('cpu' if a.dry_run_cpu else 'cuda')
    r = Result('gpu', 'GPU: img/s in fp32 / fp16 / bf16, channels_last; Learner vs AMP loop; loader vs GPU step', a)
    if dev.type == 'cuda':
        props = torch.cuda.get_device_properties(0)
        name = props.name
        r.d['data']['device'] = dict(name=name, capability=f'{props.major}.{props.minor}', memory_gb=round(props.total_memory/2**30, 1),
                                     cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), driver=_driver(),
                                     tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    else: name, r.d['data']['device'] = 'CPU (dry run: not a measurement)', dict(name='cpu dry run')
    print(f"device: {r.d['data']['device']}", flush=True)
    rows, all_res = [], {}
    for arch in a.archs.split(','):
        res = bench_model(arch, bs, size, steps, rounds, dev)
        all_res[arch] = res
        f32 = res['fp32']
        for k, v in res.items():
            rows.append([arch, k, med_range(v['train'], 0), fmt(v['train']['median']/f32['train']['median'], 2),
                         med_range(v['infer'], 0), fmt(v['infer']['median']/f32['infer']['median'], 2)])
            print(f"{arch} {k}: train {v['train']['median']:.0f} img/s, infer {v['infer']['median']:.0f} img/s", flush=True)
    r.d['data']['throughput'] = all_res
    r.table(f"Throughput on {name}, batch {bs} x {size}px, {steps} steps x {rounds} interleaved rounds "
            f"(cudnn.benchmark on, TF32 convs {'on' if torch.backends.cudnn.allow_tf32 else 'off'})",
            ['network', 'precision', 'train img/s', 'x fp32', 'inference img/s', 'x fp32'], rows,
            note="resnet34 = fastai DynamicUnet + self-attention (unetlearn's default); CL = channels_last; fp16 with "
                 "GradScaler; fused AdamW; loss = unetlearn BCE + Dice in fp32.")
    arch0 = a.archs.split(',')[0]
    lv = learner_vs_loop(arch0, bs, size, steps, rounds + 1, dev)
    r.d['data']['learner_vs_loop'] = lv
    r.table(f'unetlearn Learner vs hand AMP loop on the GPU ({arch0}, batch {bs} x {size}px, per training step)',
            ['precision chosen', 'Learner ms', 'hand loop ms', 'ratio'],
            [[lv['precision'], med_range(lv['learner'], 1, 1e3), med_range(lv['hand'], 1, 1e3), med_range(lv['ratio'], 3)]])
    r.goal('GPU training step ratio (Learner / hand AMP loop)', lv['ratio']['median'], '<= 1.03', lv['ratio']['median'] <= 1.03)
    lbs, lsize = (2, 32) if a.dry_run_cpu else (8, 128)
    ld = loader_vs_step(arch0, lbs, lsize, dev, (0,) if a.dry_run_cpu else (0, 8))
    if ld:
        r.d['data']['loader_vs_step'] = ld
        step = ld['gpu_step_s']
        r.table(f'CPU data loader (isbi2012_em, {lsize}px, batch {lbs}, {r.d["env"]["cpu_count"]} CPUs) vs the fp16 training step of '
                f'{arch0} at batch {lbs} x {lsize}px on this device', ['num_workers', 'loader ms/batch', 'GPU step ms', 'loading / step'],
                [[str(k), med_range(v, 1, 1e3), fmt(step*1e3, 1), fmt(v['median']/step, 2)] for k, v in ld['loader'].items()])
    r.save()


if __name__ == '__main__': main()
