"""Shared helpers of the benchmark scripts: arguments, environment record, statistics, tables, results.

Every script writes `bench/results/<name>.json` holding the exact command, the environment, the raw
measurements and the tables it printed; `bench/report.py` renders those tables into BENCHMARKS.md, so the
figures there are the ones the script printed.
"""
from __future__ import annotations
import argparse, json, os, platform, shlex, statistics, subprocess, sys, time, warnings
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'bench'/'results'
SCRIPTS = ['overhead', 'data_pipeline', 'quality', 'ablation', 'lr_rule', 'default_run', 'tta', 'memory', 'gpu', 'native_resolution']  # run and report order
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # `python bench/x.py` from a clone works without install

warnings.filterwarnings('ignore', category=FutureWarning)
warnings.filterwarnings('ignore', message='.*is deprecated.*')
os.environ.setdefault('MPLBACKEND', 'Agg')
if (ROOT.parent/'shared'/'data').is_dir(): os.environ.setdefault('UNETLEARN_DATA', str(ROOT.parent/'shared'/'data'))  # beside the repo, from any cwd


def dataset(name:str) -> dict | None:
    "Arguments of `seg_dataloaders` for a real data set (found by `unetlearn.datasets`), or None when it is not here."
    from unetlearn.datasets import dataset_kwargs, has_dataset
    return dataset_kwargs(name) if has_dataset(name) else None


def image_files(folder) -> list[Path]:
    "Sorted image files of a folder (numeric stems in numeric order)."
    from unetlearn.core import get_image_paths
    fs = get_image_paths(folder)
    return sorted(fs, key=lambda p: (0, int(p.stem), '') if p.stem.isdigit() else (1, 0, p.name))


def parser(name:str, doc:str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f'bench/{name}.py', description=doc)
    p.add_argument('--quick', action='store_true', help='tiny sizes: checks that the script works (CI); not a measurement')
    p.add_argument('--out', default=None, help=f'JSON result file (default bench/results/{name}.json)')
    return p


def command(name:str) -> str:
    "The command line that produced a result, as a user types it from the repo root."
    return ' '.join(['python', f'bench/{name}.py'] + [shlex.quote(a) for a in sys.argv[1:]])


def _git() -> dict:
    try:
        rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'unetlearn'], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return dict(commit=rev or None, library_modified=bool(dirty))
    except Exception: return dict(commit=None, library_modified=None)


def load() -> float | None:
    try: return round(os.getloadavg()[0], 2)
    except OSError: return None


def env_info() -> dict:
    "Machine and versions (recorded with every result)."
    import torch, fastai, torchvision
    import unetlearn
    try:
        import segmentation_models_pytorch as smp; smpv = smp.__version__
    except Exception: smpv = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): cpu = line.split(':', 1)[1].strip(); break
    except OSError: pass
    info = dict(python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
                fastai=fastai.__version__, smp=smpv, unetlearn=unetlearn.__version__, platform=platform.platform(),
                cpu=cpu, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                cuda=torch.cuda.is_available(), load_avg_1min=load(), **_git())
    if torch.cuda.is_available(): info['gpu'] = torch.cuda.get_device_name(0)
    return info


def summary(xs) -> dict:
    "median, quartiles, min, max and n of a list of numbers; `spread` = (q3 - q1) / median."
    xs = sorted(float(x) for x in xs)
    n = len(xs)
    if n == 0: return dict(n=0, median=None)
    med = statistics.median(xs)
    if n >= 4: q1, _, q3 = statistics.quantiles(xs, n=4, method='inclusive')
    else: q1, q3 = xs[0], xs[-1]
    return dict(n=n, median=med, q1=q1, q3=q3, min=xs[0], max=xs[-1], spread=(q3 - q1)/med if med else None,
                mean=statistics.fmean(xs), stdev=statistics.stdev(xs) if n > 1 else 0.)


def fmt(v, d:int=3) -> str:
    if v is None: return 'n/a'
    if isinstance(v, bool): return 'yes' if v else 'no'
    if isinstance(v, int): return str(v)
    if isinstance(v, float):
        if v != v: return 'nan'
        if v == 0: return '0'
        if abs(v) >= 100: return f'{v:.0f}'
        if abs(v) >= 10: return f'{v:.1f}'
        return f'{v:.{d}g}' if abs(v) < 1e-3 else f'{v:.{d}f}'
    return str(v)


def med_range(s:dict, d:int=3, scale:float=1.) -> str:
    "'median [q1-q3]' (quartiles from 4 values on; min-max below)."
    if not s or s.get('median') is None: return 'n/a'
    return f"{fmt(s['median']*scale, d)} [{fmt(s['q1']*scale, d)}-{fmt(s['q3']*scale, d)}]"


def mean_sd(xs, d:int=3) -> str:
    xs = [x for x in xs if x is not None and x == x]
    if not xs: return 'n/a'
    if len(xs) == 1: return fmt(xs[0], d)
    return f'{statistics.fmean(xs):.{d}f} ± {statistics.stdev(xs):.{d}f}'


def verdict(met:bool|None, bold:bool=False) -> str:
    "A goal's verdict: 'met', 'not met' (bold in Markdown when asked) or 'n/a' when the goal could not be judged."
    if met is None: return 'n/a'
    return 'met' if met else ('**not met**' if bold else 'not met')


def md_table(headers, rows) -> str:
    out = ['| ' + ' | '.join(map(str, headers)) + ' |', '|' + '|'.join('---' for _ in headers) + '|']
    out += ['| ' + ' | '.join(fmt(c) if not isinstance(c, str) else c for c in r) + ' |' for r in rows]
    return '\n'.join(out)


class Result:
    "Collects tables and data of one benchmark run and writes them as JSON (and prints the tables)."
    def __init__(self, name:str, title:str, args):
        self.name, self.title, self.args = name, title, args
        self.t0 = time.time()
        self.d = dict(name=name, title=title, command=command(name), quick=bool(getattr(args, 'quick', False)),
                      started=datetime.now(timezone.utc).isoformat(timespec='seconds'), env=env_info(),
                      tables=[], notes=[], goals=[], data={})
        print(f"# {title}\n`{self.d['command']}`  (load average at start: {self.d['env']['load_avg_1min']})", flush=True)

    def table(self, title:str, headers, rows, note:str|None=None):
        self.d['tables'].append(dict(title=title, headers=list(headers), rows=[[c if isinstance(c, str) else fmt(c) for c in r] for r in rows],
                                     note=note))
        print(f"\n### {title}\n" + md_table(headers, self.d['tables'][-1]['rows']) + (f"\n\n{note}" if note else ''), flush=True)

    def goal(self, what:str, value, target:str, met:bool|None, detail:str=''):
        self.d['goals'].append(dict(what=what, value=value, target=target, met=met, detail=detail))
        print(f"goal: {what} = {fmt(value)} (target {target}): {verdict(met) if met is None else verdict(met).upper()} {detail}", flush=True)

    def note(self, text:str):
        self.d['notes'].append(text)
        print(f"\nnote: {text}", flush=True)

    def save(self):
        self.d['wall_s'] = round(time.time() - self.t0, 1)
        self.d['env']['load_avg_1min_end'] = load()
        out = Path(self.args.out) if getattr(self.args, 'out', None) else RESULTS/f'{self.name}.json'
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix('.json.tmp')
        tmp.write_text(json.dumps(self.d, indent=1, default=_jsonable))
        tmp.replace(out)
        print(f"\nwall time {self.d['wall_s']} s; load average at end {self.d['env']['load_avg_1min_end']}; wrote {out}", flush=True)
        return out


def _jsonable(o):
    try:
        import numpy as np, torch
        if isinstance(o, (np.generic,)): return o.item()
        if isinstance(o, np.ndarray): return o.tolist()
        if isinstance(o, torch.Tensor): return o.tolist()
    except ImportError: pass
    if isinstance(o, Path): return str(o)
    return str(o)


def quiet():
    "Context manager that swallows stdout (fastprogress bars, recipe prints) while timing."
    import contextlib, io
    return contextlib.redirect_stdout(io.StringIO())


def sync(device):
    import torch
    if str(device).startswith('cuda'): torch.cuda.synchronize()


def plain(batch) -> list:
    "A fastai batch as plain tensors (TensorImage/TensorMask stripped), as a hand loop feeds the model."
    import torch
    from fastai.torch_core import TensorBase
    return [t.as_subclass(torch.Tensor) if isinstance(t, TensorBase) else t for t in batch]


def step_times(model, loss_fn, batch, n:int) -> list:
    "Seconds of each of `n` training steps (forward, loss, backward, AdamW step, zero_grad) on one batch, after a warm-up step."
    import torch
    x, y = plain(batch)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    ts = []
    for i in range(n + 1):
        sync(x.device); t = time.perf_counter()
        loss = loss_fn(model(x), y); loss.backward(); opt.step(); opt.zero_grad()
        sync(x.device)
        if i: ts.append(time.perf_counter() - t)  # the first step warms up
    return ts


def has(module:str, *names) -> bool:
    "Whether `unetlearn.<module>` exists here and has all `names`."
    import importlib
    try: m = importlib.import_module(f'unetlearn.{module}')
    except Exception: return False
    return all(hasattr(m, n) for n in names)
