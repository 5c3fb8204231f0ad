"Everything a notebook needs: `from unetlearn.all import *` (fastai's vision API plus unetlearn's public names)."
# Hand-written (not generated). fastai first, then unetlearn's public names; unetlearn shadows exactly one fastai name,
# `unet_learner` (same signature, segmentation fixes). Everything else fastai exports keeps its meaning (tests/test_all.py).
from fastai.vision.all import *
from .core import *
from .masks import *
from .pairs import *
from .splits import *
from .rle import *
from .sample import *
from .data import *
from .check import *
from .metrics import *
from .losses import *
from .callbacks import *
from .learner import *
from .distributed import *
from .inference import *
from .export import *
from . import train as _train
# unetlearn.train's checkpoint writer `atomic_save` has fastcore's name: it stays importable from unetlearn.train
# but is not exported here, so `with atomic_save(...)` keeps working after the star import.
_NOT_EXPORTED = {'atomic_save'}
globals().update({_n: getattr(_train, _n) for _n in _train.__all__ if _n not in _NOT_EXPORTED})
