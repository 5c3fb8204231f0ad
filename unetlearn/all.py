"Everything a notebook needs: `from unetlearn.all import *` (fastai's vision API plus unetlearn's public names)."
# Hand-written (not generated). fastai first, then unetlearn's public names; unetlearn shadows exactly one fastai name,
# `unet_learner` (same signature, segmentation fixes). Everything else fastai exports keeps its meaning (tests/test_all.py).
from fastai.vision.all import *
from .core import *
from .datasets import *
from .masks import *
from .pairs import *
from .splits import *
from .rle import *
from .sample import *
from .data import *
from .check import *
from .patches import *
from .plan import *
from .metrics import *
from .losses import *
from .distributed import *
from .callbacks import *
from .config import *
from .networks import *
from .learner import *
from .schedule import *
from .plots import *
from .inference import *
from .export import *
from .onnx_export import *
from .train import *
