"""Tasks join data and models: each builds its data, model, loss, metrics and decoding.
An explicit registry, name -> class."""

from seqlab.tasks.classify import ClassifyTask

TASKS: dict[str, type] = {
    "classify": ClassifyTask,
}
