"Every benchmark script runs in --quick mode (a smoke test, not a measurement) and its result renders into a report."
import json, sys, warnings
import pytest
from conftest import ROOT, run, missing_data

sys.path.insert(0, str(ROOT/'bench'))
with warnings.catch_warnings():  # _common silences warnings for benchmark output; keep them for the tests
    from _common import SCRIPTS  # noqa: E402  the list run_all.py and report.py use

NEEDS_DATA = {'data_pipeline', 'quality', 'lr_rule', 'ablation', 'tta', 'memory'}
SLOW_QUICK = {'native_resolution': 'its quick mode trains 4 wall-clock-budgeted runs (about 2 min on 2 cores)'}


@pytest.mark.parametrize('name', SCRIPTS)
def test_bench_quick(name, tmp_path):
    if name in SLOW_QUICK: pytest.skip(f"bench/{name}.py --quick is run by hand: {SLOW_QUICK[name]}")
    why = missing_data('isbi2012_em') if name in NEEDS_DATA else None
    if why: pytest.skip(f"bench/{name}.py needs real data: {why}")
    out = tmp_path/f'{name}.json'
    # gpu.py exits with a skip where there is no CUDA; --dry-run-cpu runs its code path on the CPU instead
    extra = ['--dry-run-cpu'] if name == 'gpu' else ['--quick']
    r = run([sys.executable, f'bench/{name}.py', *extra, '--out', str(out)], timeout=600, PYTHONUNBUFFERED='1')
    assert r.returncode == 0, f"bench/{name}.py failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    d = json.loads(out.read_text())
    rows = [row for t in d['tables'] for row in t['rows']]
    assert d['name'] == name and d['quick'] and rows, f"no tables in {out}"
    assert all(g['met'] in (True, False, None) for g in d['goals'])
    report = tmp_path/'BENCHMARKS.md'
    r = run([sys.executable, 'bench/report.py', '--results', str(tmp_path), '--out', str(report), '--allow-quick'])
    assert r.returncode == 0, r.stderr
    text = report.read_text()
    assert 'QUICK MODE' in text and d['tables'][0]['title'] in text
