"""Image data as uint8 numpy arrays: scikit-learn's digits, MNIST/Fashion-MNIST IDX files, and folders of
images with one subfolder per class (as torchvision's ImageFolder).

Batches of images are `(N, C, H, W)` uint8; a single decoded picture from `load_image` is `(H, W, 3)`.
Scaling to floats and normalising is the task's business, not the reader's. Nothing here imports torch.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from seqlab.errors import ConfigError, DataError, ImageTooLarge

# the largest image `seqlab predict`, `caption` and `serve` decode (4096², 48 MB as RGB): a header announcing
# more is refused before any pixel is decoded (Pillow's own bomb limit, 179 M pixels, is ~0.5 GB of RGB)
MAX_PIXELS = 4096 * 4096

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".pgm", ".ppm", ".tif", ".tiff", ".webp")

# IDX type code -> big-endian numpy dtype (yann.lecun.com/exdb/mnist, "THE IDX FILE FORMAT")
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def channel_stats(images: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """images: (N, C, H, W) uint8 (possibly memory-mapped: read in chunks) -> per-channel mean and standard
    deviation (C,) of the pixels scaled to [0, 1] (the std at least 1e-6)."""
    sums = np.zeros((2, images.shape[1]))
    for i in range(0, len(images), chunk):
        x = np.asarray(images[i: i + chunk], dtype=np.float64) / 255.0
        sums += [x.sum(axis=(0, 2, 3)), (x**2).sum(axis=(0, 2, 3))]
    n = len(images) * images.shape[2] * images.shape[3]
    mean = sums[0] / n
    return mean, np.sqrt(np.maximum(sums[1] / n - mean**2, 1e-12))


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), no download needed.

    Returns `X: (N, 1, 8, 8)` uint8 with the original 0..16 intensities scaled to 0..255, and `y: (N,)` int64.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError("the digits dataset comes with scikit-learn, which is not installed: "
                        "pip install scikit-learn") from e
    digits = load_digits()
    x = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 8, 8) -> (N, 1, 8, 8)
    return x, digits.target.astype(np.int64)


def _read_file_bytes(path: Path) -> bytes:
    """The whole file, gunzipped when it starts with the gzip magic bytes (whatever its name)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError("no such file", path) from e
    except IsADirectoryError as e:
        raise DataError("is a directory, not a file", path) from e
    except OSError as e:
        raise DataError(f"cannot read file: {e.strerror or e}", path) from e
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"corrupt or truncated gzip data: {e}", path) from e
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), raw or gzipped, into an array of its shape/type.

    Layout: two zero bytes, a type code (0x08 uint8 ... 0x0E float64), the number of dimensions, each
    dimension as a big-endian uint32, then the data in C order, big-endian. The header is validated and the
    data size must match the dimensions exactly. The result is a writeable array in native byte order.
    """
    path = Path(path)
    data = _read_file_bytes(path)
    if len(data) < 4:
        raise DataError(f"truncated IDX file: {len(data)} bytes, not even a header", path)
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"not an IDX file: magic number 0x{data[:4].hex()} does not start with two zero "
                        "bytes", path)
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DataError(f"not an IDX file: unknown data type code 0x{code:02x} (known: {known})", path)
    if ndim == 0:
        raise DataError("not an IDX file: zero dimensions", path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"truncated IDX file: its header needs {header} bytes, the file has {len(data)}",
                        path)
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    count = int(np.prod(dims, dtype=np.int64))
    expected, found = count * dtype.itemsize, len(data) - header
    if found < expected:
        raise DataError(f"truncated IDX file: shape {dims} needs {expected} bytes of data, found {found}",
                        path)
    if found > expected:
        raise DataError(f"IDX file has {found - expected} bytes after the data of shape {dims}", path)
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # a native-endian, writeable copy


def read_mnist(images_path: str | os.PathLike,
               labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """MNIST or Fashion-MNIST from two IDX files: `*-images-idx3-ubyte[.gz]`, `*-labels-idx1-ubyte[.gz]`.

    Returns `X: (N, 1, H, W)` uint8 and `y: (N,)` int64.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"expected uint8 images of shape (N, H, W), found {images.dtype} {images.shape}",
                        images_path)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"expected uint8 labels of shape (N,), found {labels.dtype} {labels.shape}",
                        labels_path)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
                        "labels")
    return images[:, None], labels.astype(np.int64)  # (N, H, W) -> (N, 1, H, W)


def _size_hw(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """`size` as (height, width): an int means a square."""
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(hw) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in hw):
        raise ConfigError(f"image size must be a positive int or a (height, width) pair, got {size!r}")
    return hw


# modes `Image.reduce` averages correctly (premultiplying alpha); palettes, bilevel and 16-bit pictures are made RGB
# first (`to_rgb`)
_REDUCIBLE = ("RGB", "RGBA", "L", "LA", "CMYK", "I", "F")
# EXIF orientation (tag 0x0112) -> the transposition that makes the picture upright, as ImageOps.exif_transpose
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> "RGB", as the picture is seen: 16- and 32-bit integer pixels (16-bit PNG greys,
    `I;16`/`I`) scaled to 8 bits (Pillow's own conversion clips them, so they come out white), float pixels
    (`F`) read as [0, 1] when they are, else clipped to [0, 255]; transparency (RGBA, LA, PA, a palette or tRNS
    transparent colour) composited on white; CMYK, YCbCr, palettes... by Pillow's `convert`."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16"):
            a = a / 257.0  # 65535 -> 255
        elif im.mode == "I" and a.size and a.max() > 255:
            a = a / 257.0 if a.min() >= 0 and a.max() <= 65535 else (a - a.min()) * (255.0 / max(np.ptp(a), 1.0))
        elif im.mode == "F" and a.size and a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
        im = Image.fromarray(np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(source: str | os.PathLike | bytes, size: int | tuple[int, int] | None = None, *,
               name: str | None = None, max_pixels: int | None = None, draft: bool = False) -> np.ndarray:
    """Decode one image file (or its bytes) to RGB `(H, W, 3)` uint8, upright per its EXIF orientation, any mode
    made RGB by `to_rgb` (transparency on white, 16-bit scaled to 8).

    `size` (an int for a square, or `(height, width)`) resizes with bilinear filtering (antialiased when
    shrinking); None keeps the original size. `name` labels in-memory bytes in error messages (e.g. the member
    of a tar file they came from). `max_pixels`: an image whose header announces more pixels (for a JPEG in draft
    mode: more than it is decoded at) is refused (`ImageTooLarge`) before decoding. `draft`: a JPEG much larger
    than `size` is decoded at 1/2, 1/4 or 1/8 of its size by the decoder itself (never below `size`), another
    format shrunk by an integer factor (box averages, never below `size`) before its conversion to RGB, then
    resized: far less memory and time.
    """
    hw = _size_hw(size)
    where = name if isinstance(source, bytes) else os.fspath(source)
    if not isinstance(source, bytes) and not os.path.isfile(source):
        raise DataError("no such image file", where)
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # our own limit, checked below, is the stricter: no Pillow warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with im:
            width, height = im.size  # from the header: nothing decoded yet
            if draft and hw is not None:  # the EXIF rotation may swap the sides: keep both at least `size`
                im.draft("RGB", (max(hw), max(hw)))  # a JPEG: decoded at 1/2..1/8 of its size (still nothing decoded)
            if max_pixels is not None and im.size[0] * im.size[1] > max_pixels:  # what decoding would hold
                drafted = f" (decoded at {im.size[0]}x{im.size[1]})" if im.size != (width, height) else ""
                raise ImageTooLarge(f"the image is {width}x{height} = {width * height:,} pixels{drafted}; the limit "
                                    f"is {max_pixels:,}", where)
            factor = min(im.size) // max(hw) if draft and hw is not None else 1
            if factor >= 2:  # not a JPEG, or one still large: 1/factor by box averages, both sides still >= size
                im.load()  # (a TIFF is turned upright while loading, and its orientation tag dropped)
                turn = _ORIENTATION.get(im.getexif().get(0x0112))  # the reduced copy may lose the tag
                im = (im if im.mode in _REDUCIBLE else to_rgb(im)).reduce(factor)
                im = im.transpose(turn) if turn is not None else im
            else:
                im = ImageOps.exif_transpose(im)
            im = to_rgb(im)
            if hw is not None and im.size != (hw[1], hw[0]):
                im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)  # Pillow sizes are (W, H)
            return np.asarray(im, dtype=np.uint8).copy()
    except UnidentifiedImageError as e:
        empty = source == b"" if isinstance(source, bytes) else _empty_file(source)
        why = "an empty file" if empty else f"not an image file that Pillow decodes (such as {_formats()})"
        raise DataError(f"not a readable image: {why}", where) from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise DataError(f"not a readable image: {e}", where) from e


def _empty_file(path: str | os.PathLike) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _formats() -> str:
    """The usual image file extensions, for error messages."""
    return ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)


@dataclass
class ImageFolder:
    """Images in `root/<class>/...`, listed eagerly, decoded lazily, one at a time.

    `classes[i]` is the name of label i (subfolder names, sorted); `samples` holds (file, label) pairs in
    sorted order. Item i is `(image: (3, H, W) uint8, label)`. `arrays()` decodes everything at once.
    """

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]
    size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[i]
        return load_image(path, self.size).transpose(2, 0, 1), label  # (H, W, 3) -> (3, H, W)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        return (self[i] for i in range(len(self)))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All images as `X: (N, 3, H, W)` uint8 and `y: (N,)` int64. Without a `size`, all images must
        already have the same size."""
        first, _ = self[0]
        x = np.empty((len(self), *first.shape), dtype=np.uint8)
        x[0] = first
        for i in range(1, len(self)):
            image, _ = self[i]
            if image.shape != first.shape:
                raise DataError(f"image is {image.shape[1]}x{image.shape[2]} but {self.samples[0][0]} is "
                                f"{first.shape[1]}x{first.shape[2]}: pass a size to resize them all",
                                self.samples[i][0])
            x[i] = image
        y = np.array([label for _, label in self.samples], dtype=np.int64)
        return x, y


def read_image_folder(root: str | os.PathLike, size: int | tuple[int, int] | None = None) -> ImageFolder:
    """List `root/<class>/**/<image>` files (by extension, hidden files skipped) into an `ImageFolder`.

    Subfolders without images are skipped (not classes); files directly under `root` are ignored. Nothing is
    decoded here: an unreadable image raises DataError naming the file when it is loaded.
    """
    root = Path(root)
    hw = _size_hw(size)
    if not root.is_dir():
        raise DataError("no such directory" if not root.exists() else "not a directory", root)
    classes: list[str] = []
    samples: list[tuple[Path, int]] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(class_dir).parts))
        if files:
            samples.extend((f, len(classes)) for f in files)
            classes.append(class_dir.name)
    if not samples:
        raise DataError("no images found (expected one subfolder per class holding "
                        f"{', '.join(IMAGE_EXTENSIONS)} files)", root)
    return ImageFolder(root, classes, samples, hw)


def image_files(paths: Sequence[str | os.PathLike]) -> tuple[list[str], dict[str, list[str]]]:
    """The image files `paths` name, for `seqlab caption` / `predict` on a user's pictures.

    A file is taken as given, whatever its name (decoding it later says when it is not an image); a path that
    does not exist is passed on too (loading it raises "no such image file" naming it). A folder gives every
    file under it, recursively, in sorted order, whose extension is one of `IMAGE_EXTENSIONS` (any case);
    hidden files and folders (a name starting with ".") are left out; other files are skipped and returned,
    per folder, so that the caller can say so. A folder holding no image is a DataError.

    Returns (the files as strings, in order: the arguments' order, each folder's files sorted; {folder: the
    skipped files}).
    """
    files: list[str] = []
    skipped: dict[str, list[str]] = {}
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            files.append(os.fspath(given))
            continue
        found, other = [], []
        for p in sorted(root.rglob("*")):
            if any(part.startswith(".") for part in p.relative_to(root).parts) or not p.is_file():
                continue
            (found if p.suffix.lower() in IMAGE_EXTENSIONS else other).append(str(p))
        if not found:
            raise DataError(f"no images in this folder or under it (looked for {', '.join(IMAGE_EXTENSIONS)} "
                            "files)", root)
        files.extend(found)
        if other:
            skipped[os.fspath(given)] = other
    return files, skipped
