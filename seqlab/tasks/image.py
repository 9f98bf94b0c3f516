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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data import LabelVocab
from seqlab.data.batching import sequential_batches
from seqlab.data.images import channel_stats, load_digits_arrays, load_image, read_image_folder, read_mnist
from seqlab.errors import ConfigError, DataError, LabelError
from seqlab.options import NonNegative, Positive, Range
from seqlab.tasks.base import ExportSpec, Inputs, Option, hold_out
from seqlab.tasks.common import TOP_K, LabelPredictor, LabelTask, top_k_labels

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
class Images:
    """Images as read: (N, C, H, W) uint8 and their labels as strings."""

    images: np.ndarray
    labels: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> Images:
        return Images(self.images[index], [self.labels[i] for i in index])


@dataclass
class ImageSplit:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64 class ids
    path: str | None

    def __len__(self) -> int:
        return len(self.labels)


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


def random_shift(x: torch.Tensor, s: int) -> torch.Tensor:
    """Translate each image of x: (B, C, H, W) by its own random (dy, dx) in [-s, s] (drawn from torch's RNG,
    which checkpoints keep); pixels moved in are background (0)."""
    B, C, H, W = x.shape
    padded = F.pad(x, (s, s, s, s))  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * s + 1, (2, B))
    rows = (dy[:, None] + torch.arange(H))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(W))[:, None, :]  # (B, 1, W)
    out = padded.permute(0, 2, 3, 1)[torch.arange(B)[:, None, None], rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def standardize(x: torch.Tensor, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """x: (B, C, H, W) in [0, 1] -> (x - mean) / std per channel."""
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


class ImageTask(LabelTask):
    """See the module docstring. Built by `seqlab.api` from a resolved Config."""

    name = "image"
    intended_use = "Classifying small images like its training images (same size, channels and kind of content)."
    Config = ImageConfig
    default_model = "convnet"
    default_dataset = "digits"
    formats = ("folder", "idx")
    artifact = "labels.json"

    def __init__(self, cfg: Any, device: torch.device, log=print):
        super().__init__(cfg, device, log)
        self.labels: LabelVocab | None = None
        self.shape: tuple[int, int, int] | None = None  # (C, H, W) of every image the model takes
        self.mean: np.ndarray | None = None  # (C,) per-channel mean and std of the training pixels in [0, 1]
        self.std: np.ndarray | None = None

    # ------------------------------------------------------------------ files
    def read(self, path: str | os.PathLike) -> Images:
        """Images (N, C, H, W) uint8 and their labels, from an IDX images file or a folder."""
        if self.format_of(path) == "folder":
            folder = read_image_folder(path, self.opt.size)
            x, y = folder.arrays()
            return Images(x, [folder.classes[i] for i in y])
        x, y = read_mnist(path, labels_path(path))
        return Images(x, [str(v) for v in y])

    def read_all(self) -> dict[str, tuple[Images, str]]:
        d = self.cfg.data
        if d.train or d.valid or d.test:
            return super().read_all()
        name = self.cfg.dataset or self.default_dataset
        if name not in DATASETS:
            raise ConfigError(f"unknown image dataset {name!r} (built in: {', '.join(DATASETS)}); for files set "
                              "data.train=PATH with data.format=idx|folder")
        x, y = load_digits_arrays()
        digits = Images(x, [str(v) for v in y])
        train, test = hold_out(len(x), self.opt.test_fraction, TEST_SEED)
        return {"train": (digits[train], "digits"), "test": (digits[test], "digits")}

    # ------------------------------------------------------------------ preparation
    def build(self, train: Images) -> None:
        self.labels = LabelVocab.build(train.labels)
        self.shape = tuple(int(v) for v in train.images.shape[1:])
        self.mean, self.std = channel_stats(train.images)

    def make_split(self, rows: Images, path: str, split: str) -> ImageSplit:
        x = rows.images
        if tuple(x.shape[1:]) != self.shape:
            raise DataError(f"images are {'x'.join(map(str, x.shape[1:]))} (channels x height x width) but the "
                            f"model takes {'x'.join(map(str, self.shape))}", path=path)
        try:
            ids = np.fromiter((self.labels.index(lab) for lab in rows.labels), dtype=np.int64, count=len(rows))
        except LabelError as e:
            raise LabelError(e.message, path=path) from None
        return ImageSplit(x, ids, path)

    def count(self) -> None:
        super().count()
        self.counts.update(num_classes=len(self.labels), image_shape=list(self.shape))

    # ------------------------------------------------------------------ artifacts
    def artifacts(self) -> dict:
        return {"labels": self.labels.to_dict(), "shape": list(self.shape), "mean": self.mean.tolist(),
                "std": self.std.tolist()}

    def restore(self, blob: dict, path: Path) -> None:
        self.labels = LabelVocab.from_dict(blob["labels"], path)
        self.shape = tuple(int(v) for v in blob["shape"])
        self.mean, self.std = np.asarray(blob["mean"], float), np.asarray(blob["std"], float)
        if len(self.shape) != 3 or self.mean.shape != (self.shape[0],) or self.std.shape != (self.shape[0],):
            raise ValueError("shape and normalisation disagree")

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        c, h, w = self.shape
        return self.model_cls(self.cfg.model_options, in_channels=c, image_size=(h, w), num_classes=len(self.labels))

    # ------------------------------------------------------------------ batches (the trainer's protocol)
    def to_input(self, images: np.ndarray, augment: bool = False) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float (B, C, H, W): scaled to [0, 1], shifted (augment), normalised."""
        x = torch.from_numpy(images).float() / 255.0
        if augment and self.opt.augment_shift:
            x = random_shift(x, self.opt.augment_shift)
        if self.opt.normalize == "standard":
            x = standardize(x, self.mean, self.std)
        return x.to(self.device)

    def make_batch(self, index: np.ndarray, split: str = "train") -> ImageBatch:
        sp = self.splits[split]
        return ImageBatch(self.to_input(sp.images[index], augment=split == "train"),
                          torch.from_numpy(sp.labels[index]).to(self.device))

    # loss and evaluation: LabelTask


class ImagePredictor(LabelPredictor):
    """What `seqlab.load(run_dir)` returns for an image run."""

    inputs = Inputs("image", "image", "an image file (any size and mode; resized), its bytes, or a (C, H, W) "
                                      "uint8 array of the model's shape")
    options: ClassVar[dict[str, Option]] = {"top_k": TOP_K}

    def load_input(self, image: str | os.PathLike | bytes | np.ndarray) -> np.ndarray:
        """An image file or its bytes (any size, resized; colour to grey for a one-channel model) or a uint8
        array of the model's shape (C, H, W) -> (C, H, W) uint8."""
        c, h, w = self.task.shape
        if isinstance(image, np.ndarray):
            if image.shape != (c, h, w) or image.dtype != np.uint8:
                raise DataError(f"expected a uint8 array of shape {(c, h, w)}, got {image.dtype} {image.shape}")
            return image
        name = "uploaded image" if isinstance(image, bytes) else None
        rgb = load_image(image, (h, w), name=name, max_pixels=self.max_pixels, draft=True).astype(np.float64)
        if c == 1:  # ITU-R 601 luma, as Pillow's "L"
            return np.rint(rgb @ np.array([0.299, 0.587, 0.114]))[None].astype(np.uint8)
        if c == 3:
            return rgb.transpose(2, 0, 1).astype(np.uint8)
        raise DataError(f"the model takes {c}-channel images; give arrays of shape {(c, h, w)}")

    def run(self, images: list, top_k: int) -> list[dict]:
        """For each image (a file path, its bytes, or a (C, H, W) uint8 array): `label`, `probability` and
        `top_k` [(label, probability), ...] best first."""
        x = np.stack([self.load_input(im) for im in images])  # (N, C, H, W)
        out: list[dict] = []
        for index in sequential_batches(len(x), self.task.cfg.train.eval_batch_size):
            probs = torch.softmax(self.model(self.task.to_input(x[index])).float(), dim=-1).cpu()
            out.extend(top_k_labels(probs, self.labels(), top_k))
        return out

    def split_items(self, split: str) -> list[np.ndarray]:
        return list(self.task.splits[split].images)

    def synthetic_inputs(self, n: int) -> list[np.ndarray]:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, self.task.shape, dtype=np.uint8) for _ in range(n)]

    def export_spec(self) -> ExportSpec:
        return ExportSpec(("images",), {"images": {0: "batch"}, "logits": {0: "batch"}},
                          lambda images: (self.task.to_input(np.stack(images)),), size=lambda image: 0)


ImageTask.Predictor = ImagePredictor
