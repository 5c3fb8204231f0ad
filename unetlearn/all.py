"Everything a notebook needs: `from unetlearn.all import *` (fastai's vision API plus unetlearn's public names)."
# Hand-written (not generated): import order puts unetlearn's names last, so its `unet_learner` wins.
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
from .learner import *
from .train import *
from .distributed import *
from .inference import *
from .export import *
