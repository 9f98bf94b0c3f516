"""Task `image`: image -> label, with a 2-D ConvNet (the lecture's convolution, pooling and ConvNet).

Data, one of:
- `dataset=digits` (the default): scikit-learn's bundled 8x8 digits, no files. It has no splits of its
  own: a fixed `task.test_fraction` of it (the same for every seed) is the test split.
- `data.format=idx`: MNIST / Fashion-MNIST IDX files, raw or gzipped. `data.train` (and `data.test`)
  name the images file; its labels file is found by the MNIST naming scheme, `images-idx3` ->
  `labels-idx1` (`train-images-idx3-ubyte.gz` beside `train-labels-idx1-ubyte.gz`).
- `data.format=folder`: `data.train` (and `data.valid` / `data.test`) are folders with one subfolder of
  images per class; `task.size` resizes them all to one size.
`data.format=auto` means folder for a directory and idx for a file. Without a valid split, the trainer
holds out `data.valid_fraction` of train.

Pixels become floats in [0, 1], then with `task.normalize=standard` are standardised per channel with
the training images' mean and standard deviation (kept in the run directory). `task.augment_shift`
translates each training image by up to that many pixels. Loss: cross-entropy. Metrics: accuracy,
macro-F1, loss; `report` adds the per-class table and the confusion matrix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data import LabelVocab
from seqlab.data.batching import sequential_batches, shuffled_batches
from seqlab.data.images import load_digits_arrays, load_image, read_image_folder, read_mnist
from seqlab.data.io import atomic_write_text
from seqlab.errors import CheckpointError, ConfigError, DataError, LabelError
from seqlab.models import MODELS
from seqlab.options import NonNegative, Positive, Range
from seqlab.tasks.common import LabelClassification, format_label, hold_out, top_k_labels

ARTIFACT = "labels.json"
FORMATS = ("auto", "idx", "folder")
DATASETS = ("digits",)
TEST_SEED = 0  # the digits test split never moves with the run's seed


@dataclass
class ImageConfig:
    normalize: Literal["standard", "scale"] = "standard"  # standard: per-channel mean/std of the training
    # images; scale: [0, 1] only
    augment_shift: NonNegative = 0  # training only: random translation by up to this many pixels (0: off)
    size: Positive | None = None  # folder images: resize to size x size (None: they must share one size)
    test_fraction: Annotated[float, Range(0.0, 1.0, min_open=True, max_open=True)] = 0.2  # digits: the test share


@dataclass
class ImageSplit:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64 class ids
    path: str | None


@dataclass
class ImageBatch:
    images: torch.Tensor  # (B, C, H, W) float, normalised
    labels: torch.Tensor  # (B,)

    @property
    def inputs(self) -> tuple[torch.Tensor]:
        return (self.images,)


def labels_path(images_path: str | os.PathLike) -> Path:
    """The MNIST labels file beside an images file: `...images-idx3...` -> `...labels-idx1...`."""
    p = Path(images_path)
    if "images-idx3" not in p.name:
        raise ConfigError(f"cannot find the labels of {p.name}: data.format=idx expects the MNIST file names "
                          "(`*-images-idx3-ubyte[.gz]` beside `*-labels-idx1-ubyte[.gz]`)", path=p)
    return p.with_name(p.name.replace("images-idx3", "labels-idx1"))


class ImageTask(LabelClassification):
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    Config = ImageConfig
    default_model = "convnet"
    default_dataset = "digits"

    def __init__(self, cfg: Any, device: torch.device, log=print):
        self.cfg = cfg
        self.opt: ImageConfig = cfg.task_options
        self.device = device
        self.log = log or (lambda _m: None)
        self.model_cls = MODELS["image"][cfg.model]
        if cfg.data.format not in FORMATS:
            raise ConfigError(f"data.format must be one of {', '.join(FORMATS)} for task image, "
                              f"got {cfg.data.format!r}")
        self.labels: LabelVocab | None = None
        self.shape: tuple[int, int, int] | None = None  # (C, H, W) of every image the model takes
        self.mean: np.ndarray | None = None  # (C,) per-channel mean and std of the training pixels in [0, 1]
        self.std: np.ndarray | None = None
        self.splits: dict[str, ImageSplit] = {}
        self.counts: dict[str, Any] = {}

    # ------------------------------------------------------------------ files
    def read_path(self, path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
        """Images (N, C, H, W) uint8 and their labels as strings, from an IDX images file or a folder."""
        fmt = self.cfg.data.format
        if fmt == "auto":
            fmt = "folder" if Path(path).is_dir() else "idx"
        if fmt == "folder":
            folder = read_image_folder(path, self.opt.size)
            x, y = folder.arrays()
            return x, [folder.classes[i] for i in y]
        x, y = read_mnist(path, labels_path(path))
        return x, [str(v) for v in y]

    def _read_all(self) -> dict[str, tuple[np.ndarray, list[str], str | None]]:
        d = self.cfg.data
        if d.train:
            return {s: (*self.read_path(p), str(p)) for s, p in (("train", d.train), ("valid", d.valid),
                                                                   ("test", d.test)) if p}
        name = self.cfg.dataset or self.default_dataset
        if name not in DATASETS:
            raise ConfigError(f"unknown image dataset {name!r} (built in: {', '.join(DATASETS)}); for files set "
                              "data.train=PATH with data.format=idx|folder")
        x, y = load_digits_arrays()
        labels = [str(v) for v in y]
        train, test = hold_out(len(x), self.opt.test_fraction, TEST_SEED)
        return {"train": (x[train], [labels[i] for i in train], None),
                "test": (x[test], [labels[i] for i in test], None)}

    # ------------------------------------------------------------------ preparation
    def prepare(self, artifacts: str | Path | None = None) -> None:
        """Read every split. With `artifacts` (a run directory) labels, shape and normalisation come from
        it (resume, evaluation); otherwise from the training split."""
        raw = self._read_all()
        if "train" in raw and "valid" not in raw and self.cfg.data.valid_fraction > 0:
            x, y, path = raw["train"]
            keep, held = hold_out(len(x), self.cfg.data.valid_fraction, self.cfg.seed)
            raw["train"] = (x[keep], [y[i] for i in keep], path)
            raw["valid"] = (x[held], [y[i] for i in held], path)
        if artifacts is None:
            x, y, path = raw["train"]
            if len(x) == 0:
                raise DataError("no training images", path=path)
            self.labels = LabelVocab.build(y)
            self.shape = tuple(int(v) for v in x.shape[1:])
            pixels = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1) / 255.0  # (C, N * H * W)
            self.mean, self.std = pixels.mean(axis=1), np.maximum(pixels.std(axis=1), 1e-6)
        else:
            self.load_artifacts(artifacts)
        for split, (x, y, path) in raw.items():
            self.splits[split] = self._make_split(x, y, path)
        self.counts.update({f"{k}_examples": len(v.labels) for k, v in self.splits.items()})
        self.counts.update(num_classes=len(self.labels), image_shape=list(self.shape))

    def _make_split(self, x: np.ndarray, labels: list[str], path: str | None) -> ImageSplit:
        if tuple(x.shape[1:]) != self.shape:
            raise DataError(f"images are {'x'.join(map(str, x.shape[1:]))} (channels x height x width) but the "
                            f"model takes {'x'.join(map(str, self.shape))}", path=path)
        try:
            ids = np.fromiter((self.labels.index(lab) for lab in labels), dtype=np.int64, count=len(labels))
        except LabelError as e:
            raise LabelError(e.message, path=path) from None
        return ImageSplit(x, ids, path)

    # ------------------------------------------------------------------ artifacts
    def save_artifacts(self, run_dir: str | Path) -> None:
        atomic_write_text(Path(run_dir) / ARTIFACT, json.dumps({
            "labels": self.labels.to_dict(), "shape": list(self.shape), "mean": self.mean.tolist(),
            "std": self.std.tolist(), "counts": self.counts}))

    def load_artifacts(self, run_dir: str | Path) -> None:
        path = Path(run_dir) / ARTIFACT
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
            self.labels = LabelVocab.from_dict(blob["labels"], path)
            self.shape = tuple(int(v) for v in blob["shape"])
            self.mean, self.std = np.asarray(blob["mean"], float), np.asarray(blob["std"], float)
            if len(self.shape) != 3 or self.mean.shape != (self.shape[0],) or self.std.shape != (self.shape[0],):
                raise ValueError("shape and normalisation disagree")
        except FileNotFoundError:
            raise CheckpointError("labels file missing", path=path) from None
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"labels file is corrupt ({e.__class__.__name__})", path=path) from None
        self.counts = blob.get("counts", {})

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        c, h, w = self.shape
        return self.model_cls(self.cfg.model_options, in_channels=c, image_size=(h, w), num_classes=len(self.labels))

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def has_split(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split].labels) > 0

    def epoch_plan(self, epoch: int) -> list[np.ndarray]:
        return shuffled_batches(len(self.splits["train"].labels), self.cfg.train.batch_size,
                                self.cfg.seed * 1_000_003 + epoch)

    def start_epoch(self, epoch: int) -> None:
        pass

    def to_input(self, images: np.ndarray, augment: bool = False) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float (B, C, H, W): scaled to [0, 1], shifted (augment), normalised."""
        x = torch.from_numpy(images).float() / 255.0
        if augment and self.opt.augment_shift:
            x = self.shift(x, self.opt.augment_shift)
        if self.opt.normalize == "standard":
            mean = torch.as_tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.as_tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x.to(self.device)

    @staticmethod
    def shift(x: torch.Tensor, s: int) -> torch.Tensor:
        """Translate each image by its own random (dy, dx) in [-s, s]; pixels moved in are background (0)."""
        B, C, H, W = x.shape
        padded = F.pad(x, (s, s, s, s))  # (B, C, H + 2s, W + 2s)
        dy, dx = torch.randint(0, 2 * s + 1, (2, B))
        rows = (dy[:, None] + torch.arange(H))[:, :, None]  # (B, H, 1)
        cols = (dx[:, None] + torch.arange(W))[:, None, :]  # (B, 1, W)
        out = padded.permute(0, 2, 3, 1)[torch.arange(B)[:, None, None], rows, cols]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()

    def make_batch(self, index: np.ndarray, split: str = "train") -> ImageBatch:
        sp = self.splits[split]
        return ImageBatch(self.to_input(sp.images[index], augment=split == "train"),
                          torch.from_numpy(sp.labels[index]).to(self.device))

    # ------------------------------------------------------------------ loss and evaluation: LabelClassification

    def add_eval_file(self, path: str, split: str = "test") -> None:
        """Read an IDX images file or a folder for evaluation with the run's labels."""
        x, y = self.read_path(path)
        self.splits[split] = self._make_split(x, y, path)

    def predictor(self, model: nn.Module) -> ImagePredictor:
        return ImagePredictor(self, model)

    def example_command(self, run_dir: str | Path) -> str:
        return f"seqlab predict {run_dir} IMAGE.png"


class ImagePredictor:
    """What `seqlab.load(run_dir)` returns for an image run."""

    task_name = "image"

    def __init__(self, task: ImageTask, model: nn.Module):
        self.task, self.model = task, model.eval()
        self.labels = list(task.labels.itos)

    def as_array(self, image: str | os.PathLike | np.ndarray) -> np.ndarray:
        """An image file (any size, resized; colour to grey for a one-channel model) or a uint8 array
        of the model's shape (C, H, W) -> (C, H, W) uint8."""
        c, h, w = self.task.shape
        if isinstance(image, np.ndarray):
            if image.shape != (c, h, w) or image.dtype != np.uint8:
                raise DataError(f"expected a uint8 array of shape {(c, h, w)}, got {image.dtype} {image.shape}")
            return image
        rgb = load_image(image, (h, w)).astype(np.float64)  # (H, W, 3)
        if c == 1:  # ITU-R 601 luma, as Pillow's "L"
            return np.rint(rgb @ np.array([0.299, 0.587, 0.114]))[None].astype(np.uint8)
        if c == 3:
            return rgb.transpose(2, 0, 1).astype(np.uint8)
        raise DataError(f"the model takes {c}-channel images; give arrays of shape {(c, h, w)}")

    @torch.no_grad()
    def predict(self, images: list, top_k: int = 1) -> list[dict]:
        """For each image (a file path or a (C, H, W) uint8 array; or one (N, C, H, W) array): `label`,
        `probability` and `top_k` [(label, probability), ...] best first."""
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        if not len(images):
            return []
        x = np.stack([self.as_array(im) for im in images])  # (N, C, H, W)
        out: list[dict] = []
        for index in sequential_batches(len(x), self.task.cfg.train.eval_batch_size):
            probs = torch.softmax(self.model(self.task.to_input(x[index])).float(), dim=-1).cpu()
            out.extend(top_k_labels(probs, self.labels, top_k))
        return out

    def format_text(self, result: dict) -> str:
        return format_label(result)
