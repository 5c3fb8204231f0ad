"""Peak memory of training and of tiled vs whole-image inference on a large image (2048x2048), each measured in a
fresh subprocess as the peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`), since tracemalloc does
not see torch's allocations. `baseline` = peak after imports and model construction, `peak` = after the work;
`work` = peak - baseline. A watchdog stops a measurement whose memory passes --cap-gb (reported as such), so a
runaway case cannot take the shared machine down.

    python bench/memory.py            # full
    python bench/memory.py --quick    # smoke test
"""
from __future__ import annotations
import json, os, subprocess, sys, threading, time
from pathlib import Path
from _common import Result, parser, fmt, quiet, dataset, image_files, ROOT


def _rss_mb() -> float:
    with open('/proc/self/statm') as f: return int(f.read().split()[1])*os.sysconf('SC_PAGE_SIZE')/2**20


def _maxrss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024  # Linux: KiB


def _watchdog(cap_mb:float):
    def run():
        while True:
            if _rss_mb() > cap_mb:
                print(json.dumps(dict(error=f'stopped: resident memory passed the {cap_mb/1024:.1f} GiB cap')), flush=True)
                os._exit(3)
            time.sleep(.02)
    threading.Thread(target=run, daemon=True).start()


def big_image(n:int):
    "An n x n uint8 RGB image: ISBI slices tiled (real texture) when available, else noise."
    import numpy as np
    from PIL import Image
    kw = dataset('isbi2012_em')
    if kw is None: return np.random.default_rng(0).integers(0, 255, (n, n, 3), dtype=np.uint8)
    fs = image_files(kw['images'])
    tiles = [np.array(Image.open(f).convert('RGB')) for f in fs]
    t = tiles[0].shape[0]
    k = -(-n//t)
    rows = [np.concatenate([tiles[(i*k + j) % len(tiles)] for j in range(k)], 1) for i in range(k)]
    return np.ascontiguousarray(np.concatenate(rows, 0)[:n, :n])


def child(spec:dict) -> dict:
    "Runs in the subprocess: build, record the baseline peak, do the work, record the peak."
    _watchdog(spec['cap_gb']*1024)
    import warnings; warnings.filterwarnings('ignore')
    import torch
    from fastai.torch_core import set_seed
    set_seed(0)
    out = dict(spec=spec)
    if spec['kind'] == 'train':
        import fastai.callback.schedule  # noqa: F401
        from overhead import make_batches, fastai_dls
        from unetlearn.learner import unet_learner
        s, bs = spec['size'], spec['bs']
        dls = fastai_dls(make_batches(spec['steps'], bs, s, 0, 'cpu'), make_batches(1, bs, s, 1, 'cpu'), 'cpu')
        with quiet(): learn = unet_learner(dls, spec['arch'], pretrained='none', normalize=False)
        out['baseline_mb'] = _maxrss_mb()
        t = time.perf_counter()
        with quiet(): learn.fit_one_cycle(1, 1e-3)
        out['seconds'] = time.perf_counter() - t
    else:
        from unetlearn.learner import create_seg_model
        from unetlearn.export import as_seg_model
        from unetlearn.inference import predict_proba
        img = big_image(spec['image'])
        m = create_seg_model(spec['arch'], 1, (128, 128), pretrained='none', self_attention=spec.get('sa', True))
        seg = as_seg_model(m, dict(resize_method='none', size=[128, 128], mean=[.485, .456, .406], std=[.229, .224, .225])).eval()
        out['baseline_mb'] = _maxrss_mb()
        t = time.perf_counter()
        p = predict_proba(seg, img, tile=spec['tile'], overlap=spec.get('overlap', 64), bs=spec.get('tile_bs', 4))
        out['seconds'] = time.perf_counter() - t
        out['shape'] = list(p.shape)
    out['peak_mb'] = _maxrss_mb()
    return out


def measure(spec:dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), '--child', json.dumps(spec)]
    t = time.perf_counter()
    pr = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [l for l in pr.stdout.splitlines() if l.startswith('{')]
    res = json.loads(lines[-1]) if lines else dict(error=f'exit {pr.returncode}: {pr.stderr.strip().splitlines()[-1] if pr.stderr.strip() else ""}')
    res['spec'], res['process_s'] = spec, time.perf_counter() - t
    return res


def main():
    if '--child' in sys.argv:
        spec = json.loads(sys.argv[sys.argv.index('--child') + 1])
        print(json.dumps(child(spec)), flush=True)
        return
    p = parser('memory', __doc__)
    p.add_argument('--cap-gb', type=float, default=6., help='stop a measurement above this resident memory')
    a = p.parse_args()
    q = a.quick
    r = Result('memory', 'Peak memory: training, and tiled vs whole-image inference', a)
    cap = a.cap_gb
    if q:
        train = [dict(kind='train', arch='resnet18', size=32, bs=2, steps=2, cap_gb=cap)]
        infer = [dict(kind='infer', arch='resnet18', image=256, tile=128, sa=False, cap_gb=cap)]
    else:
        train = [dict(kind='train', arch=arch, size=128, bs=8, steps=2, cap_gb=cap)
                 for arch in ('resnet18', 'resnet34', 'smp:Unet:resnet34')]
        infer = [dict(kind='infer', arch='resnet18', image=n, tile=t, sa=False, cap_gb=cap)
                 for n, t in ((1024, None), (2048, None), (2048, 512), (2048, 256))]
        infer += [dict(kind='infer', arch='resnet18', image=n, tile=t, sa=True, cap_gb=cap)
                  for n, t in ((1024, None), (2048, None), (2048, 512))]
    results = []
    for spec in train + infer:
        res = measure(spec)
        results.append(res)
        print(f"{spec}: " + (res['error'] if 'error' in res else
              f"baseline {res['baseline_mb']:.0f} MB, peak {res['peak_mb']:.0f} MB, {res['seconds']:.1f} s"), flush=True)
    r.d['data']['results'] = results
    cell = lambda x, k: fmt(x[k], 0) if k in x else 'n/a'
    work = lambda x: fmt(x['peak_mb'] - x['baseline_mb'], 0) if 'peak_mb' in x else x.get('error', 'n/a')
    net = lambda s: (f"smp Unet {s['arch'].split(':')[-1]}" if s['arch'].startswith('smp') else
                     f"DynamicUnet {s['arch']}" + (' + self-attention' if s.get('sa', True) else ''))
    r.table('Training (unetlearn Learner, fit_one_cycle: '
            f"{train[0]['steps']} steps + 1 validation batch)", ['network', 'batch x size', 'baseline MB', 'peak MB', 'work MB', 's'],
            [[net(x['spec']), f"{x['spec']['bs']} x {x['spec']['size']}px", cell(x, 'baseline_mb'), cell(x, 'peak_mb'), work(x),
              fmt(x.get('seconds'), 1)] for x in results[:len(train)]],
            note='peak resident set size of a fresh process; baseline = after imports, data and model construction.')
    r.table('Inference on one large image (predict_proba, native scale)', ['network', 'image', 'tiles', 'baseline MB', 'peak MB', 'work MB', 's'],
            [[net(x['spec']), f"{x['spec']['image']}x{x['spec']['image']}",
              'whole image' if x['spec']['tile'] is None else f"{x['spec']['tile']} px, overlap 64, 4 per batch",
              cell(x, 'baseline_mb'), cell(x, 'peak_mb'), work(x), fmt(x.get('seconds'), 1)] for x in results[len(train):]])
    whole = next((x for x in results[len(train):] if x['spec']['tile'] is None and not x['spec'].get('sa', True) and 'peak_mb' in x), None)
    tiled = [x for x in results[len(train):] if x['spec']['tile'] is not None and not x['spec'].get('sa', True) and 'peak_mb' in x]
    if whole and tiled and not q:
        best = min(tiled, key=lambda x: x['peak_mb'] - x['baseline_mb'])
        f = (whole['peak_mb'] - whole['baseline_mb'])/max(best['peak_mb'] - best['baseline_mb'], 1)
        r.goal('inference work memory, whole image / smallest tiles', f, '> 1 (tiling bounds memory)', f > 1,
               f"tile {best['spec']['tile']}")
    r.save()


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
