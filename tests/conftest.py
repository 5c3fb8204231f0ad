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


@pytest.fixture
def shared_data():
    "The real data sets in ../shared/data, or a skip naming what is missing."
    if not (DATA/'camvid_tiny').exists() or not (DATA/'isbi2012_em').exists():
        pytest.skip(f"real data not found at {DATA} (it lives beside the repo in this workspace)")
    return DATA
