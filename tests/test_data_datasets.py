"""Named datasets: local resolution, the cache, and downloads (offline, through file:// URLs)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from seqlab.data import DatasetSpec, get_dataset, read
from seqlab.data import datasets as ds
from seqlab.data.io import sha256_file
from seqlab.errors import ConfigError, DataError

TREC_TRAIN = "DESC:manner How did serfdom develop ?\nNUM:dist How far is it ?\n"
TREC_TEST = "HUM:ind Who was Galileo ?\n"


@pytest.fixture
def env(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """An empty $SEQLAB_DATA and $SEQLAB_CACHE in tmp_path."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    monkeypatch.setenv("SEQLAB_DATA", str(data))
    monkeypatch.setenv("SEQLAB_CACHE", str(cache))
    return data, cache


def put(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def remote(path: Path, algorithm: str = "sha256", wrong: bool = False) -> ds.Remote:
    digest = hashlib.new(algorithm, path.read_bytes()).hexdigest()
    if wrong:
        digest = "0" * len(digest)
    return ds.Remote(path.as_uri(), **{algorithm: digest})


def trec_recipe(train: ds.Remote, test: ds.Remote) -> ds.Recipe:
    return ds.Recipe(files={"train_5500.label": train, "TREC_10.label": test}, train="train_5500.label",
                     valid=None, test="TREC_10.label", format="trec", reader_options={"encoding": "latin-1"})


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(ConfigError, match="did you mean 'sst2'"):
        get_dataset("sst-2")
    with pytest.raises(ConfigError, match="choices"):
        get_dataset("mnist")


def test_resolves_from_seqlab_data(env):
    data, cache = env
    put(data / "trec" / "train_5500.label", TREC_TRAIN)
    put(data / "trec" / "TREC_10.label", TREC_TEST)
    spec = get_dataset("trec", download=False)
    assert isinstance(spec, DatasetSpec)
    assert (spec.train, spec.valid, spec.test) == (data / "trec" / "train_5500.label", None,
                                                   data / "trec" / "TREC_10.label")
    assert spec.format == "trec" and spec.reader_options == {"encoding": "latin-1", "fine": False}
    assert [e.label for e in read(spec.train, spec.format, **spec.reader_options)] == ["DESC", "NUM"]
    assert not cache.exists()


def test_ag_news_label_names_from_classes_txt_and_missing_train(env):
    data, _ = env
    put(data / "ag_news" / "test.csv", '"1","t","d"\n')
    put(data / "ag_news" / "classes.txt", "World\nSports\nBusiness\nSci/Tech\n")
    with pytest.raises(DataError, match=r"train.csv is neither under \$SEQLAB_DATA/ag_news/ nor in the cache"):
        get_dataset("ag_news", download=False)
    put(data / "ag_news" / "train.csv", '"2","t","d"\n')
    spec = get_dataset("ag_news", download=False)
    assert spec.label_names == {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}
    assert [e.text for e in read(spec.test, spec.format, **spec.reader_options)] == ["t d"]


def test_download_verifies_and_caches(env, tmp_path, monkeypatch):
    _, cache = env
    train = put(tmp_path / "src" / "train_5500.label", TREC_TRAIN.encode("latin-1") + b"LOC:city caf\xe9 ?\n")
    test = put(tmp_path / "src" / "TREC_10.label", TREC_TEST)
    monkeypatch.setitem(ds.DATASETS, "trec", trec_recipe(remote(train), remote(test, "md5")))
    spec = get_dataset("trec", progress=False)
    assert spec.train == cache / "datasets" / "trec" / "train_5500.label"
    assert spec.train.read_bytes() == train.read_bytes() and spec.test.read_bytes() == test.read_bytes()
    assert [e.text for e in read(spec.train, spec.format, **spec.reader_options)][-1] == "café ?"
    assert sorted(p.name for p in spec.train.parent.iterdir()) == ["TREC_10.label", "train_5500.label"]
    train.unlink()  # a second call is served by the cache
    assert get_dataset("trec", download=False).train == spec.train


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_checksum_mismatch_deletes_the_download(env, tmp_path, monkeypatch, algorithm):
    _, cache = env
    train = put(tmp_path / "src" / "train_5500.label", TREC_TRAIN)
    test = put(tmp_path / "src" / "TREC_10.label", TREC_TEST)
    monkeypatch.setitem(ds.DATASETS, "trec", trec_recipe(remote(train, algorithm, wrong=True), remote(test)))
    with pytest.raises(DataError, match=f"checksum mismatch .*expected {algorithm} 0+, got") as err:
        get_dataset("trec", progress=False)
    assert train.as_uri() in str(err.value)
    assert list((cache / "datasets" / "trec").iterdir()) == []  # neither the file nor a temp file


def test_failed_download_is_a_data_error(env, tmp_path, monkeypatch):
    missing = ds.Remote((tmp_path / "nowhere.label").as_uri(), sha256="0" * 64)
    monkeypatch.setitem(ds.DATASETS, "trec", trec_recipe(missing, missing))
    with pytest.raises(DataError, match="cannot download .*nowhere.label.*by hand"):
        get_dataset("trec", progress=False)


def test_zip_member_like_glue_sst2(env, tmp_path, monkeypatch):
    _, cache = env
    archive = tmp_path / "src" / "SST-2.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("SST-2/train.tsv", 'sentence\tlabel\nit \'s "fine" \t1\nbad \t0\n')
        z.writestr("SST-2/dev.tsv", "sentence\tlabel\nok \t1\n")
    source = remote(archive, "md5")
    recipe = ds.DATASETS["sst2"]
    files = {rel: ds.ZipMember(source, member.member) for rel, member in recipe.files.items()}
    monkeypatch.setitem(ds.DATASETS, "sst2", ds.Recipe(**{**recipe.__dict__, "files": files}))
    spec = get_dataset("sst2", progress=False)
    assert spec.train == cache / "datasets" / "sst2" / "glue" / "train.tsv" and spec.valid is None
    got = [(e.text, e.label) for e in read(spec.train, spec.format, **spec.reader_options)]
    assert got == [('it \'s "fine"', "1"), ("bad", "0")]
    assert spec.label_names == {"0": "negative", "1": "positive"}
    assert (cache / "datasets" / "sst2" / "downloads" / "SST-2.zip").is_file()


def make_imdb_tar(path: Path) -> None:
    reviews = {"train/pos/10_9": "Great.<br /><br />Really", "train/pos/2_7": "Nice ünïcode",
               "train/neg/0_3": "Bad", "train/unsup/1_0": "Unlabeled two", "train/unsup/0_0": "Unlabeled",
               "test/neg/5_1": "Awful"}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in reviews.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"aclImdb/{name}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_imdb_tarball_becomes_the_shared_jsonl_layout(env, tmp_path, monkeypatch):
    archive = tmp_path / "aclImdb_v1.tar.gz"
    make_imdb_tar(archive)
    source = remote(archive, "md5")
    recipe = ds.DATASETS["imdb"]
    files = {rel: ds.ImdbJsonl(source, member.split) for rel, member in recipe.files.items()}
    monkeypatch.setitem(ds.DATASETS, "imdb", ds.Recipe(**{**recipe.__dict__, "files": files}))
    spec = get_dataset("imdb", progress=False)
    rows = [json.loads(line) for line in gzip.decompress(spec.train.read_bytes()).decode().splitlines()]
    assert rows == [  # pos then neg, each by numeric id, as in $SEQLAB_DATA/imdb
        {"label": "pos", "id": "2_7", "rating": 7, "text": "Nice ünïcode"},
        {"label": "pos", "id": "10_9", "rating": 9, "text": "Great.<br /><br />Really"},
        {"label": "neg", "id": "0_3", "rating": 3, "text": "Bad"},
    ]
    assert [(e.text, e.label) for e in read(spec.test, spec.format, **spec.reader_options)] == [("Awful", "neg")]


def test_imdb_unlabeled_reviews_become_the_shared_jsonl_layout(env, tmp_path, monkeypatch):
    archive = tmp_path / "aclImdb_v1.tar.gz"
    make_imdb_tar(archive)
    recipe = ds.DATASETS["imdb_text"]
    files = {rel: ds.ImdbJsonl(remote(archive, "md5"), member.split) for rel, member in recipe.files.items()}
    monkeypatch.setitem(ds.DATASETS, "imdb_text", ds.Recipe(**{**recipe.__dict__, "files": files}))
    spec = get_dataset("imdb_text", progress=False)
    unsup, train = spec.train
    rows = [json.loads(line) for line in gzip.decompress(unsup.read_bytes()).decode().splitlines()]
    assert rows == [{"id": "0_0", "text": "Unlabeled"}, {"id": "1_0", "text": "Unlabeled two"}]  # by id, no label
    assert [e.text for e in read(train, spec.format, **spec.reader_options, label_key=None)][-1] == "Bad"


def test_corrupt_archive_is_a_data_error(env, tmp_path, monkeypatch):
    bogus = put(tmp_path / "SST-2.zip", b"not a zip")
    recipe = ds.DATASETS["sst2"]
    files = {rel: ds.ZipMember(remote(bogus, "md5"), m.member) for rel, m in recipe.files.items()}
    monkeypatch.setitem(ds.DATASETS, "sst2", ds.Recipe(**{**recipe.__dict__, "files": files}))
    with pytest.raises(DataError, match="cannot extract SST-2/train.tsv"):
        get_dataset("sst2", progress=False)


# --- the real shared data (skipped when absent) -----------------------------------------------------------


def test_real_shared_data_resolves_locally(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("SEQLAB_DATA", str(shared_data))
    monkeypatch.setenv("SEQLAB_CACHE", str(tmp_path))
    sst2 = get_dataset("sst2", download=False)
    assert get_dataset("imdb_text", download=False).train == (shared_data / "imdb/imdb-unsup.jsonl.gz",
                                                              shared_data / "imdb/imdb-train.jsonl.gz")
    assert (sst2.train, sst2.test) == (shared_data / "sst2/glue/train.tsv", shared_data / "sst2/glue/dev.tsv")
    assert get_dataset("trec", download=False).train == shared_data / "trec/train_5500.label"
    imdb = get_dataset("imdb", download=False)
    assert imdb.test == shared_data / "imdb/imdb-test.jsonl.gz"
    first = next(read(imdb.test, imdb.format, **imdb.reader_options))
    assert first.label in ("pos", "neg") and first.text
    with pytest.raises(DataError, match="train.csv"):  # AG_NEWS train is not staged: it needs the download
        get_dataset("ag_news", download=False)


def test_recipe_checksums_match_the_staged_copies(shared_data):
    checked = set()
    for name, recipe in ds.DATASETS.items():
        for rel, source in recipe.files.items():
            local = shared_data / (getattr(recipe, "folder", None) or name) / rel
            if isinstance(source, ds.Remote) and local.is_file():
                if source.sha256:
                    assert sha256_file(local) == source.sha256, local
                else:
                    assert hashlib.md5(local.read_bytes()).hexdigest() == source.md5, local
                checked.add(f"{name}/{rel}")
    # ag_news/train.csv is not staged; SST-2 and IMDB come from archives
    assert {"trec/train_5500.label", "trec/TREC_10.label", "ag_news/test.csv", "ag_news/classes.txt"} <= checked
