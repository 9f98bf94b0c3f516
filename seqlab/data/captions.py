"""Captioned images: the captions (JSONL or the original Flickr8k token file with its split lists) and the
pictures (a folder or a .tar of JPEGs, decoded lazily with Pillow, resized, optionally cached on disk).

Captions, one of:
- JSONL, one image per line: `{"image": "x.jpg", "captions": ["...", ...], "split": "train|val|test"}`
  (`split` optional; `valid` and `dev` are read as `val`).
- The Flickr8k token file, `x.jpg#i<TAB>caption`, with the official split lists beside it
  (`Flickr_8k.trainImages.txt`, `Flickr_8k.devImages.txt`, `Flickr_8k.testImages.txt`). Captions of images
  in no split list are left out (the original file has one such orphan).

Images are addressed by file name: `x.jpg` is `<folder>/x.jpg` (or any file of that name below the folder),
or the tar member whose last path part is `x.jpg`. `load_images` decodes the named images to one
`(N, 3, S, S)` uint8 array; with a cache directory, the array is saved there (`np.save`) under a key of the
source, its size and modification time, the names and S, and a second call maps it back without decoding.

Bad input is a DataError naming the file (and line): a caption for an image the source does not hold, an
empty caption, a split list naming an image without captions, an unreadable image. With `skip_bad_rows`
the row (or image) is left out and counted in a `ReadStats` instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqlab.data.images import IMAGE_EXTENSIONS, load_image
from seqlab.data.io import read_lines
from seqlab.data.readers import ReadStats, checked
from seqlab.errors import DataError

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "dev": "val", "test": "test"}
FLICKR8K_LISTS = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                  "test": "Flickr_8k.testImages.txt"}


@dataclass
class CaptionedImage:
    """One image and its reference captions."""

    image: str  # file name, e.g. "1000268201_693b08cb0e.jpg"
    captions: list[str]
    split: str | None  # train | val | test, or None when the file does not say


def _lines(path: str | os.PathLike, encoding: str):
    """(line number, text) of a text file, a DataError at the first undecodable or overlong line."""
    for number, line, problem in read_lines(path, encoding=encoding):
        if problem is not None:
            raise DataError(problem, path=path, line=number)
        yield number, line


def _jsonl_row(line: str, path: str | os.PathLike, number: int) -> CaptionedImage:
    """One `{"image", "captions", "split"}` line; DataError when it is not one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg})", path=path, line=number) from None
    if not isinstance(row, dict):
        raise DataError("a line must hold a JSON object", path=path, line=number)
    image, captions, split = row.get("image"), row.get("captions"), row.get("split")
    if not isinstance(image, str) or not image.strip():
        raise DataError('missing "image" (a file name)', path=path, line=number)
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
        raise DataError(f'"captions" of {image} must be a non-empty list of strings', path=path, line=number)
    if any(not c.strip() for c in captions):
        raise DataError(f"empty caption for {image}", path=path, line=number)
    if split is not None and split not in SPLIT_NAMES:
        raise DataError(f"unknown split {split!r} for {image} (train, val or test)", path=path, line=number)
    return CaptionedImage(image, [c.strip() for c in captions], None if split is None else SPLIT_NAMES[split])


def read_captions_jsonl(path: str | os.PathLike, *, encoding: str = "utf-8", skip_bad_rows: bool = False,
                        stats: ReadStats | None = None) -> list[CaptionedImage]:
    """Read `{"image", "captions": [...], "split"}` lines (blank lines ignored; an image named twice is an
    error)."""

    def rows() -> Iterator[CaptionedImage | DataError]:
        seen: set[str] = set()
        for number, line in _lines(path, encoding):
            if not line.strip():
                continue
            try:
                row = _jsonl_row(line, path, number)
                if row.image in seen:
                    raise DataError(f"{row.image} appears twice", path=path, line=number)
            except DataError as e:
                yield e
                continue
            seen.add(row.image)
            yield row

    return list(checked(rows(), path, skip_bad_rows, stats, what="captioned images"))


def read_flickr8k_tokens(path: str | os.PathLike, *, encoding: str = "utf-8", skip_bad_rows: bool = False,
                         stats: ReadStats | None = None) -> list[CaptionedImage]:
    """Read the Flickr8k token file `image.jpg#i<TAB>caption` and the three official split lists beside
    it. Images come in split-list order (train, then val, then test)."""
    path = Path(path)
    lists: dict[str, list[tuple[str, int]]] = {}
    for split, name in FLICKR8K_LISTS.items():
        list_path = path.with_name(name)
        if not list_path.is_file():
            raise DataError(f"the split list {name} is not beside the token file", path=list_path)
        lists[split] = [(line.strip(), n) for n, line in _lines(list_path, encoding) if line.strip()]
    split_of = {image: split for split, names in lists.items() for image, _ in names}

    def rows() -> Iterator[CaptionedImage | DataError]:
        captions: dict[str, list[str]] = {}
        for number, line in _lines(path, encoding):
            if not line.strip():
                continue
            key, tab, caption = line.partition("\t")
            image = key.rsplit("#", 1)[0].strip()
            if not tab or "#" not in key:
                yield DataError("expected image.jpg#i<TAB>caption", path=path, line=number)
            elif not caption.strip():
                yield DataError(f"empty caption for {image}", path=path, line=number)
            elif image in split_of:  # in no split list (the original's orphan `...jpg.1`): left out
                captions.setdefault(image, []).append(caption.strip())
        for split, names in lists.items():
            for image, number in names:
                if image in captions:
                    yield CaptionedImage(image, captions[image], split)
                else:
                    yield DataError(f"{image} has no captions in {path.name}",
                                    path=path.with_name(FLICKR8K_LISTS[split]), line=number)

    return list(checked(rows(), path, skip_bad_rows, stats, what="captioned images"))


class ImageSource:
    """A folder or a .tar of images, indexed by file name (nothing is decoded until `load`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.members: dict[str, str] = {}  # file name -> file path (folder) or member name (tar)
        if self.path.is_dir():
            for p in sorted(self.path.rglob("*")):
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
                    self.members.setdefault(p.name, str(p))
        elif self.path.is_file():
            try:
                with tarfile.open(self.path) as tar:
                    for m in tar.getmembers():
                        if m.isfile():
                            self.members.setdefault(m.name.rsplit("/", 1)[-1], m.name)
            except (tarfile.TarError, OSError) as e:
                raise DataError(f"not a readable tar file of images: {e}", path=self.path) from None
        else:
            raise DataError("no such folder or .tar of images", path=self.path)
        if not self.members:
            raise DataError("holds no images", path=self.path)

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def where(self, name: str) -> str:
        """How an error names the image: its file, or `archive.tar:member`."""
        m = self.members[name]
        return m if self.path.is_dir() else f"{self.path}:{m}"

    def load(self, names: Sequence[str], size: int, *, skip_bad: bool = False,
             stats: ReadStats | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode `names` to `(N, 3, size, size)` uint8 (resized) and a bool mask of the readable ones (an
        unreadable one is a DataError, or with `skip_bad` a zero image, False in the mask, counted)."""
        images = np.zeros((len(names), 3, size, size), dtype=np.uint8)
        ok = np.ones(len(names), dtype=bool)
        tar = tarfile.open(self.path) if self.path.is_file() else None
        try:
            for i, name in enumerate(names):
                if name not in self.members:
                    raise DataError(f"no image {name}", path=self.path)
                try:
                    if tar is None:
                        image = load_image(self.members[name], size)
                    else:
                        f = tar.extractfile(self.members[name])
                        image = load_image(f.read(), size, name=self.where(name))
                except DataError as e:
                    if not skip_bad:
                        raise
                    if stats is not None:
                        stats.record(e)
                    ok[i] = False
                    continue
                images[i] = image.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
        finally:
            if tar is not None:
                tar.close()
        return images, ok

    def cache_key(self, names: Sequence[str], size: int) -> str:
        st = self.path.stat()
        h = hashlib.sha1(f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}".encode())
        h.update("\n".join(names).encode())
        return f"{self.path.name}-{size}px-{h.hexdigest()[:16]}"


def load_images(source: ImageSource, names: Sequence[str], size: int, cache: str | os.PathLike | None = None,
                *, skip_bad: bool = False, stats: ReadStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`source.load(names, size)`, through the on-disk cache `cache/<key>.npy` (+ `.ok.npy`, the mask)
    when a cache directory is given: the second call memory-maps the array instead of decoding."""
    if cache is None:
        return source.load(names, size, skip_bad=skip_bad, stats=stats)
    key = source.cache_key(names, size)  # `images.tar-64px-<hash>`: not a suffix to replace (it has dots)
    array_file, ok_file = Path(cache) / f"{key}.npy", Path(cache) / f"{key}.ok.npy"
    if array_file.is_file() and ok_file.is_file():
        try:
            ok = np.load(ok_file)
            images = np.load(array_file, mmap_mode="r")
            if images.shape == (len(names), 3, size, size) and ok.shape == (len(names),):
                if not ok.all() and not skip_bad:
                    bad = names[int(np.flatnonzero(~ok)[0])]
                    raise DataError("not a readable image", path=source.where(bad))
                if stats is not None:
                    stats.skipped += int((~ok).sum())
                return images, ok
        except (ValueError, OSError):
            pass  # a damaged cache file is rebuilt
    images, ok = source.load(names, size, skip_bad=skip_bad, stats=stats)
    array_file.parent.mkdir(parents=True, exist_ok=True)
    for file, array in ((array_file, images), (ok_file, ok)):
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    return np.load(array_file, mmap_mode="r"), ok
