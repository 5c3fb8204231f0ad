from __future__ import annotations
import os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent/'shared'/'data'
os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
if os.environ.get('PYTEST_XDIST_WORKER'):  # one torch thread per worker: 2 workers share the 2 cores
    os.environ.setdefault('OMP_NUM_THREADS', '1')


def run(cmd, cwd=ROOT, timeout=900, **env):
    "Run `cmd` in a subprocess with headless matplotlib, a fixed hash seed and any extra `env`; output captured."
    env = {**os.environ, 'MPLBACKEND': 'Agg', 'PYTHONHASHSEED': '0', **env}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def venv_tool(name):
    "Path of a console script installed beside this Python (nbdev-test, unetlearn, ...)."
    p = Path(sys.executable).parent/name
    return str(p) if p.exists() else shutil.which(name)


def missing_data(*names) -> str | None:
    "Why the real data sets `names` cannot be used here (unetlearn.datasets' message), or None when they all can."
    from unetlearn.datasets import dataset_path
    from unetlearn.core import InputError
    for n in names:
        try: dataset_path(n, download=False)
        except InputError as e: return str(e)
    return None


@pytest.fixture
def shared_data():
    "The real data sets in ../shared/data, or a skip naming what is missing."
    why = missing_data('camvid_tiny', 'isbi2012_em')
    if why: pytest.skip(why)
    return DATA
