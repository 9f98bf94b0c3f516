"""seqlab: the classic deep-learning architectures for sequences, trained and served with one command.

    import seqlab
    run_dir = seqlab.train("sst2/bag", {"train.epochs": 3})
    seqlab.load(run_dir).predict(["a gripping, funny film"])
"""

# Imported eagerly on purpose: the package `seqlab.train` (the trainer) would otherwise shadow the
# function `seqlab.train` once loaded; binding the API names after it loads keeps `seqlab.train(...)`.
from seqlab.api import evaluate, info, load, train
from seqlab.tuning import tune  # Optuna is imported when a study starts

__version__ = "0.2.0"
__all__ = ["train", "load", "evaluate", "info", "tune", "__version__"]
