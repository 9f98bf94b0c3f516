"""Image readers: sklearn digits, IDX files (built here with numpy), image files and folders (built here with
Pillow); every bad input raises DataError naming the file."""

import gzip
import io
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seqlab.data.images import (
    ImageFolder,
    load_digits_arrays,
    load_image,
    read_idx,
    read_image_folder,
    read_mnist,
)
from seqlab.errors import ConfigError, DataError

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of `array`, written independently of the reader: header, then big-endian data."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ---- digits ----

def test_digits_arrays():
    from sklearn.datasets import load_digits

    x, y = load_digits_arrays()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.uint8 and y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0 and x.max() == 255 and set(y.tolist()) == set(range(10))
    reference = load_digits()
    np.testing.assert_array_equal(x[:, 0], np.rint(reference.images * 255 / 16))
    np.testing.assert_array_equal(y, reference.target)


def test_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(DataError, match="pip install scikit-learn"):
        load_digits_arrays()


# ---- IDX ----

@pytest.mark.parametrize("dtype", sorted(IDX_CODES, key=str))
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    array = (np.arange(2 * 3 * 4) * 11 - 7).reshape(2, 3, 4).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a.idx", array, gz))  # gzip is recognised by content, not name
    np.testing.assert_array_equal(got, array)
    assert got.dtype == dtype and got.dtype.isnative and got.flags.writeable


def test_idx_one_dimension(tmp_path):
    got = read_idx(write_idx(tmp_path / "labels.idx1-ubyte.gz", np.array([3, 1, 4], np.uint8), gz=True))
    assert got.tolist() == [3, 1, 4]


GOOD_IDX = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 2, 2))
BAD_IDX = {
    "empty": (b"", "not even a header"),
    "three bytes": (b"\x00\x00\x08", "not even a header"),
    "wrong magic": (b"\x01\x02" + GOOD_IDX[2:], "does not start with two zero bytes"),
    "png is not idx": (png_bytes(rgb(2, 2)), "not an IDX file"),
    "unknown type": (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown data type code 0x07"),
    "zero dimensions": (b"\x00\x00\x08\x00", "zero dimensions"),
    "truncated header": (GOOD_IDX[:9], "header needs 16 bytes"),
    "truncated data": (GOOD_IDX[:-1], "needs 12 bytes of data, found 11"),
    "trailing bytes": (GOOD_IDX + b"\x00", "1 bytes after the data"),
    "corrupt gzip": (gzip.compress(GOOD_IDX)[:-12], "gzip"),
}


@pytest.mark.parametrize("name", sorted(BAD_IDX))
def test_bad_idx(tmp_path, name):
    data, message = BAD_IDX[name]
    path = tmp_path / "bad.idx"
    path.write_bytes(data)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert e.value.path == str(path) and message in e.value.message


def test_idx_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file") as e:
        read_idx(tmp_path / "missing.idx")
    assert e.value.path == str(tmp_path / "missing.idx")
    with pytest.raises(DataError, match="directory"):
        read_idx(tmp_path)


def test_mnist_pair(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([7, 2, 1, 0, 4], np.uint8)
    x, y = read_mnist(write_idx(tmp_path / "i.gz", images, gz=True), write_idx(tmp_path / "l", labels))
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images)
    assert y.tolist() == [7, 2, 1, 0, 4]


def test_mnist_bad_pairs(tmp_path):
    images = write_idx(tmp_path / "images", np.zeros((3, 4, 4), np.uint8))
    labels = write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    with pytest.raises(DataError) as e:
        read_mnist(images, labels)
    assert str(images) in str(e.value) and str(labels) in str(e.value) and "3 images" in str(e.value)
    with pytest.raises(DataError, match="expected uint8 images") as e:
        read_mnist(labels, labels)  # swapped arguments
    assert e.value.path == str(labels)
    with pytest.raises(DataError, match="expected uint8 labels") as e:
        read_mnist(images, images)
    assert e.value.path == str(images)


# ---- single images ----

def test_load_image_png_is_exact(tmp_path):
    array = rgb(5, 7)
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(array))
    got = load_image(path)
    assert got.dtype == np.uint8 and got.flags.writeable
    np.testing.assert_array_equal(got, array)
    np.testing.assert_array_equal(load_image(png_bytes(array)), array)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_load_image_converts_to_rgb(mode):
    im = Image.fromarray(rgb(4, 6)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    got = load_image(buf.getvalue())
    assert got.shape == (4, 6, 3)
    np.testing.assert_array_equal(got, np.asarray(im.convert("RGB")))


def test_load_image_resize():
    data = png_bytes(rgb(10, 20))
    assert load_image(data, 8).shape == (8, 8, 3)
    assert load_image(data, (6, 12)).shape == (6, 12, 3)  # (height, width)
    flat = png_bytes(np.full((10, 20, 3), 77, np.uint8))
    assert (load_image(flat, (5, 4)) == 77).all()


def test_load_image_follows_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "portrait.jpg"
    Image.fromarray(rgb(4, 8)).save(path, exif=exif)
    assert load_image(path).shape == (8, 4, 3)


@pytest.mark.parametrize("size", [0, -3, (4,), (4, 0), "8", 2.5, True])
def test_bad_size_is_a_config_error(size):
    with pytest.raises(ConfigError, match="image size"):
        load_image(png_bytes(rgb(2, 2)), size)


def test_load_image_bad_input(tmp_path):
    with pytest.raises(DataError, match="no such image file") as e:
        load_image(tmp_path / "missing.png")
    assert e.value.path == str(tmp_path / "missing.png")
    with pytest.raises(DataError, match="not a readable image") as e:
        load_image(b"this is not an image", name="archive.tar:img/1.jpg")
    assert str(e.value).startswith("archive.tar:img/1.jpg: ")


# ---- folders ----

def make_folder(root: Path) -> dict[str, np.ndarray]:
    """cat/ (2 PNGs), dog/ (a PNG in a nested folder and a PNG), empty/ (nothing), plus files to ignore."""
    images = {"cat/b.png": rgb(4, 6, 1), "cat/a.png": rgb(4, 6, 2), "dog/x.png": rgb(4, 6, 3),
              "dog/inner/y.PNG": rgb(4, 6, 4)}
    for name, array in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png_bytes(array))
    (root / "empty").mkdir()
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "._a.png").write_bytes(b"macOS metadata, not an image")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "z.png").write_bytes(png_bytes(rgb(4, 6)))
    (root / "loose.png").write_bytes(png_bytes(rgb(4, 6)))
    return images


def test_image_folder(tmp_path):
    images = make_folder(tmp_path)
    folder = read_image_folder(tmp_path)
    assert isinstance(folder, ImageFolder) and folder.classes == ["cat", "dog"] and len(folder) == 4
    assert [(p.relative_to(tmp_path).as_posix(), label) for p, label in folder.samples] == \
        [("cat/a.png", 0), ("cat/b.png", 0), ("dog/inner/y.PNG", 1), ("dog/x.png", 1)]
    x, y = folder.arrays()
    assert x.shape == (4, 3, 4, 6) and x.dtype == np.uint8 and y.tolist() == [0, 0, 1, 1]
    for i, name in enumerate(["cat/a.png", "cat/b.png", "dog/inner/y.PNG", "dog/x.png"]):
        np.testing.assert_array_equal(x[i], images[name].transpose(2, 0, 1))
    image, label = folder[2]
    assert label == 1 and image.shape == (3, 4, 6)
    assert [label for _, label in folder] == [0, 0, 1, 1]


def test_image_folder_resize_and_mixed_sizes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "big.png").write_bytes(png_bytes(rgb(9, 9)))
    (tmp_path / "a" / "small.jpg").write_bytes(png_bytes(rgb(5, 3), "JPEG"))
    with pytest.raises(DataError, match="pass a size") as e:
        read_image_folder(tmp_path).arrays()
    assert e.value.path == str(tmp_path / "a" / "small.jpg")
    x, y = read_image_folder(tmp_path, size=(4, 2)).arrays()
    assert x.shape == (2, 3, 4, 2) and y.tolist() == [0, 0]


@pytest.mark.parametrize("corrupt", ["truncated jpeg", "garbage png", "empty file"])
def test_image_folder_corrupt_file_is_named_when_loaded(tmp_path, corrupt):
    make_folder(tmp_path)
    jpeg = png_bytes(rgb(32, 32), "JPEG")
    data = {"truncated jpeg": jpeg[: len(jpeg) // 2], "garbage png": png_bytes(rgb(4, 6))[:40] + b"\x00" * 50,
            "empty file": b""}[corrupt]
    bad = tmp_path / "dog" / "broken.png"
    bad.write_bytes(data)
    folder = read_image_folder(tmp_path)  # listing decodes nothing
    assert len(folder) == 5
    with pytest.raises(DataError, match="not a readable image") as e:
        folder.arrays()
    assert e.value.path == str(bad)


def test_image_folder_without_images(tmp_path):
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images found") as e:
        read_image_folder(tmp_path)
    assert e.value.path == str(tmp_path)
    with pytest.raises(DataError, match="no such directory"):
        read_image_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="not a directory"):
        read_image_folder(tmp_path / "empty_class" / "readme.txt")
