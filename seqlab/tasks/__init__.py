"""Tasks join data and models: each builds its data, model, loss, metrics and decoding.
An explicit registry, name -> class."""

from seqlab.tasks.caption import CaptionTask
from seqlab.tasks.classify import ClassifyTask
from seqlab.tasks.image import ImageTask
from seqlab.tasks.lm import LMTask
from seqlab.tasks.tag import TagTask
from seqlab.tasks.translate import TranslateTask
from seqlab.tasks.vectors import VectorsTask

TASKS: dict[str, type] = {
    "classify": ClassifyTask,
    "lm": LMTask,
    "tag": TagTask,
    "image": ImageTask,
    "translate": TranslateTask,
    "caption": CaptionTask,
    "vectors": VectorsTask,
}
