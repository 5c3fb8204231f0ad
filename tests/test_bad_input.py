"""The catalogue of malformed input: each case runs the real `unetlearn` program and asserts the exit code, that the
message names the file, that there is no traceback, and that the data folders are byte-identical afterwards."""
import hashlib, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from test_cli import cli, make_data

# a read-only mount cannot be made without root, and root ignores file modes: os.open / os.mkdir fail with EROFS
# under the folder given first, then the real program runs (the same code path as a read-only disk)
READ_ONLY = r'''
import errno, os, sys
ro = os.path.abspath(sys.argv[1])
def guard(f):
    def g(path, *a, **k):
        if os.path.abspath(os.fsdecode(path)).startswith(ro): raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return f(path, *a, **k)
    return g
os.open, os.mkdir = guard(os.open), guard(os.mkdir)
from unetlearn.cli import main
sys.exit(main(sys.argv[2:]))
'''


def tree(root) -> dict:
    "Every entry under `root`: file -> sha256, link -> its target text, folder -> 'dir' (links never followed)."
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath)/n
            key = p.relative_to(root).as_posix()
            if p.is_symlink(): out[key] = 'link -> ' + os.readlink(p)
            elif p.is_dir(): out[key] = 'dir'
            else: out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    "A run folder (model.pth + config.json) of a random fastai resnet18 U-Net, binary, 32 px: no training needed."
    import torch, warnings
    from fastai.vision.learner import create_unet_model
    from torchvision.models import resnet18
    from unetlearn.export import save_seg_model
    run = tmp_path_factory.mktemp('model')/'run'
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        net = create_unet_model(resnet18, 1, (32, 32), pretrained=False, self_attention=False)
    save_seg_model(net, run, {'size': 32, 'resize_method': 'squish', 'mean': [.5] * 3, 'std': [.25] * 3})
    return run


def crafted(model_dir, dest, edit):
    "A copy of `model_dir` whose config.json is `edit(config)` (a JSON value, or bytes written as they are)."
    dest.mkdir(parents=True)
    (dest/'model.pth').write_bytes((model_dir/'model.pth').read_bytes())
    new = edit(json.loads((model_dir/'config.json').read_text()))
    (dest/'config.json').write_bytes(new if isinstance(new, bytes) else json.dumps(new).encode())
    return dest


def _kw(c, **kw): return {**c, 'model_kwargs': kw}

CONFIGS = {   # config.json edits: each must be exit 1 naming config.json and the field / the problem
    'act_cls set_trace (would open pdb)': (lambda c: _kw(c, act_cls='set_trace'), 'model_kwargs.act_cls = "set_trace"'),
    'act_cls breakpoint': (lambda c: _kw(c, act_cls='breakpoint'), 'model_kwargs.act_cls'),
    'unknown act_cls': (lambda c: _kw(c, act_cls='Swish2'), 'model_kwargs.act_cls = "Swish2"'),
    'init as a string': (lambda c: _kw(c, init='kaiming_normal_'), 'model_kwargs.init'),
    'norm_type not a NormType': (lambda c: _kw(c, norm_type='__class__'), 'model_kwargs.norm_type'),
    'non-dict JSON': (lambda c: [c], 'JSON list'),
    'JSON string': (lambda c: 'hello', 'JSON str'),
    'not JSON at all': (lambda c: b'{"format": "unetlearn.model", ', 'not valid JSON'),
    'version abc': (lambda c: {**c, 'version': 'abc'}, 'field version = "abc"'),
    'version from the future': (lambda c: {**c, 'version': 7}, 'upgrade unetlearn'),
    'bad smp arch': (lambda c: {**c, 'framework': 'smp', 'arch': 'UNetXL', 'encoder': 'resnet18', 'model_kwargs': {}}, 'field arch = "UNetXL"'),
    'bad smp encoder': (lambda c: {**c, 'framework': 'smp', 'arch': 'Unet', 'encoder': 'resnet9000', 'model_kwargs': {}}, 'field encoder = "resnet9000"'),
    'arch a module function': (lambda c: {**c, 'arch': 'get_model'}, 'field arch = "get_model"'),
    'huge img_size': (lambda c: {**c, 'img_size': [200000, 200000]}, 'field img_size'),
    'huge n_out': (lambda c: {**c, 'n_out': 10**7}, 'field n_out = 10000000'),
    'negative n_in': (lambda c: {**c, 'n_in': -3}, 'field n_in = -3'),
    'threshold a string': (lambda c: {**c, 'threshold': 'high'}, 'field threshold = "high"'),
    'unknown field': (lambda c: {**c, 'exec': 'import os'}, 'field exec'),
    'wrong format': (lambda c: {**c, 'format': 'other.tool'}, 'not a unetlearn model config'),
    'codes do not match n_out': (lambda c: {**c, 'codes': ['a', 'b', 'c']}, '3 codes but the model predicts 2'),
}


def check_result(r, code, named, *words):
    out = r.stdout + r.stderr
    assert r.returncode == code, (r.returncode, out[-3000:])
    assert 'Traceback' not in out, out[-3000:]
    for n in [named, *words]:
        if n is not None: assert str(n) in out, f"{n!r} not in:\n{out[-3000:]}"


@pytest.fixture
def data(tmp_path):
    "A small binary data set (images/, masks/) and its tree before the case runs."
    images, masks = make_data(tmp_path/'data', n=4)
    return tmp_path/'data', images, masks


# --- predict: model folders ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('case', list(CONFIGS))
def test_crafted_config(case, model_dir, data, tmp_path):
    root, images, _ = data
    edit, words = CONFIGS[case]
    run = crafted(model_dir, tmp_path/'run', edit)
    before, run_before = tree(root), tree(run)
    r = cli('predict', '--model', run, '--images', images, '--out', tmp_path/'out', timeout=120)
    check_result(r, 1, run/'config.json', words)
    assert tree(root) == before and tree(run) == run_before
    assert not (tmp_path/'out').exists() or not any((tmp_path/'out').iterdir())


def test_model_folder_without_config(model_dir, data, tmp_path):
    root, images, _ = data
    run = tmp_path/'half_run'; run.mkdir()
    (run/'model.pth').write_bytes((model_dir/'model.pth').read_bytes())
    r = cli('predict', '--model', run, '--images', images, '--out', tmp_path/'out')
    check_result(r, 1, f"{run/'config.json'} not found")
    assert 'config.json/config.json' not in r.stderr


# --- predict: outputs never destroy inputs ---------------------------------------------------------------------------

def test_symlink_in_out_is_not_written_through(model_dir, data, tmp_path):
    root, images, _ = data
    out = tmp_path/'out'; out.mkdir()
    os.symlink(images/'img_0.png', out/'img_0.png')       # out/x.png -> data/images/x.png
    before = tree(root)
    r = cli('predict', '--model', model_dir, '--images', images, '--out', out)
    check_result(r, 0, out)
    assert tree(root) == before                            # the image behind the link is untouched
    assert not (out/'img_0.png').is_symlink() and Image.open(out/'img_0.png').size == (48, 40)


def test_linked_folder_in_out_leading_into_data(model_dir, data, tmp_path):
    root, images, _ = data
    new = tmp_path/'new'/'sub'; new.mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(new/'img_1.png')
    out = tmp_path/'out'; out.mkdir()
    os.symlink(images, out/'sub')                          # out/sub -> data/images: out/sub/img_1.png is an input
    before = tree(root)
    r = cli('predict', '--model', model_dir, '--images', tmp_path/'new', '--out', out)
    check_result(r, 1, out/'sub', 'outside the output folder')
    assert tree(root) == before


def test_out_is_a_link_to_the_images(model_dir, data, tmp_path):
    root, images, _ = data
    os.symlink(images, tmp_path/'out')
    before = tree(root)
    r = cli('predict', '--model', model_dir, '--images', images, '--out', tmp_path/'out')
    check_result(r, 1, tmp_path/'out', 'inside --images')
    assert tree(root) == before


def test_out_read_only(model_dir, data, tmp_path):
    root, images, _ = data
    out = tmp_path/'ro'/'masks'
    before = tree(root)
    e = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'MPLBACKEND': 'Agg'}
    r = subprocess.run([sys.executable, '-c', READ_ONLY, str(tmp_path/'ro'), 'predict', '--model', str(model_dir),
                        '--images', str(images), '--out', str(out)], capture_output=True, text=True, timeout=300, env=e)
    check_result(r, 1, out, 'read-only file system')
    assert tree(root) == before


@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0, reason='root ignores file modes')
def test_out_without_permission(model_dir, data, tmp_path):
    root, images, _ = data
    locked = tmp_path/'locked'; locked.mkdir(); locked.chmod(0o555)
    try:
        r = cli('predict', '--model', model_dir, '--images', images, '--out', locked/'masks')
        check_result(r, 1, locked/'masks', 'permission denied')
    finally: locked.chmod(0o755)


def test_out_is_a_file(model_dir, data, tmp_path):
    root, images, _ = data
    (tmp_path/'out.png').write_bytes(b'not a folder')
    r = cli('predict', '--model', model_dir, '--images', images, '--out', tmp_path/'out.png')
    check_result(r, 1, tmp_path/'out.png', 'is a file, not a folder')
    assert (tmp_path/'out.png').read_bytes() == b'not a folder'


@pytest.mark.parametrize('pattern', ['{foo}.png', 're:(=>x', '{stem.upper}.png'])
def test_predict_bad_mask_pattern(pattern, model_dir, data, tmp_path):
    root, images, _ = data
    before = tree(root)
    r = cli('predict', '--model', model_dir, '--images', images, '--out', tmp_path/'out', '--mask-pattern', pattern)
    check_result(r, 1, repr(pattern))
    assert tree(root) == before


# --- check: what it reports, and that it writes nothing --------------------------------------------------------------

def _grey(path, a): Image.fromarray(a).save(path)

def _mixed_8_16(images, masks):
    m = np.asarray(Image.open(masks/'img_1.png')) // 255
    _grey(masks/'img_1.png', m.astype(np.uint16) * 65535)          # 16-bit 0/65535 beside 8-bit 0/255

def _mixed_01_255(images, masks):
    _grey(masks/'img_2.png', np.asarray(Image.open(masks/'img_2.png')) // 255)   # 0/1 beside 0/255

def _litter(images, masks):
    for d in (images, masks):
        for n in ['Thumbs.db', 'desktop.ini', '.DS_Store', '._img_0.png']: (d/n).write_bytes(b'\0\1junk')
    (masks/'__MACOSX').mkdir(); (masks/'__MACOSX'/'._img_0.png').write_bytes(b'\0')

def _dangling(images, masks): os.symlink(images/'deleted.png', images/'img_9.png')
def _dangling_mask(images, masks):
    (masks/'img_0.png').unlink(); os.symlink(masks/'gone.png', masks/'img_0.png')
def _zero_byte(images, masks): (images/'img_1.png').write_bytes(b'')
def _not_an_image(images, masks): (images/'scan.npy').write_bytes(b'\x93NUMPY')
def _wrong_size(images, masks): _grey(masks/'img_2.png', np.zeros((7, 9), np.uint8))
def _orphan(images, masks): _grey(masks/'extra.png', np.zeros((40, 48), np.uint8))

CHECKS = {   # setup, extra args, exit code, file named (relative to the data root, or None), words in the output
    'mixed 8-bit 0/255 and 16-bit 0/65535': (_mixed_8_16, [], 0, None, ["mask mode 'binary', 2 classes", 'OK']),
    'mixed 0/1 and 0/255': (_mixed_01_255, [], 0, None, ["mask mode 'binary', 2 classes", 'OK']),
    'OS litter': (_litter, [], 0, None, ['OK: ready to train']),
    'dangling image link': (_dangling, [], 1, 'images/img_9.png', ['broken symbolic link']),
    'dangling mask link': (_dangling_mask, [], 1, 'masks/img_0.png', ['broken symbolic link']),
    'zero-byte image': (_zero_byte, [], 1, 'images/img_1.png', ['empty image file']),
    'not an image': (_not_an_image, [], 1, 'images/scan.npy', ["'.npy'"]),
    'mask of the wrong size': (_wrong_size, [], 1, 'masks/img_2.png', ['9x7']),
    'mask without an image': (_orphan, [], 1, 'masks/extra.png', ['mask without an image']),
    'bad pattern token': (None, ['--mask-pattern', '{foo}.png'], 1, None, ["'{foo}.png'", 'unknown token']),
    'bad pattern regex': (None, ['--mask-pattern', 're:(=>x'], 1, None, ["'re:(=>x'", 'not a valid regular expression']),
    'pattern attribute access': (None, ['--mask-pattern', '{stem.__class__}.png'], 1, None, ['unknown token']),
    'missing masks folder': (None, ['--masks', 'NOWHERE'], 1, None, ['NOWHERE']),
}


@pytest.mark.parametrize('case', list(CHECKS))
def test_check_catalogue(case, data):
    root, images, masks = data
    setup, extra, code, named, words = CHECKS[case]
    if setup is not None: setup(images, masks)
    args = ['check', '--images', images] + ([] if '--masks' in extra else ['--masks', masks])
    args += [str(root/a) if a == 'NOWHERE' else a for a in extra]
    before = tree(root)
    r = cli(*args)
    check_result(r, code, None if named is None else root/named, *words)
    assert tree(root) == before


# --- train: the same pair checks as check (one validation path), and run folders it must not replace ---------------

def _float_nan(images, masks):
    a = np.random.RandomState(0).rand(40, 48).astype(np.float32); a[5, 5] = np.nan
    (images/'img_1.png').unlink(); Image.fromarray(a, mode='F').save(images/'img_1.tif')

def _exif_rotated(images, masks):
    exif = Image.Exif(); exif[0x0112] = 6
    (images/'img_2.png').unlink()
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(images/'img_2.jpg', exif=exif)
    _grey(masks/'img_2.png', np.zeros((48, 40), np.uint8))           # drawn on the rotated view

def _truncated(images, masks):
    b = (images/'img_3.png').read_bytes(); (images/'img_3.png').write_bytes(b[:len(b) // 2])

TRAIN_CASES = {   # setup, file named (relative to the data root), words; each is exit 1 from train AND from check
    'mask of the wrong size': (_wrong_size, 'masks/img_2.png', ['9x7']),
    'NaN in a float image': (_float_nan, 'images/img_1.tif', ['NaN']),
    'EXIF-rotated photo, mask of the rotated view': (_exif_rotated, 'masks/img_2.png', ['EXIF orientation 6']),
    'truncated PNG': (_truncated, 'images/img_3.png', ['cut short']),
}


@pytest.mark.parametrize('case', list(TRAIN_CASES))
def test_train_refuses_what_check_refuses(case, data, tmp_path):
    root, images, masks = data
    setup, named, words = TRAIN_CASES[case]
    setup(images, masks)
    before = tree(root)
    for args in (['check'], ['train', '--size', '32', '--arch', 'resnet18', '--pretrained', 'none', '--epochs', '1',
                             '--lr', '1e-3', '--out', tmp_path/'run']):
        r = cli(*args, '--images', images, '--masks', masks)
        check_result(r, 1, root/named, *words)
    assert tree(root) == before
    assert not (tmp_path/'run').exists()    # nothing half-made that looks like a run


@pytest.mark.parametrize('kind', ['finished', 'unfinished'])
def test_train_refuses_an_out_holding_a_run(kind, model_dir, data, tmp_path):
    root, images, masks = data
    run = tmp_path/'run'; run.mkdir()
    if kind == 'finished':
        for f in ('model.pth', 'config.json'): (run/f).write_bytes((model_dir/f).read_bytes())
        (run/'metrics.json').write_text('{}')
    else:
        (run/'checkpoints').mkdir(); (run/'checkpoints'/'last.pth').write_bytes(b'a checkpoint')
    before, run_before = tree(root), tree(run)
    r = cli('train', '--images', images, '--masks', masks, '--size', '32', '--arch', 'resnet18', '--pretrained', 'none',
            '--epochs', '1', '--lr', '1e-3', '--out', run)
    check_result(r, 1, run, f'holds {"a finished" if kind == "finished" else "an unfinished"} run', '--resume', '--overwrite')
    assert tree(root) == before and tree(run) == run_before
