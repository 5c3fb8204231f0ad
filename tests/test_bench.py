"Every benchmark script runs in --quick mode (a smoke test, not a measurement) and its result renders into a report."
import json, os, subprocess, sys
import pytest
from conftest import ROOT, DATA

SCRIPTS = ['overhead', 'data_pipeline', 'quality', 'tta', 'memory', 'gpu']
NEEDS_DATA = {'data_pipeline', 'quality', 'tta', 'memory'}


def run(cmd, timeout=600):
    env = {**os.environ, 'MPLBACKEND': 'Agg', 'PYTHONUNBUFFERED': '1'}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize('name', SCRIPTS)
def test_bench_quick(name, tmp_path):
    if name in NEEDS_DATA and not (DATA/'isbi2012_em').exists():
        pytest.skip(f"bench/{name}.py needs the real data at {DATA}")
    out = tmp_path/f'{name}.json'
    # gpu.py exits with a skip where there is no CUDA; --dry-run-cpu runs its code path on the CPU instead
    extra = ['--dry-run-cpu'] if name == 'gpu' else ['--quick']
    r = run([sys.executable, f'bench/{name}.py', *extra, '--out', str(out)])
    assert r.returncode == 0, f"bench/{name}.py failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    d = json.loads(out.read_text())
    test_rows = [row for t in d['tables'] for row in t['rows']]
    assert d['name'] == name and d['quick'] and test_rows, f"no tables in {out}"
    assert all(g['met'] in (True, False, None) for g in d['goals'])
    report = tmp_path/'BENCHMARKS.md'
    r = run([sys.executable, 'bench/report.py', '--results', str(tmp_path), '--out', str(report), '--allow-quick'])
    assert r.returncode == 0, r.stderr
    text = report.read_text()
    assert 'QUICK MODE' in text and d['tables'][0]['title'] in text
