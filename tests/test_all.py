"`from unetlearn.all import *` adds unetlearn's names and changes the meaning of no fastai name but `unet_learner`."
import importlib, inspect

def _star(module:str) -> dict:
    "The names `from module import *` binds, with their objects."
    ns = {}
    exec(f"from {module} import *", ns)
    ns.pop('__builtins__', None)
    return ns

def test_no_fastai_name_shadowed():
    fastai_ns, ours = _star('fastai.vision.all'), _star('unetlearn.all')
    changed = sorted(n for n, o in fastai_ns.items() if n in ours and ours[n] is not o)
    assert changed == ['unet_learner'], changed
    missing = sorted(n for n in fastai_ns if n not in ours)
    assert not missing, missing

def test_unetlearn_names_exported():
    ours = _star('unetlearn.all')
    for n in ('seg_dataloaders', 'SegLearner', 'SegDice', 'save_seg_model', 'load_seg_model', 'predict_files',
              'fine_tune', 'find_lr', 'train_run', 'pil_image_extensions', 'SegInterpretation', 'dataset_path'):
        assert n in ours, n
    import unetlearn.learner
    assert ours['unet_learner'] is unetlearn.learner.unet_learner

def test_unet_learner_keeps_fastai_signature():
    "fastai's positional order (dls, arch) and its keyword arguments are all accepted."
    from fastai.vision.learner import unet_learner as fastai_unet_learner
    from unetlearn.learner import unet_learner
    ours = inspect.signature(unet_learner).parameters
    theirs = inspect.signature(fastai_unet_learner).parameters
    assert list(ours)[:2] == list(theirs)[:2] == ['dls', 'arch']
    from fastai.vision.models.unet import DynamicUnet
    model_args = inspect.signature(DynamicUnet.__init__).parameters   # fastai delegates these; ours take **kwargs
    missing = [n for n in theirs if n not in ours and n not in model_args and n != 'kwargs']
    assert not missing, missing
    assert any(p.kind is p.VAR_KEYWORD for p in ours.values())

def test_old_names_still_import_from_their_modules():
    "Code written before the renames keeps working through the modules (not through the star import)."
    from unetlearn.export import save_model, load_model, save_seg_model, load_seg_model
    from unetlearn.metrics import Dice, SegDice
    from unetlearn.train import atomic_torch_save
    assert (save_model, load_model, Dice) == (save_seg_model, load_seg_model, SegDice)
    import fastcore.xtras
    assert _star('unetlearn.all')['atomic_save'] is fastcore.xtras.atomic_save
    assert _star('unetlearn.all')['atomic_torch_save'] is atomic_torch_save
