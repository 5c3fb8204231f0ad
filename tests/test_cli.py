"The `unetlearn` command line, run for real: the console script and `python -m unetlearn` in subprocesses."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from conftest import DATA, venv_tool

EXE = venv_tool('unetlearn')
RUN_FILES = ['model.pth', 'config.json', 'metrics.json', 'history.csv', 'loss.png', 'metrics.png', 'lr_schedule.png',
             'predictions.png']
# tiny settings: every training here is one short CPU run
TINY = ['--size', '32', '--bs', '4', '--arch', 'resnet18', '--pretrained', 'none', '--lr-find-iters', '20']
TRAIN_TINY = TINY + ['--freeze-epochs', '0']


def cli(*args, cwd=None, timeout=600, env=None, module=False):
    "Run `unetlearn ARGS` (or `python -m unetlearn ARGS`); the CompletedProcess with text output."
    if EXE is None and not module: pytest.skip('the unetlearn console script is not installed (pip install -e .)')
    cmd = [sys.executable, '-m', 'unetlearn'] if module else [EXE]
    e = {**os.environ, 'MPLBACKEND': 'Agg', 'PYTHONWARNINGS': 'ignore', **(env or {})}
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)


def blob(h, w, rs):
    "A textured image with a bright ellipse, and its 0/255 mask."
    y, x = np.mgrid[0:h, 0:w]
    cy, cx, ry, rx = rs.uniform(.3, .7) * h, rs.uniform(.3, .7) * w, rs.uniform(.15, .3) * h, rs.uniform(.15, .3) * w
    m = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
    img = rs.randint(0, 90, (h, w, 3)) + 150 * m[..., None]
    return Image.fromarray(img.clip(0, 255).astype(np.uint8)), Image.fromarray((m * 255).astype(np.uint8))


def make_data(root, n=10, size=(40, 48), seed=0):
    "root/images/img_<i>.png + root/masks/img_<i>.png (binary 0/255)."
    rs = np.random.RandomState(seed)
    (root/'images').mkdir(parents=True); (root/'masks').mkdir()
    for i in range(n):
        im, m = blob(*size, rs)
        im.save(root/'images'/f'img_{i}.png'); m.save(root/'masks'/f'img_{i}.png')
    return root/'images', root/'masks'


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp('tiny'))


@pytest.fixture(scope='module')
def trained(tiny, tmp_path_factory):
    "A run folder trained on the tiny data set (size 32, 1 epoch, resnet18, random encoder, LR finder)."
    run = tmp_path_factory.mktemp('runs')/'tiny'
    (run/'checkpoints').mkdir(parents=True)   # what a killed writer leaves: removed at the next start
    for stale in ('.model.pth.0a1b2c3d4e5f.tmp', 'checkpoints/.last.pth.k2j4h5s8.tmp'): (run/stale).write_bytes(b'half')
    r = cli('train', '--images', tiny[0], '--masks', tiny[1], *TRAIN_TINY, '--epochs', '2', '--lr', 'auto', '--out', run)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run, r


# --- arguments and help ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('command', ['train', 'predict', 'check', 'lr-find'])
def test_help(command):
    r = cli(command, '--help')
    assert r.returncode == 0, r.stderr
    assert f'usage: unetlearn {command}' in r.stdout and 'examples:' in r.stdout


def test_python_m_unetlearn():
    r = cli('--help', module=True)
    assert r.returncode == 0, r.stderr
    for c in ['train', 'predict', 'check', 'lr-find']: assert c in r.stdout
    r = cli('--version', module=True)
    assert r.returncode == 0 and r.stdout.startswith('unetlearn ')


@pytest.mark.parametrize('args', [
    [], ['fly'], ['train', '--fp16', 'maybe'], ['train', '--lr', 'fast'], ['train', '--valid-pct', '20'],
    ['train', '--progressive', '64,big'], ['train', '--loss', 'hinge'], ['predict', '--images', 'x', '--out', 'y'],
    ['predict', '--model', 'm', '--images', 'x', '--out', 'y', '--tta', 'd8'],
    ['predict', '--model', 'm', '--images', 'x', '--out', 'y', '--mask-scale', '100'], ['check'],
    ['train', '--valid-file', 'v.txt', '--valid-pct', '0.3'],   # checked after parsing: still a usage error
    ['train', '--size', '64', '--progressive', '32,64'], ['train', '--masks', 'masks']],
    ids=lambda a: ' '.join(a) or 'no-command')
def test_bad_arguments_exit_2(args):
    r = cli(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert 'error:' in r.stderr and 'Traceback' not in r.stderr


# --- user-input errors: exit 1, the path named, no traceback ---------------------------------------------------------

def test_missing_folders_exit_1(tmp_path, tiny):
    missing, no_run = tmp_path/'no_such_folder', tmp_path/'no_run'
    for args, named in ((['check', '--images', missing], missing),
                        (['train', '--images', missing, '--masks', tiny[1]], missing),
                        (['train', '--images', tiny[0], '--masks', missing], missing),
                        (['lr-find', '--images', missing], missing),
                        (['predict', '--model', no_run, '--images', tiny[0], '--out', tmp_path/'o'], no_run),
                        (['predict', '--model', tmp_path, '--images', missing, '--out', tmp_path/'o'], missing)):
        r = cli(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert 'Traceback' not in r.stderr + r.stdout
        assert str(named) in r.stdout + r.stderr, (args, r.stdout, r.stderr)


def test_predict_model_folder_without_model(tmp_path, tiny):
    "A folder that is not a run folder: exit 1 naming config.json."
    r = cli('predict', '--model', tmp_path, '--images', tiny[0], '--out', tmp_path/'o')
    assert r.returncode == 1 and 'config.json' in r.stderr and 'Traceback' not in r.stderr, r.stderr


def test_predict_out_inside_images(trained, tiny):
    r = cli('predict', '--model', trained[0], '--images', tiny[0], '--out', tiny[0]/'pred')
    assert r.returncode == 1 and 'inside --images' in r.stderr, r.stderr
    assert not (tiny[0]/'pred').exists()


# --- check ------------------------------------------------------------------------------------------------------------

def test_check_ok(tiny):
    r = cli('check', '--images', tiny[0], '--masks', tiny[1])
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'OK' in r.stdout


def test_check_names_each_bad_file(tmp_path):
    images, masks = make_data(tmp_path, n=6)
    (images/'img_0.png').write_bytes(b'')                                   # zero-byte image
    (images/'img_1.png').write_bytes(b'not a png at all')                   # unreadable image
    (masks/'img_2.png').unlink()                                            # image without a mask
    Image.new('L', (10, 10)).save(masks/'orphan.png')                       # mask without an image
    Image.new('L', (7, 9)).save(masks/'img_3.png')                          # wrong size
    (images/'notes.exe').write_bytes(b'MZ')                                 # not an image
    before = sorted(p.name for p in images.iterdir()) + sorted(p.name for p in masks.iterdir())
    r = cli('check', '--images', images, '--masks', masks)
    assert r.returncode == 1, r.stdout + r.stderr
    for bad in [images/'img_0.png', images/'img_1.png', images/'img_2.png', masks/'orphan.png', masks/'img_3.png',
                images/'notes.exe']:
        assert str(bad) in r.stdout, f"{bad} not named in:\n{r.stdout}"
    assert 'Traceback' not in r.stderr
    assert sorted(p.name for p in images.iterdir()) + sorted(p.name for p in masks.iterdir()) == before  # nothing written


def test_check_mask_values_vs_codes(tmp_path):
    images, masks = make_data(tmp_path, n=4)
    for m in masks.iterdir(): Image.fromarray(np.asarray(Image.open(m)) // 255).save(m)  # index masks 0/1
    a = np.zeros((40, 48), np.uint8); a[5:9, 5:9] = 7
    Image.fromarray(a).save(masks/'img_1.png')
    r = cli('check', '--images', images, '--masks', masks, '--codes', 'background,tumour', '--mask-mode', 'index')
    assert r.returncode == 1 and str(masks/'img_1.png') in r.stdout and '7' in r.stdout, r.stdout


def test_check_shared_data(shared_data):
    cam = shared_data/'camvid_tiny'
    r = cli('check', '--images', cam/'images', '--masks', cam/'labels', '--mask-pattern', '{stem}_P{suffix}',
            '--codes-file', cam/'codes.txt')
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli('check', '--images', shared_data/'isbi2012_em'/'image', '--masks', shared_data/'isbi2012_em'/'label', '--foreground', '0')
    assert r.returncode == 0, r.stdout + r.stderr


# --- train, lr-find, predict ----------------------------------------------------------------------------------------

def test_train_writes_the_run_folder(trained):
    run, r = trained
    for f in RUN_FILES + ['lr_find.png']: assert (run/f).is_file(), f"{f} missing in {run}: {sorted(os.listdir(run))}"
    m = json.loads((run/'metrics.json').read_text())
    assert 'final' in m and 'history' in m and len(m['history']) == 2
    cfg = json.loads((run/'config.json').read_text())
    assert cfg['format'] == 'unetlearn.model' and cfg['arch'] == 'resnet18' and cfg['codes'][0] == 'background'
    assert r.stdout.count('final validation metrics') == 1 and 'dice' in r.stdout   # the summary, once


def test_redirected_log_is_plain(trained):
    "stdout is a pipe here, as in `unetlearn train > log`: no progress frames, one plain line per epoch."
    run, r = trained
    assert '\r' not in r.stdout + r.stderr, repr(r.stdout[:500])
    epochs = [l for l in r.stdout.splitlines() if l.startswith('epoch ')]
    assert [l.split('  ')[0] for l in epochs] == ['epoch 1/2', 'epoch 2/2'], r.stdout
    assert all('train_loss' in l and 'valid_loss' in l and 'dice' in l for l in epochs), epochs
    assert max(len(l) for l in r.stdout.splitlines()) < 400


def test_lean_run_folder(trained):
    "After success: one copy of the weights, no optimizer state, ordinary file modes, no temporary files."
    run, _ = trained
    names = sorted(p.relative_to(run).as_posix() for p in run.rglob('*'))
    assert names == sorted(RUN_FILES + ['lr_find.png']), names    # no checkpoints/, no best.pth, no .tmp
    umask = os.umask(0o022); os.umask(umask)
    assert {f: (run/f).stat().st_mode & 0o777 for f in names} == {f: 0o666 & ~umask for f in names}


def test_finished_run_is_refused_kept_or_replaced(trained, tiny, tmp_path):
    import shutil
    run = tmp_path/'run'
    shutil.copytree(trained[0], run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    args = ['train', '--images', tiny[0], '--masks', tiny[1], *TRAIN_TINY, '--epochs', '2', '--lr', 'auto', '--out', run]
    r = cli(*args)
    assert r.returncode == 1 and f"{run} holds a finished run" in r.stderr and '--overwrite' in r.stderr, r.stderr
    assert 'Traceback' not in r.stdout + r.stderr
    r = cli(*args, '--resume')   # a finished run: nothing to resume, kept as it is
    assert r.returncode == 0 and 'nothing to resume' in r.stdout, r.stdout + r.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    r = cli(*args[:-4], '--epochs', '1', '--lr', '1e-3', '--out', run, '--overwrite', '--quiet')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(json.loads((run/'metrics.json').read_text())['history']) == 1 and not (run/'lr_find.png').exists()
    assert 'epoch 1' not in r.stdout and len(r.stdout.strip().splitlines()) == 1, r.stdout   # --quiet: the result only
    import torch
    assert isinstance(torch.load(run/'model.pth', weights_only=True), dict)


def test_lr_find(tiny, tmp_path):
    r = cli('lr-find', '--images', tiny[0], '--masks', tiny[1], *TINY, '--out', tmp_path/'lr')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path/'lr'/'lr_find.png').is_file()
    assert 'valley' in r.stdout and 'chosen' in r.stdout
    assert sorted(os.listdir(tmp_path/'lr')) == ['lr_find.png']  # fastai's temporary weights are gone


def _odd_folder(root):
    "Images of odd sizes and kinds, and one corrupt file."
    rs = np.random.RandomState(1)
    root.mkdir()
    blob(53, 37, rs)[0].save(root/'small.png')                 # 37 wide x 53 high
    blob(101, 101, rs)[0].convert('L').save(root/'salt.png')    # grey, TGS size
    blob(60, 90, rs)[0].convert('RGBA').save(root/'rgba.png')
    (root/'sub').mkdir()
    blob(33, 65, rs)[0].save(root/'sub'/'deep.jpg')
    (root/'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 40)
    return {'small': (37, 53), 'salt': (101, 101), 'rgba': (90, 60), 'sub/deep': (65, 33)}


def test_predict_original_sizes_and_corrupt_image(trained, tmp_path):
    sizes = _odd_folder(tmp_path/'new')
    out = tmp_path/'pred'
    r = cli('predict', '--model', trained[0], '--images', tmp_path/'new', '--out', out)
    assert r.returncode == 1, r.stdout + r.stderr          # the corrupt image makes it fail, at the end
    assert 'broken.png' in r.stderr and 'Traceback' not in r.stderr
    assert not (out/'broken.png').exists()
    for stem, size in sizes.items():
        p = out/f'{stem}.png'
        assert p.is_file(), f"{p} not written: {r.stdout}{r.stderr}"
        m = Image.open(p)
        assert m.mode == 'L' and m.size == size, (stem, m.mode, m.size, size)
        assert set(np.unique(np.asarray(m))) <= {0, 1}


def test_predict_mask_scale_255_tta(trained, tmp_path):
    rs = np.random.RandomState(2)
    (tmp_path/'new').mkdir()
    blob(53, 37, rs)[0].save(tmp_path/'new'/'a.png'); blob(101, 101, rs)[0].save(tmp_path/'new'/'b.tif')
    for tta in ['d4']:  # flip: see the notebook; each run here costs a process start
        out = tmp_path/f'pred_{tta}'
        r = cli('predict', '--model', trained[0], '--images', tmp_path/'new', '--out', out, '--tta', tta,
                '--mask-scale', '255', '--threshold', '0.5')
        assert r.returncode == 0, r.stdout + r.stderr
        assert sorted(p.name for p in out.iterdir()) == ['a.png', 'b.png']
        for n, size in [('a.png', (37, 53)), ('b.png', (101, 101))]:
            m = Image.open(out/n)
            assert m.size == size and set(np.unique(np.asarray(m))) <= {0, 255}


def test_pretrained_imagenet_offline_is_a_clear_error(tiny, tmp_path):
    "No internet (forced with a dead proxy and an empty torch cache): exit 1 naming both alternatives."
    dead = 'http://127.0.0.1:9'
    env = {'TORCH_HOME': str(tmp_path/'torch'), 'HTTPS_PROXY': dead, 'HTTP_PROXY': dead, 'https_proxy': dead, 'http_proxy': dead}
    r = cli('train', '--images', tiny[0], '--masks', tiny[1], '--size', '32', '--arch', 'resnet18', '--pretrained', 'imagenet',
            '--epochs', '1', '--lr', '1e-3', '--out', tmp_path/'run', env=env)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.startswith('error:') or '\nerror:' in r.stderr
    assert '--pretrained none' in r.stderr and 'resnet18' in r.stderr and 'Traceback' not in r.stderr


def test_resume_after_a_kill(tiny, tmp_path):
    "Kill training after its first checkpoint; `--resume` continues from it and finishes every epoch."
    run = tmp_path/'run'
    args = ['train', '--images', tiny[0], '--masks', tiny[1], *TRAIN_TINY, '--epochs', '3', '--lr', '1e-3', '--out', run]
    e = {**os.environ, 'MPLBACKEND': 'Agg', 'PYTHONWARNINGS': 'ignore'}
    p = subprocess.Popen([EXE] + [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e)
    last, t0 = run/'checkpoints'/'last.pth', time.time()
    try:
        while not last.exists() and p.poll() is None and time.time() - t0 < 300: time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    assert last.exists(), 'no checkpoint was written'
    if (run/'metrics.json').exists(): pytest.skip('training finished before it could be killed (machine too fast)')
    r = cli(*args, '--resume')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'resuming' in r.stdout
    m = json.loads((run/'metrics.json').read_text())
    assert m['resumed_from'] is not None and len(m['history']) == 3


def test_train_sample_data_without_arguments(tmp_path):
    "`unetlearn train` alone: the built-in sample data set, under 3 minutes on 2 CPU cores, a final metrics table."
    t0 = time.time()
    r = cli('train', cwd=tmp_path, timeout=900)
    took = time.time() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = list((tmp_path/'runs').iterdir())
    assert len(runs) == 1
    for f in RUN_FILES: assert (runs[0]/f).is_file(), f
    assert 'final validation metrics' in r.stdout and 'sample data set' in r.stdout
    assert 'epoch 5/5' in r.stdout and '\r' not in r.stdout  # a pipe: plain epoch lines, no fastprogress frames
    dice = json.loads((runs[0]/'metrics.json').read_text())['final']['dice']
    assert dice > 0.5, f"the sample data set is easy; dice {dice:.3f} means training is broken"
    print(f"unetlearn train (sample data) took {took:.0f} s")
