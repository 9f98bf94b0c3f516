"""A caption run's `captions.txt` and report grid, and `seqlab caption` on a user's own pictures: folders,
odd sizes and modes (greyscale, transparency, 16-bit, CMYK, EXIF rotation, 4000 px, 1x1), and bad files (one
line naming the file, exit 2, nothing printed before)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

import seqlab
from seqlab import api
from seqlab.cli import main
from seqlab.data.images import image_files, load_image
from seqlab.errors import DataError
from seqlab.report.runs import write_report
from seqlab.tasks.caption import CAPTIONS_FILE, captions_table
from tests.test_serve_runs import FAST, train_image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "white": (240, 240, 240)}
REFERENCES = {  # a different number of references per picture, one with a tab inside
    "red": ["a red square on grey .", "a red box", "red\tthing on grey"],
    "green": ["a green square on grey ."],
    "blue": ["a blue square on grey .", "a blue box"],
    "white": ["a white square on grey .", "a pale box", "a white thing"],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny caption run (seconds) with a test split of four pictures."""
    root = tmp_path_factory.mktemp("caption-images")
    os.environ["SEQLAB_CACHE"] = str(root / "cache")
    images = root / "img"
    images.mkdir()
    rows = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        a = np.full((24, 24, 3), 60, np.uint8)
        a[2 + 5 * i: 10 + 5 * i, 4:14] = rgb
        Image.fromarray(a).save(images / f"{name}.png")
        rows.append({"image": f"{name}.png", "captions": REFERENCES[name]})
    captions = root / "captions.jsonl"
    captions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = {"task": "caption", "model": "rnn", "task.images": str(images), "task.size": 16, "task.min_freq": 1,
           "task.beam": 2, "data.train": str(captions), "data.valid": str(captions), "data.test": str(captions),
           "model.channels": [4], "model.hidden": 16, "model.dim": 8, "model.attention_dim": 8,
           "train.batch_size": 4, "threads": 1, **FAST, "train.epochs": 8}
    return seqlab.train(None, cfg, out=root / "caption", quiet=True, log=None)


# ---------------------------------------------------------------------------------------------- captions.txt
def test_captions_txt_holds_what_the_predictor_says_for_each_test_image(run):
    text = (run / CAPTIONS_FILE).read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["image", "generated", "reference_1", "reference_2", "reference_3"]
    assert [r[0] for r in rows[1:]] == [f"{c}.png" for c in COLOURS]
    assert all(len(r) == 5 for r in rows)  # padded to the most references
    assert rows[1][2:] == ["a red square on grey .", "a red box", "red thing on grey"]  # the tab became a space
    assert rows[2][2:] == ["a green square on grey .", "", ""]
    predictor = api.load(run)
    assert predictor.data_split() == "test"  # reads the run's data
    items = predictor.split_items("test")
    assert len(items) == 4
    # the beam the test metric used (the run's task.beam, 2), through the predictor, image by image
    expected = [predictor.predict(item)[0]["caption"] for item in items]
    assert [r[1] for r in rows[1:]] == expected
    assert predictor.task.opt.beam == 2
    # the file is the table of those captions, byte for byte (deterministic, documented layout)
    assert text == captions_table([f"{c}.png" for c in COLOURS], expected, list(REFERENCES.values()))


def test_captions_table_format():
    text = captions_table(["a.jpg", "b.jpg"], ["x y", "z"], [["r1"], ["s1", "s\n2"]])
    assert text == "image\tgenerated\treference_1\treference_2\na.jpg\tx y\tr1\t\nb.jpg\tz\ts1\ts 2\n"
    assert captions_table([], [], []) == "image\tgenerated\n"


def test_report_shows_a_grid_of_test_pictures_and_links_captions_txt(run, tmp_path):
    page = write_report([run], tmp_path / "out", examples=2)
    text = page.read_text(encoding="utf-8")
    gallery = tmp_path / "out" / "caption" / "gallery.png"
    assert "![test pictures](caption/gallery.png)" in text
    assert gallery.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(gallery) as im:
        assert im.size[0] >= 800 and im.size[1] >= 200  # four cells in a row, text under each
    link = f"[{CAPTIONS_FILE}]({os.path.relpath(run / CAPTIONS_FILE, tmp_path / 'out')})"
    assert link in text and (tmp_path / "out" / os.path.relpath(run / CAPTIONS_FILE, tmp_path / "out")).is_file()
    for i in (1, 2):  # the attention of each word, for a couple of pictures
        assert f"![attention {i}](caption/attention-{i}.png)" in text
        assert (tmp_path / "out" / "caption" / f"attention-{i}.png").stat().st_size > 2_000
    assert text.count("   - reference: ") == 2


# ---------------------------------------------------------------------------------------------- odd pictures
def odd_pictures(folder):
    """One picture of each awkward kind, a red square on grey, plus files that are not pictures."""
    folder.mkdir()
    base = np.full((40, 40, 3), 60, np.uint8)
    base[8:24, 8:24] = COLOURS["red"]
    Image.fromarray(base).convert("L").save(folder / "grey.png")
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[8:24, 8:24] = (*COLOURS["red"], 255)  # the rest fully transparent
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    Image.fromarray(rgba, "RGBA").convert("LA").save(folder / "grey-alpha.png")
    Image.fromarray(base).quantize(8).save(folder / "palette.gif", transparency=0)
    grey = np.asarray(Image.fromarray(base).convert("L"), dtype=np.uint16)
    Image.fromarray(grey * 257).save(folder / "deep.png")  # 16-bit greys, the same as grey.png
    Image.fromarray(base).convert("CMYK").save(folder / "print.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(base[:, :20]).save(folder / "rotated.jpg", exif=exif, quality=95)
    # a 24-megapixel photo: over the 4096² limit, but decoded at 1/8 of it in draft mode
    Image.fromarray(np.kron(base, np.ones((100, 150, 1), np.uint8))).save(folder / "photo.jpg", quality=80)
    Image.fromarray(np.kron(base, np.ones((100, 100, 1), np.uint8))).save(folder / "photo.png", compress_level=1)
    Image.new("RGB", (1, 1), COLOURS["red"]).save(folder / "dot.png")
    (folder / "sub").mkdir()
    Image.fromarray(base).save(folder / "sub" / "nested.PNG")
    (folder / "notes.txt").write_text("not a picture")
    (folder / ".hidden.png").write_bytes(b"ignored")
    return folder


def test_odd_modes_are_read_as_they_look():
    import io

    def png(im):
        b = io.BytesIO()
        im.save(b, "PNG")
        return b.getvalue()

    grey = np.arange(0, 256, 16, dtype=np.uint16).repeat(4).reshape(8, 8)
    deep = load_image(png(Image.fromarray(grey * 257)))  # I;16: scaled, not clipped to white
    np.testing.assert_array_equal(deep, load_image(png(Image.fromarray(grey.astype(np.uint8)))))
    clear = np.zeros((4, 4, 4), np.uint8)
    clear[0, 0] = (10, 20, 30, 255)
    got = load_image(png(Image.fromarray(clear, "RGBA")))
    assert tuple(got[0, 0]) == (10, 20, 30) and (got[1:] == 255).all()  # transparent: white, not black
    half = load_image(png(Image.new("RGBA", (2, 2), (0, 0, 0, 128))))
    assert (np.abs(half.astype(int) - 127) <= 1).all()
    la = load_image(png(Image.new("LA", (2, 2), (0, 0))))
    assert (la == 255).all()
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0] * 256)
    b = io.BytesIO()
    palette.save(b, "PNG", transparency=0)
    assert (load_image(b.getvalue()) == 255).all()
    floats = Image.fromarray(np.full((2, 2), 0.5, np.float32))
    b = io.BytesIO()
    floats.save(b, "TIFF")
    assert (load_image(b.getvalue()) == 128).all()
    assert load_image(png(Image.new("RGB", (1, 1), (1, 2, 3))), 16).shape == (16, 16, 3)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG", "GIF"])
def test_big_pictures_shrunk_before_decoding_stay_upright_and_alike(tmp_path, fmt):
    a = np.full((800, 400, 3), 40, np.uint8)
    a[:200] = 250  # a bright band at the top of the stored picture: on the right once turned upright
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"big.{fmt.lower()}"
    im = Image.fromarray(a)
    im = im.quantize(16) if fmt == "GIF" else im
    im.save(path, fmt, **({} if fmt == "GIF" else {"exif": exif}))
    full = load_image(path, 16)  # as training decodes: the whole picture, then resized
    fast = load_image(path, 16, draft=True)  # as `seqlab caption` does: shrunk first
    assert fast.shape == full.shape == (16, 16, 3)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3
    if fmt != "GIF":
        assert fast[:, -2:].mean() > 200 and fast[:, :8].mean() < 60  # turned: the band is on the right


def test_image_files_lists_folders_recursively_and_skips_other_files(tmp_path):
    folder = odd_pictures(tmp_path / "mine")
    files, skipped = image_files([str(folder), str(tmp_path / "x.jpg")])
    names = [os.path.relpath(f, folder) for f in files[:-1]]
    assert names == sorted(names) and "sub/nested.PNG" in names and len(names) == 11
    assert ".hidden.png" not in names and files[-1] == str(tmp_path / "x.jpg")  # a missing file is passed on
    assert skipped == {str(folder): [str(folder / "notes.txt")]}
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no images in this folder"):
        image_files([tmp_path / "empty"])


def test_caption_cli_on_a_folder_of_odd_pictures(run, tmp_path, capsys):
    folder = odd_pictures(tmp_path / "mine")
    assert main(["caption", str(run), str(folder), "--json", "--beam", "1"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(x) for x in out.splitlines()]
    assert [os.path.relpath(r["image"], folder) for r in lines] == [
        "deep.png", "dot.png", "grey-alpha.png", "grey.png", "palette.gif", "photo.jpg", "photo.png", "print.jpg",
        "rotated.jpg", "sub/nested.PNG", "transparent.png"]
    assert err.strip() == f"seqlab: {folder}: skipped 1 file without an image extension (notes.txt)"
    predictor = api.load(run)
    for r in lines:  # the same pipeline as the predictor's (and training's) decoding, file by file
        assert r["caption"] == predictor.predict(r["image"], beam=1)[0]["caption"]
        picture = predictor.load_input(r["image"])
        assert picture.shape == (16, 16, 3) and picture.dtype == np.uint8
    assert (predictor.load_input(str(folder / "deep.png")) == predictor.load_input(str(folder / "grey.png"))).all()
    with Image.open(folder / "photo.jpg") as im, Image.open(folder / "photo.png") as png:
        assert im.size == (6000, 4000) and png.size == (4000, 4000)
    assert np.abs(predictor.load_input(str(folder / "photo.png")).astype(int)
                  - load_image(folder / "photo.png", 16).astype(int)).mean() < 3  # shrunk first, alike
    rotated = load_image(folder / "rotated.jpg")
    assert rotated.shape == (20, 40, 3)  # 40 high x 20 wide, turned upright
    assert (load_image(folder / "transparent.png")[30:, 30:] == 255).all()


@pytest.mark.parametrize("kind", ["corrupt", "empty", "text", "missing", "folder without images", "truncated"])
def test_a_bad_file_is_one_line_naming_it_and_stops_all(run, tmp_path, capsys, kind):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), COLOURS["red"]).save(good)
    bad = tmp_path / "bad.jpg"
    if kind == "corrupt":
        bad.write_bytes(b"\xff\xd8\xff garbage")
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "text":
        bad.write_text("hello, I am not a picture\n")
    elif kind == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[:300])
    elif kind == "folder without images":
        bad = tmp_path / "docs"
        bad.mkdir()
        (bad / "readme.md").write_text("x")
    assert main(["caption", str(run), str(good), str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing captioned: every picture is read before anything is printed
    assert len(err.strip().splitlines()) == 1 and str(bad) in err and "Traceback" not in err
    assert err.startswith("seqlab: error: ")


def test_predict_with_an_image_run_behaves_the_same(tmp_path, capsys):
    pytest.importorskip("sklearn")
    run = train_image(tmp_path)
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(2):
        Image.new("L", (8 + i, 8), 200).save(folder / f"{i}.png")
    (folder / "list.csv").write_text("x")
    assert main(["predict", str(run), str(folder), "--json"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(x)["image"] for x in out.splitlines()] == [str(folder / "0.png"), str(folder / "1.png")]
    assert "skipped 1 file" in err
    (tmp_path / "bad.png").write_bytes(b"")
    assert main(["predict", str(run), str(folder), str(tmp_path / "bad.png")]) == 2
    out, err = capsys.readouterr()
    errors = [x for x in err.splitlines() if x.startswith("seqlab: error: ")]
    assert out == "" and len(errors) == 1 and "bad.png" in errors[0] and "Traceback" not in err


def test_report_of_an_image_run_shows_its_test_digits_in_a_grid(tmp_path):
    pytest.importorskip("sklearn")
    run = train_image(tmp_path)
    text = write_report([run], tmp_path / "out").read_text(encoding="utf-8")
    assert "![test pictures](image/gallery.png)" in text and CAPTIONS_FILE not in text
    with Image.open(tmp_path / "out" / "image" / "gallery.png") as im:
        assert im.size[0] >= 800
