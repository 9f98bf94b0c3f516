"""The Python API: `train`, `load`, `evaluate`, `info`. The CLI and the HTTP server are shells over it.

    import seqlab
    run_dir = seqlab.train("sst2/bag", {"train.epochs": 3}, out="runs/sst2")
    model = seqlab.load(run_dir)
    model.predict(["a gripping, funny film"])
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from seqlab.config import FORMAT_VERSION, Config, load_yaml, make_config, resolve
from seqlab.data.io import atomic_write_text
from seqlab.errors import CheckpointError, ConfigError
from seqlab.tasks import TASKS
from seqlab.tasks.base import Predictor
from seqlab.tasks.transfer import Source, load_matching
from seqlab.train import distributed as D
from seqlab.train.checkpoint import checkpoint_dirs, load_weights
from seqlab.train.device import resolve_device, seed_everything, set_threads
from seqlab.train.metrics_log import summary_writer
from seqlab.train.precision import auto_precision
from seqlab.train.trainer import Trainer

# keys that may change when a run is resumed (training longer); everything else must stay as it was
RESUMABLE_KEYS = {"train.epochs", "train.max_steps", "train.max_seconds", "train.early_stopping", "threads", "device"}


def _default_out(cfg: Config) -> Path:
    stem = cfg.dataset or (Path(cfg.data.train).name.split(".")[0] if cfg.data.train else None)
    stem = stem or TASKS[cfg.task].default_dataset
    base = Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}-{cfg.model}")
    out, k = base, 2
    while out.exists():
        out, k = base.with_name(f"{base.name}-{k}"), k + 1
    return out


def read_run_config(run_dir: str | os.PathLike) -> Config:
    """The resolved config of a run directory, or a CheckpointError saying why it cannot be used."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError("run directory not found", path=run)
    if not (run / "config.yaml").is_file():
        raise CheckpointError("not a run directory (no config.yaml)", path=run)
    tree = load_yaml(run / "config.yaml")
    if not tree:
        raise CheckpointError("config.yaml is empty", path=run)
    try:
        return resolve(tree)
    except ConfigError as e:
        raise CheckpointError(f"run directory is not usable by this seqlab: {e.message}", path=run) from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True


def _remove_stale_partials(run_dir: Path) -> None:
    """Remove the hidden `.NAME.partial-PID` directories that runs into `run_dir` killed while creating it
    left behind (their process is gone). POSIX only: elsewhere `os.kill(pid, 0)` is not a harmless probe."""
    if os.name != "posix":
        return
    for partial in run_dir.parent.glob(f".{glob.escape(run_dir.name)}.partial-*"):
        pid = partial.name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _setup(cfg: Config, log) -> tuple[torch.device, Any]:
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    task = TASKS[cfg.task](cfg, device, log=log)
    return device, task


def train(
    preset: str | os.PathLike | dict | None = None,
    overrides: dict | list | None = None,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    quiet: bool = False,
    log=print,
    on_valid=None,
    test: bool = True,
) -> Path:
    """Train a model and return its run directory. `resume=RUN_DIR` continues an interrupted run
    exactly where its last checkpoint left it (only the keys in RESUMABLE_KEYS may change); a run
    stopped before its first checkpoint starts over, which gives the same result. `on_valid(n, metrics)`
    is called after each valid evaluation (see `Trainer`); `test=False` neither reads nor evaluates the test
    split (`seqlab tune`'s trials).

    Under `torchrun --nproc_per_node N` every process calls this: they join one process group, train
    data-parallel, and only rank 0 creates and writes the run directory (the others use its path)."""
    log = None if quiet else log
    owns_group = D.setup(_peek_device(preset, overrides, resume))
    try:
        run_dir = _train(preset, overrides, out, resume, quiet, log if D.is_main() else None, on_valid, test)
        if owns_group:  # every rank leaves once rank 0 has written the run: the run each returns is complete, and
            D.barrier()  # gloo aborts a process whose group is destroyed while a peer still uses its connection
        return run_dir
    finally:
        if owns_group:
            D.teardown()


def _peek_device(preset, overrides, resume) -> str:
    """The `device` a run will use, read before the process group exists (it picks gloo or NCCL)."""
    try:
        cfg = read_run_config(resume) if resume is not None else make_config(preset, overrides)
    except (ConfigError, CheckpointError):
        return "cpu"  # the run itself reports the error
    return cfg.device


def _train(preset, overrides, out, resume, quiet: bool, log, on_valid=None, test: bool = True) -> Path:
    main = D.is_main()
    say = log or (lambda _m: None)
    changed: list[str] = []  # the keys a resumed run changes
    start_over = False
    if resume is not None:
        run_dir = Path(resume)
        cfg = read_run_config(run_dir)
        if preset is not None:
            raise ConfigError("--resume takes its config from the run directory; give no preset")
        overrides = overrides or []
        changed = [k if isinstance(overrides, dict) else k.split("=", 1)[0].strip() for k in overrides]
        bad = sorted(set(changed) - RESUMABLE_KEYS)
        if bad:
            allowed = ", ".join(sorted(RESUMABLE_KEYS))
            raise ConfigError(f"cannot change {', '.join(bad)} when resuming (allowed: {allowed})")
        if changed:
            cfg = make_config(cfg.to_dict(), overrides)  # parses `key=value` strings as a new run does
        elif (run_dir / "summary.json").is_file():
            say(f"{run_dir} is finished; nothing to resume (train it longer with train.epochs=N)")
            return run_dir
        start_over = not checkpoint_dirs(run_dir)
    else:
        cfg = make_config(preset, overrides)
        if not (cfg.dataset or cfg.data.train or cfg.data.valid or cfg.data.test):
            cfg.dataset = TASKS[cfg.task].default_dataset  # said in config.yaml and on the model card
        if out is not None and main and Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
            raise ConfigError(f"{out} exists and is not empty: choose another --out or --resume it")
    seed_everything(cfg.seed)
    device, task = _setup(cfg, log)
    task.read_test = test
    t0 = time.perf_counter()
    source = None
    if cfg.init_from and resume is None:  # a resumed run has its own words and weights
        source = Source.open(cfg.init_from, read_run_config(cfg.init_from))
        task.adopt(source)
    task.prepare(artifacts=run_dir if resume is not None else None)
    sizes = ", ".join(f"{k.removesuffix('_examples')} {v:,}" for k, v in task.counts.items() if k.endswith("_examples"))
    vocab = f" | vocabulary {task.counts['vocab_size']:,}" if "vocab_size" in task.counts else ""
    say(f"data: {sizes}{vocab}")
    seed_everything(cfg.seed)
    model = task.build_model().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {cfg.model} ({n_params:,} parameters) on {device}, precision {cfg.precision}")
    if cfg.precision == "auto":  # measured by rank 0 before anything is written: config.yaml keeps the choice
        cfg.precision = D.broadcast_object(auto_precision(task, model, device, say) if main else None)
    if source is not None:
        task.counts["init_from"] = facts = load_matching(model, task.vocabulary()[0], source)
        fresh = ", ".join(f"{k} ({v})" for k, v in facts["not_loaded"].items())
        say(f"init_from {source.run_dir}: loaded {len(facts['loaded'])} tensors ({', '.join(facts['loaded'])}); "
            f"vocabulary rows {facts['rows_from_run']:,} from the run, {facts['new_rows']:,} new; "
            f"fresh: {fresh or 'none'}")
    if resume is None or start_over:
        task.before_training(model)
    if cfg.train.tensorboard:
        summary_writer()  # a missing package is one line now, before the run directory exists
    if resume is None and main:
        run_dir = Path(out) if out is not None else _default_out(cfg)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir} exists and is not empty: choose another --out or --resume it")
        _remove_stale_partials(run_dir)
        tmp = run_dir.with_name(f".{run_dir.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        atomic_write_text(tmp / "config.yaml", cfg.to_yaml())
        task.save_artifacts(tmp)
        if run_dir.exists():
            run_dir.rmdir()
        os.replace(tmp, run_dir)
    elif main:
        if changed or load_yaml(run_dir / "config.yaml").get("format_version") != FORMAT_VERSION:
            atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())  # changed keys, or migrated
        if start_over:
            say("no checkpoint yet: the run starts over from step 0")
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    run_dir = Path(D.broadcast_object(str(run_dir) if main else None))  # the others wait for rank 0's path
    trainer = Trainer(task, model, cfg.train, run_dir, device, cfg.precision, log=log, progress=not quiet,
                      on_valid=on_valid, test=test)
    t_fit = time.perf_counter()
    results = trainer.fit(resume=resume is not None and not start_over)
    fit_seconds = time.perf_counter() - t_fit
    wall = time.perf_counter() - t0
    if not main:
        return run_dir
    task.save_artifacts(run_dir)  # with what `before_test` settled (multi-label thresholds)
    _write_summary(run_dir, results, wall, fit_seconds, n_params, task, trainer.skipped_steps)
    test = results.get("test")
    if test:
        say(f"test {task.headline}: {_show(task.headline, test[task.headline])}  |  "
            + "  ".join(f"{k} {_show(k, v)}" for k, v in test.items() if k != task.headline))
    say(f"run saved to {run_dir}  ({wall:.1f} s)")
    say(f"try it: {task.predictor(model, run_dir).example_command(run_dir)}")
    return run_dir


def _show(name: str, v: float) -> str:
    return f"{v * 100:.1f}%" if name.endswith("accuracy") else f"{v:.4f}"


def _write_summary(run_dir: Path, results: dict, wall: float, fit_seconds: float, n_params: int, task,
                   skipped: int) -> None:
    summary = {"results": results, "wall_seconds": wall, "fit_seconds": fit_seconds, "parameters": n_params,
               "counts": task.counts, "skipped_steps": skipped, "torch": torch.__version__,
               "threads": torch.get_num_threads()}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1))


def _open(run_dir: str | os.PathLike, device: str | None = None, log=None, overrides: dict | list | None = None):
    """A run's config (with `overrides`), device and task (nothing read yet)."""
    cfg = read_run_config(run_dir)
    if overrides:
        cfg = make_config(cfg.to_dict(), overrides)
    if device is not None:
        cfg.device = device
    dev, task = _setup(cfg, log)
    return cfg, dev, task


def _model(task, run_dir: str | os.PathLike, device: torch.device):
    weights = Path(run_dir) / "model.safetensors"
    if not weights.is_file() and checkpoint_dirs(Path(run_dir)):
        raise CheckpointError("the run has checkpoints but no finished weights yet: finish it with "
                              f"`seqlab train --resume {run_dir}`", path=weights)
    model = task.build_model()
    load_weights(model, weights)
    return model.to(device).eval()


def load(run_dir: str | os.PathLike, device: str | None = None, model: torch.nn.Module | None = None) -> Predictor:
    """The task's predictor for a finished run: `.predict(items, **options)` for every task (see its
    `describe()`). `model`: run another implementation of the run's model (e.g. an ONNX Runtime session)
    instead of its weights."""
    cfg, dev, task = _open(run_dir, device)
    task.load_artifacts(run_dir)
    return task.predictor(model if model is not None else _model(task, run_dir, dev), run_dir)


def evaluate(run_dir: str | os.PathLike, data: str | None = None, split: str = "test",
             skip_bad_rows: bool = False, log=None, overrides: dict | list | None = None) -> dict:
    """Full metrics of a run on `split` of its own data, of a named dataset, or of a file. `overrides`: data.*
    keys saying how to read `data` when its layout differs from the training data's (format, header, columns,
    encoding). `log` receives the task's notes on the data (skipped bad rows, texts shared between splits)."""
    keys = [k if isinstance(overrides, dict) else k.split("=", 1)[0].strip() for k in overrides or []]
    if any(not k.startswith("data.") for k in keys):
        raise ConfigError(f"evaluate takes data.* overrides only (how to read the data), got "
                          f"{next(k for k in keys if not k.startswith('data.'))}")
    cfg, dev, task = _open(run_dir, log=log, overrides=overrides)
    cfg.data.skip_bad_rows = skip_bad_rows or cfg.data.skip_bad_rows
    if data is not None and not Path(data).exists() and "/" not in data and "." not in data:
        cfg.dataset, cfg.data.train, cfg.data.valid, cfg.data.test = data, None, None, None
        data = None
    if data is None:
        task.prepare(artifacts=run_dir)
        if not task.has_split(split):
            raise ConfigError(f"the run's data has no {split!r} split (splits: {', '.join(task.splits)})")
    else:
        task.load_artifacts(run_dir)
        task.add_eval_file(data, split)
    model = _model(task, run_dir, dev)
    with torch.no_grad():
        return task.report(model, split)


def quantize(run_dir: str | os.PathLike, out: str | os.PathLike, cutoff: int | None = None, dsub: int = 2,
             log=None, test: bool = True) -> dict:
    """Write a compressed copy of a run (`seqlab quantize`, as `fasttext quantize`): the embedding rows of largest
    norm kept (`cutoff`), the embedding product-quantized (`dsub` numbers per byte code). `out` is a run
    directory that evaluate, predict, serve, export and report take. Returns its sizes and test metrics before
    and after (also in OUT/quantize.json; `test=False`: no test metrics, for `seqlab tune --max-size`)."""
    from safetensors.torch import save_file

    if cutoff is not None and cutoff < 1:
        raise ConfigError(f"cutoff must be at least 1, got {cutoff}")
    if dsub < 1:
        raise ConfigError(f"dsub must be at least 1, got {dsub}")
    run, out = Path(run_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not empty: choose another --out")
    predictor = load(run, device="cpu")
    task = predictor.task
    state = task.quantize(predictor.model, cutoff, dsub)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shutil.copy2(run / "config.yaml", tmp / "config.yaml")
        task.save_artifacts(tmp)
        save_file(state, str(tmp / "model.safetensors"))
        for name in ("summary.json", "metrics.jsonl"):
            if (run / name).is_file():
                shutil.copy2(run / name, tmp / name)

        def size(folder: Path) -> int:  # what a quantized run is for: the model and what it needs to read text
            return sum(f.stat().st_size for f in (folder / "model.safetensors", folder / task.artifact) if f.is_file())

        facts = {"source": str(run), "cutoff": cutoff, "dsub": dsub, "rows": int(state["embedding.codes"].shape[0]),
                 "bytes_before": size(run), "bytes_after": size(tmp)}
        atomic_write_text(tmp / "quantize.json", json.dumps(facts, indent=1))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        if test:
            facts["test_before"], facts["test_after"] = evaluate(run, log=log), evaluate(out, log=log)
    except ConfigError:  # no test split (or its data is not here)
        pass
    atomic_write_text(out / "quantize.json", json.dumps(facts, indent=1))
    return facts


def listing() -> dict:
    """What `seqlab presets` shows: the shipped presets (name, first comment line), the named datasets (where
    each split file resolves, without downloading) and every config key with its type, default and help."""
    from seqlab.config import PRESETS, describe_keys, preset_names
    from seqlab.data.datasets import DATASETS, locate

    presets = []
    for name in preset_names():
        lines = (PRESETS / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
        about = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), "")
        presets.append({"name": name, "about": about})
    datasets = []
    for name, recipe in DATASETS.items():
        splits = {split: [{"where": where, "path": str(path) if path else None,
                           "bytes": path.stat().st_size if path else None} for where, path in files]
                  for split, files in locate(name).items()}
        datasets.append({"name": name, "format": recipe.format, "splits": splits})
    return {"presets": presets, "datasets": datasets, "keys": describe_keys()}


def info(run_dir: str | os.PathLike) -> dict:
    """What a run is: config, data counts, parameters, results, checkpoints."""
    cfg = read_run_config(run_dir)
    run = Path(run_dir)
    task = TASKS[cfg.task](cfg, torch.device("cpu"), log=None)
    return {
        "run_dir": str(run),
        "task": cfg.task,
        "model": cfg.model,
        "dataset": cfg.dataset or cfg.data.train or f"{task.default_dataset} (the task's default)",
        "headline": task.headline,  # the metric shown beside the loss
        "metric": cfg.train.metric or task.default_metric,  # the valid metric that picked the kept weights
        "intended_use": task.intended_use,
        "config": cfg.to_dict(),
        "summary": _read_summary(run / "summary.json"),
        "status": ("finished" if (run / "summary.json").is_file() else
                   f"stopped before the end: finish it with `seqlab train --resume {run}`" if checkpoint_dirs(run)
                   else "not trained yet"),
        "checkpoints": [p.name for p in checkpoint_dirs(run)],
        "files": sorted(p.name for p in run.iterdir()),
    }


def _read_summary(path: Path) -> dict:
    """A run's summary.json, or {} (with a warning) when it is unreadable or not what seqlab writes."""
    if not path.is_file():
        return {}
    try:
        s = json.loads(path.read_text(encoding="utf-8"))
        counts, results = s.get("counts", {}), s.get("results", {})
        ok = (isinstance(s.get("parameters", 0), int) and isinstance(s.get("wall_seconds", 0.0), (int, float))
              and all(isinstance(v, int) for k, v in counts.items() if k.endswith("_examples"))
              and all(isinstance(m, dict) for m in results.values()))
    except (ValueError, AttributeError):  # not JSON, not UTF-8, or not the mappings seqlab writes
        ok = False
    if not ok:
        warnings.warn(f"{path}: not a summary written by seqlab; ignored", stacklevel=2)
        return {}
    return s
