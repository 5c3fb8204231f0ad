"""A user's mistake is never reported as an internal error: every case runs the real `unetlearn` program and expects exit
1 (a problem with the input, the message says the fix) or 2 (bad arguments), never 3 ('a bug in unetlearn'), and no
traceback."""
import pytest
from test_cli import cli, make_data


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('mistakes')
    images, masks = make_data(root, n=6, size=(32, 32))
    (root/'codes1.txt').write_text('background\n')
    return root, images, masks


MISTAKES = {   # name -> (arguments, the exit code a user should get)
    'foreground with index masks': (['check', '--images', '{images}', '--masks', '{masks}', '--mask-mode', 'index', '--foreground', '0'], 1),
    'train: foreground with index masks': (['train', '--images', '{images}', '--masks', '{masks}', '--mask-mode', 'index',
                                            '--foreground', '0', '--pretrained', 'none', '--out', '{root}/run1'], 1),
    'missing image folder': (['check', '--images', '{root}/nope', '--masks', '{masks}'], 1),
    'one class only': (['check', '--images', '{images}', '--masks', '{masks}', '--codes-file', '{root}/codes1.txt'], 1),
    'unknown architecture': (['train', '--images', '{images}', '--masks', '{masks}', '--arch', 'resnet999', '--pretrained', 'none',
                              '--size', '32', '--out', '{root}/run2'], 1),
    'learning rate not a number': (['train', '--images', '{images}', '--masks', '{masks}', '--lr', 'fast', '--pretrained', 'none',
                                    '--size', '32', '--out', '{root}/run3'], (1, 2)),
    'unknown loss': (['lr-find', '--images', '{images}', '--masks', '{masks}', '--loss', 'nosuchloss', '--pretrained', 'none',
                      '--size', '32', '--out', '{root}/run4'], (1, 2)),
    'predict without a model': (['predict', '--model', '{root}/nomodel', '--images', '{images}', '--out', '{root}/preds'], 1),
    'unknown command': (['fly'], 2),
}


@pytest.mark.parametrize('name', list(MISTAKES))
def test_user_mistake_is_not_an_internal_error(data, name):
    root, images, masks = data
    args, want = MISTAKES[name]
    r = cli(*[a.format(root=root, images=images, masks=masks) for a in args], timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode in ((want,) if isinstance(want, int) else want), f"{name}: exit {r.returncode}\n{out[-3000:]}"
    assert 'Traceback' not in out and 'internal error' not in out.lower(), out[-3000:]
