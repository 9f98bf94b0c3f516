"""Caption readers (JSONL, Flickr8k token file + split lists) and image sources (folder, tar, cache)."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from seqlab.data.captions import ImageSource, load_images, read_captions_jsonl, read_flickr8k_tokens
from seqlab.data.readers import ReadStats
from seqlab.errors import DataError


def jpeg(color, size=20) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), color, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    for name, color in (("a.jpg", (200, 0, 0)), ("b.jpg", (0, 200, 0))):
        (d / name).write_bytes(jpeg(color))
    return d


def test_jsonl_reads_rows_and_splits(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"image": "a.jpg", "captions": ["A cat .", "a dog"], "split": "dev"}) + "\n\n"
                 + json.dumps({"image": "b.jpg", "captions": ["x"]}) + "\n")
    rows = read_captions_jsonl(p)
    assert [(r.image, r.captions, r.split) for r in rows] == [("a.jpg", ["A cat .", "a dog"], "val"),
                                                               ("b.jpg", ["x"], None)]


@pytest.mark.parametrize("line, why", [
    ({"image": "a.jpg", "captions": ["fine", "  "]}, "empty caption"),
    ({"image": "a.jpg", "captions": []}, "non-empty list"),
    ({"captions": ["x"]}, "missing"),
    ({"image": "a.jpg", "captions": ["x"], "split": "holdout"}, "unknown split"),
])
def test_jsonl_bad_rows_name_file_and_line_or_are_counted(tmp_path, line, why):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"image": "ok.jpg", "captions": ["x"]}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(DataError, match=why) as e:
        read_captions_jsonl(p)
    assert f"{p}:2:" in str(e.value)
    stats = ReadStats()
    assert [r.image for r in read_captions_jsonl(p, skip_bad_rows=True, stats=stats)] == ["ok.jpg"]
    assert stats.skipped == 1


def test_flickr8k_token_file_with_split_lists(tmp_path):
    (tmp_path / "Flickr8k.token.txt").write_text(
        "a.jpg#0\tA dog .\na.jpg#1\tTwo dogs\nb.jpg#0\tA cat\nc.jpg#0\tA bird\norphan.jpg.1#0\tnobody\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("b.jpg\na.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("c.jpg\n")
    (tmp_path / "Flickr_8k.testImages.txt").write_text("")
    rows = read_flickr8k_tokens(tmp_path / "Flickr8k.token.txt")
    assert [(r.image, r.captions, r.split) for r in rows] == [
        ("b.jpg", ["A cat"], "train"), ("a.jpg", ["A dog .", "Two dogs"], "train"), ("c.jpg", ["A bird"], "val")]
    # a split list naming an image without captions is an error naming the list
    (tmp_path / "Flickr_8k.testImages.txt").write_text("zzz.jpg\n")
    with pytest.raises(DataError, match="zzz.jpg has no captions") as e:
        read_flickr8k_tokens(tmp_path / "Flickr8k.token.txt")
    assert "Flickr_8k.testImages.txt:1" in str(e.value)
    (tmp_path / "Flickr_8k.testImages.txt").write_text("")
    (tmp_path / "Flickr8k.token.txt").write_text("a.jpg#0\t  \n")
    with pytest.raises(DataError, match="empty caption"):
        read_flickr8k_tokens(tmp_path / "Flickr8k.token.txt")


def test_folder_and_tar_sources_decode_the_same(tmp_path, folder):
    tar_path = tmp_path / "img.tar"
    with tarfile.open(tar_path, "w") as tar:
        for f in sorted(folder.iterdir()):
            tar.add(f, arcname=f"images/{f.name}")
    x1, ok1 = ImageSource(folder).load(["b.jpg", "a.jpg"], 8)
    x2, ok2 = ImageSource(tar_path).load(["b.jpg", "a.jpg"], 8)
    assert x1.shape == (2, 3, 8, 8) and x1.dtype == np.uint8 and ok1.all() and ok2.all()
    assert np.array_equal(x1, x2)
    assert x1[0, 1].mean() > 150 and x1[0, 0].mean() < 50  # b is green


def test_missing_image_and_corrupt_jpeg(tmp_path, folder):
    src = ImageSource(folder)
    assert "a.jpg" in src and "nope.jpg" not in src
    with pytest.raises(DataError, match="no image nope.jpg"):
        src.load(["nope.jpg"], 8)
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    src = ImageSource(folder)
    with pytest.raises(DataError, match="not a readable image") as e:
        src.load(["a.jpg", "bad.jpg"], 8)
    assert "bad.jpg" in str(e.value)
    stats = ReadStats()
    x, ok = src.load(["a.jpg", "bad.jpg"], 8, skip_bad=True, stats=stats)
    assert ok.tolist() == [True, False] and stats.skipped == 1
    with pytest.raises(DataError, match="no such folder"):
        ImageSource(tmp_path / "absent")


def test_cache_maps_the_array_back_without_decoding(tmp_path, folder, monkeypatch):
    src = ImageSource(folder)
    first, _ = load_images(src, ["a.jpg", "b.jpg"], 8, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(ImageSource, "load", no_decoding)
    second, ok = load_images(src, ["a.jpg", "b.jpg"], 8, tmp_path / "cache")
    assert isinstance(second, np.memmap) and np.array_equal(first, second) and ok.all()


def test_each_list_of_pictures_has_its_own_cache_file_also_from_a_tar(tmp_path, folder):
    """The bug behind every Flickr8k test figure before this fix: the cache file of a `.tar` source was named
    by `Path.with_suffix`, which cut the key at the `.tar`, so splits of equal size (val and test, 1,000
    pictures each) shared one file and the test split was scored on the val pictures."""
    tar_path = tmp_path / "img.tar"
    with tarfile.open(tar_path, "w") as tar:
        for f in sorted(folder.iterdir()):
            tar.add(f, arcname=f.name)
    src, cache = ImageSource(tar_path), tmp_path / "cache"
    direct = {n: src.load([n], 8)[0][0] for n in ("a.jpg", "b.jpg")}
    assert not np.array_equal(direct["a.jpg"], direct["b.jpg"])
    for _ in range(2):  # decoded, then mapped from the cache
        for n in ("a.jpg", "b.jpg"):
            x, ok = load_images(src, [n], 8, cache)
            assert np.array_equal(x[0], direct[n]) and ok.all()
    assert len(list(cache.glob("img.tar-8px-*.npy"))) == 4  # two lists, each its array and its mask
