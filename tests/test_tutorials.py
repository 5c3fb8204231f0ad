"Each tutorial is stored executed, so that it reads on GitHub: at least one figure (image/png) and no error output."
import json
import pytest
from conftest import ROOT

TUTORIALS = sorted((ROOT/'nbs'/'tutorials').glob('*.ipynb'))
UNEXECUTED = "stored without outputs (the tutorials are executed and committed with their outputs as a last step)"


def _outputs(nb) -> list:
    return [o for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]


def problems(nb) -> list:
    "What keeps the stored notebook `nb` from reading well: error outputs, tracebacks on stderr, no figure."
    outs, found = _outputs(nb), []
    for o in outs:
        if o.get('output_type') == 'error': found.append(f"error output: {o.get('ename')}: {o.get('evalue')}")
        elif o.get('name') == 'stderr' and 'Traceback' in ''.join(o.get('text', '')): found.append('a traceback on stderr')
    if not any('image/png' in o.get('data', {}) for o in outs): found.append('no figure (image/png output)')
    return found


def test_tutorials_exist():
    assert len(TUTORIALS) >= 6, [p.name for p in TUTORIALS]


@pytest.mark.parametrize('nb', TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_outputs(nb):
    if not _outputs(nb): pytest.skip(f"{nb.name} is {UNEXECUTED}")
    assert not problems(nb), f"{nb.name}: {problems(nb)}; re-run it top to bottom and commit it with its outputs"


def _nb(tmp_path, outputs):
    p = tmp_path/'t.ipynb'
    p.write_text(json.dumps(dict(cells=[dict(cell_type='code', source='x', metadata={}, outputs=outputs)], metadata={},
                                 nbformat=4, nbformat_minor=5)))
    return p


def test_problems_are_found(tmp_path):
    "The check itself: it flags an error output and a notebook without a figure, and passes a good one."
    png = dict(output_type='display_data', data={'image/png': 'iVBORw0KGgo=', 'text/plain': '<Figure>'}, metadata={})
    err = dict(output_type='error', ename='InputError', evalue='data set not found', traceback=[])
    text = dict(output_type='stream', name='stdout', text='hello\n')
    assert problems(_nb(tmp_path, [png, text])) == []
    assert problems(_nb(tmp_path, [text])) == ['no figure (image/png output)']
    assert problems(_nb(tmp_path, [png, err])) == ['error output: InputError: data set not found']
