"""`seqlab tune`: search a preset's hyper-parameters within a wall-clock budget, on Optuna, scored on valid only.

    seqlab tune imdb/bag --budget 10m --out runs/tune-imdb
    seqlab.tune("imdb/bag", budget=600, out="runs/tune-imdb")

The search space is declared once, beside the configs it ranges over: `TrainConfig.space` (learning rate,
epochs, batch size) and each model class's `space` (dropout and weight decay; dimension, n-grams and min_freq
for the bag). A preset narrows or extends it under a `tune:` section (a key set to null leaves the space; a
key given on the command line is fixed). A parameter is written as
    [a, b, c]                          a choice
    {low: 0.0, high: 0.5}              a range (integers when both ends are; `log: true`, `step: s`)
    {times: [0.1, 10]}                 a range around the preset's value, on a log scale

Each trial is an ordinary run under DIR/trials/N (config.yaml, metrics.jsonl, weights) trained without its
test split; after every valid evaluation the trial reports to Optuna's median pruner, which stops the
hopeless ones. `--budget` is honoured: each trial gets what is left as `train.max_seconds`, less what data
preparation took. The study lives in DIR/study.db (SQLite) unless `--storage` names another database: run
the same command again after a crash (even kill -9) and the study continues, the cut trial marked failed
(its process is gone, or its heartbeat stopped) and sampled again. The sampler is TPE, seeded from `--seed`
and the number of finished trials, so a resumed study draws what an uninterrupted one would. `--workers K`
runs K trial processes here; processes on other machines join with the same `--storage` URL and `--out`
folder name.

At the end DIR/best links the best trial's run, which is evaluated once on test; DIR/best.yaml is its config as
a preset, DIR/report.md the trials, DIR/history.png and DIR/importances.png Optuna's plots, DIR/result.json
the figures.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from seqlab.config import _suggest, find_preset, load_yaml, make_config, parse_overrides
from seqlab.data.io import atomic_write_text
from seqlab.errors import ConfigError, SeqlabError

STATES_DONE = ("COMPLETE", "PRUNED")  # trials that count towards --trials


# ---------------------------------------------------------------------------------------------- the space
@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a float or int range (optionally log-scaled, stepped) or a choice."""

    key: str  # the dotted config key (train.lr, model.dim, task.ngrams...)
    kind: Literal["float", "int", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> list:
        """The values at the edges of the dimension (checked against the config before the search starts)."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key}: one of {', '.join(map(str, self.choices))}"
        return f"{self.key}: {self.kind} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def parse_param(key: str, spec: Any, base: Any) -> Param:
    """A Param from its YAML form (see the module docstring); `base` is the preset's value of the key."""
    where = f"tune: {key}"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty list of choices")
        return Param(key, "choice", choices=tuple(spec))
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a list of choices or a mapping with low/high or times, got {spec!r}")
    unknown = sorted(set(spec) - {"low", "high", "log", "step", "times"})
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}" + _suggest(unknown[0], ["low", "high", "log",
                                                                                          "step", "times"]))
    log = spec.get("log", "times" in spec)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if "times" in spec:
        times = spec["times"]
        if not (isinstance(times, list) and len(times) == 2 and all(_number(t) and t > 0 for t in times)):
            raise ConfigError(f"{where}: times must be two positive numbers [low, high], got {times!r}")
        if not _number(base) or base <= 0:
            raise ConfigError(f"{where}: times needs a positive preset value, and the preset's is {base!r}")
        if isinstance(base, int):
            low = max(1, round(base * times[0]))
            high = max(low, round(base * times[1]))
        else:
            low, high = base * times[0], base * times[1]
    elif "low" in spec and "high" in spec:
        low, high = spec["low"], spec["high"]
        if not (_number(low) and _number(high)):
            raise ConfigError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    else:
        raise ConfigError(f"{where}: give both low and high, or times")
    step = spec.get("step")
    if step is not None and (not _number(step) or step <= 0):
        raise ConfigError(f"{where}: step must be a positive number, got {step!r}")
    if low > high:
        raise ConfigError(f"{where}: low {low} is above high {high}")
    if log and (low <= 0 or step is not None):
        raise ConfigError(f"{where}: a log range needs low > 0 and no step")
    whole = isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int))
    return Param(key, "int" if whole else "float", low, high, log, step)


def _lookup(tree: dict, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _keys(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out += _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def search_space(preset: str | os.PathLike | None, overrides: dict | None = None) -> list[Param]:
    """The space a study searches for `preset` with `overrides` fixed: TrainConfig.space ⊕ the task's and the
    model's `space` ⊕ the preset's `tune:` section, less the overridden keys. ConfigError for an unknown key, a
    malformed range, a value the config refuses, or an empty space."""
    from seqlab.models import MODELS
    from seqlab.tasks import TASKS
    from seqlab.train.config import TrainConfig

    overrides = dict(overrides or {})
    cfg = make_config(preset, overrides)
    space = {**TrainConfig.space, **getattr(TASKS[cfg.task].Config, "space", {}),
             **getattr(MODELS[cfg.task][cfg.model], "space", {})}
    section = load_yaml(find_preset(preset)).get("tune") if preset is not None else None
    if section is not None and not isinstance(section, dict):
        raise ConfigError("the preset's tune: section must map config keys to ranges or choices")
    tree = cfg.to_dict()
    known = _keys(tree)
    for key, spec in (section or {}).items():
        if key not in known:
            raise ConfigError(f"tune: unknown key {key!r}" + _suggest(key, known))
        if spec is None:
            space.pop(key, None)
        else:
            space[key] = spec
    params = [parse_param(key, spec, _lookup(tree, key)) for key, spec in space.items()
              if key not in overrides and key in known]
    if not params:
        raise ConfigError("the search space is empty: every key of it is fixed by an override or removed by the "
                          "preset's tune: section")
    for p in params:  # each edge of each dimension must make a valid config
        for value in p.values():
            try:
                make_config(preset, {**overrides, p.key: value})
            except ConfigError as e:
                raise ConfigError(f"tune: {p.key} = {value!r} is not a valid value ({e.message})") from None
    return params


def parse_budget(text: str) -> float:
    """'10m', '90s', '1.5h' or a number of seconds -> seconds (> 0)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(text))
    if not m:
        raise ConfigError(f"--budget must be a duration such as 10m, 90s or 1h, got {text!r}")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if seconds <= 0:
        raise ConfigError(f"--budget must be positive, got {text!r}")
    return seconds


def parse_size(text: str) -> int:
    """'2M', '500K', '1.5G' or a number of bytes -> bytes (> 0), as fastText's -autotune-modelsize."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMG]?)B?\s*", str(text), flags=re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--max-size must be a size such as 2M, 500K or 1G, got {text!r}")
    return int(float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2).upper()])


def fit_size(run_dir: Path, out: Path, max_size: int, metric: str) -> dict:
    """A quantized copy of the bag run `run_dir` at `out` whose model and vocabulary take at most `max_size`
    bytes: product-quantized (2 numbers a byte, or 1 for an odd dimension), then the rows of least norm pruned
    until it fits. Returns {"run", "valid" (its `metric`), "bytes", "cutoff" (None: no row pruned), "dsub"}."""
    from seqlab import api

    dsub = 2 if api.read_run_config(run_dir).model_options.dim % 2 == 0 else 1
    cutoff = None
    for _ in range(6):
        shutil.rmtree(out, ignore_errors=True)
        q = api.quantize(run_dir, out, cutoff=cutoff, dsub=dsub, test=False)
        if q["bytes_after"] <= max_size:
            return {"run": str(out), "valid": api.evaluate(out, split="valid")[metric], "bytes": q["bytes_after"],
                    "cutoff": cutoff, "dsub": dsub}
        cutoff = max(1, int(q["rows"] * max_size / q["bytes_after"] * 0.9))
    raise ConfigError(f"cannot quantize {run_dir} to {max_size:,} bytes (it stays {q['bytes_after']:,}): its "
                      "vocabulary alone is larger; give a larger --max-size")


# ---------------------------------------------------------------------------------------------- the study
@dataclass
class Study:
    """What every worker of one `seqlab tune` needs (picklable, for worker processes)."""

    preset: str | None
    overrides: dict
    params: list[Param]
    out: Path
    storage: str
    metric: str
    direction: Literal["minimize", "maximize"]
    budget: float | None  # seconds, from `started`
    trials: int | None  # finished trials the study stops at
    seed: int
    started: float  # time.time() when the command started
    quiet: bool
    max_size: int | None = None  # bytes: larger bag models are quantized to fit, and scored so

    @property
    def name(self) -> str:
        return self.out.name

    def storage_object(self):
        import optuna

        if "://" not in self.storage:
            raise ConfigError(f"--storage must be a database URL such as sqlite:///study.db, got {self.storage!r}")
        try:
            return optuna.storages.RDBStorage(self.storage, heartbeat_interval=5, grace_period=20)
        except Exception as e:  # sqlalchemy's errors: a folder that does not exist, no permission, a bad URL
            first = str(e).splitlines()[0][:200] if str(e) else e.__class__.__name__
            raise ConfigError(f"cannot open the study's storage {self.storage} ({first})") from None

    def load(self, sampler_seed: int | None = None):
        import optuna

        sampler = optuna.samplers.TPESampler(seed=sampler_seed)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
        return optuna.create_study(storage=self.storage_object(), study_name=self.name, direction=self.direction,
                                   sampler=sampler, pruner=pruner, load_if_exists=True)


@contextlib.contextmanager
def _optuna_quiet():
    """Optuna's notes that heartbeats and its matplotlib plots are experimental, and that heartbeats were meant
    for `Study.optimize` (we beat them ourselves, for ask-and-tell), are not the user's business."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        yield


def _fail_cut_trials(study) -> int:
    """Mark failed the running trials whose process is gone (this machine) or whose heartbeat stopped (any);
    returns how many."""
    import optuna
    from optuna.trial import TrialState

    from seqlab.api import _alive

    def running() -> list:
        return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    host, before = socket.gethostname(), running()
    for t in before:
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and isinstance(pid, int) and pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker was first
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    optuna.storages.fail_stale_trials(study)
    return len(before) - len(running())


def _heartbeat(storage, trial_id: int, stop: threading.Event) -> None:
    """Tell the storage every 5 s that the trial's process lives (processes elsewhere fail it when it stops)."""
    while True:
        with contextlib.suppress(Exception):
            storage.record_heartbeat(trial_id)
        if stop.wait(5):
            return


def _short(key: str, keys: list[str]) -> str:
    last = key.rsplit(".", 1)[-1]
    return last if sum(k.rsplit(".", 1)[-1] == last for k in keys) == 1 else key


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def work(s: Study, threads: int | None = None) -> None:
    """One worker: trials one after another until the budget or --trials is spent."""
    with _optuna_quiet():
        _work(s, threads)


def _work(s: Study, threads: int | None) -> None:
    import optuna
    from optuna.trial import TrialState

    from seqlab import api

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    keys = [p.key for p in s.params]
    overheads: list[float] = []  # seconds of each trial spent outside training (data, model, evaluation)
    by_time = s.budget is not None
    bar = tqdm(total=int(s.budget) if by_time else s.trials, unit="s" if by_time else "trial", desc="tune",
               disable=s.quiet or not sys.stderr.isatty(), leave=False,
               bar_format="{desc} {bar} {n_fmt}/{total_fmt} {unit}, {remaining} left")
    say = (lambda _m: None) if s.quiet else (lambda m: bar.write(m) if not bar.disable else print(m, flush=True))
    with bar:
        while True:
            study = s.load()
            _fail_cut_trials(study)
            finished = _finished(study)
            bar.update((min(time.time() - s.started, s.budget) if by_time else finished) - bar.n)
            if s.trials is not None and finished >= s.trials:
                return
            overrides = dict(s.overrides)
            if threads is not None:
                overrides.setdefault("threads", threads)
            if s.budget is not None:
                left = s.started + s.budget - time.time()
                train_seconds = left - (max(overheads) if overheads else 0.0)
                if train_seconds < 1:
                    return
                overrides["train.max_seconds"] = round(train_seconds, 1)
            study = s.load(sampler_seed=s.seed + finished)  # the draw depends on the finished trials only
            trial = study.ask()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            params = {p.key: p.suggest(trial) for p in s.params}
            run_dir = s.out / "trials" / str(trial.number)
            shown = "  ".join(f"{_short(k, keys)} {_fmt(v)}" for k, v in params.items())
            last: dict[str, float] = {}

            def report(n: int, valid: dict[str, float], trial=trial, last=last) -> None:
                last.update(valid)
                trial.report(valid[s.metric], n)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            stop = threading.Event()
            beat = threading.Thread(target=_heartbeat, args=(study._storage, trial._trial_id, stop), daemon=True)
            beat.start()
            t0 = time.time()
            try:
                api.train(s.preset, {**overrides, **params}, out=run_dir, quiet=True, log=None, on_valid=report,
                          test=False)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                say(f"trial {trial.number}  {shown}  pruned at valid {s.metric} {_fmt(last.get(s.metric))}  "
                    f"{time.time() - t0:.1f} s")
                continue
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            finally:
                stop.set()
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a finished trial is never resumed
            summary = json.loads((run_dir / "summary.json").read_text())
            value = summary["results"].get("valid", {}).get(s.metric)
            if value is None or not math.isfinite(value):
                study.tell(trial, state=TrialState.FAIL)
                raise ConfigError(f"trial {trial.number} reported no valid {s.metric}: the data has no valid split "
                                  f"(set data.valid= or data.valid_fraction)")
            size = ""
            if s.max_size is not None and _run_bytes(run_dir) > s.max_size:
                q = fit_size(run_dir, run_dir.with_name(f"{trial.number}.q"), s.max_size, s.metric)
                trial.set_user_attr("quantized", q)
                value, size = q["valid"], f"  quantized to {q['bytes'] / 1e6:.2f} MB"
            overheads.append(time.time() - t0 - summary.get("fit_seconds", 0.0))
            study.tell(trial, value)
            best = study.best_value
            left = "" if s.budget is None else f"  {_clock(s.started + s.budget - time.time())} left"
            say(f"trial {trial.number}  {shown}  valid {s.metric} {_fmt(value)}{size}  (best {_fmt(best)})  "
                f"{time.time() - t0:.1f} s{left}")


def _run_bytes(run_dir: Path) -> int:
    """What a bag run weighs: its weights and its vocabulary (what `seqlab quantize` reports)."""
    return sum(f.stat().st_size for f in (run_dir / "model.safetensors", run_dir / "vocab.json") if f.is_file())


def _work_process(s: Study, threads: int | None) -> None:
    """A worker process of `--workers K`: a user error is one line, exit 2."""
    try:
        work(s, threads)
    except SeqlabError as e:
        print(f"seqlab: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


# ---------------------------------------------------------------------------------------------- the command
def tune(preset: str | os.PathLike | None = None, overrides: dict | list | None = None,
         out: str | os.PathLike | None = None, budget: float | None = None, trials: int | None = None,
         metric: str | None = None, workers: int = 1, storage: str | None = None, seed: int = 0,
         quiet: bool = False, log=print, max_size: int | None = None) -> dict:
    """Tune `preset` within `budget` seconds and/or until `trials` trials finished; returns result.json's dict
    (see the module docstring). `max_size` (bytes, bag models): a trial whose model and vocabulary are larger is
    quantized to fit, and scored quantized (fastText's -autotune-modelsize)."""
    with _optuna_quiet():
        return _tune(preset, overrides, out, budget, trials, metric, workers, storage, seed, quiet, log, max_size)


def _tune(preset, overrides, out, budget, trials, metric, workers, storage, seed, quiet, log, max_size) -> dict:
    from seqlab.tasks import TASKS
    from seqlab.train.trainer import LOWER_IS_BETTER

    if budget is None and trials is None:
        raise ConfigError("give --budget (a duration such as 10m) or --trials N")
    if budget is not None and not budget > 0:
        raise ConfigError(f"--budget must be positive, got {budget}")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if max_size is not None and max_size < 1:
        raise ConfigError(f"--max-size must be positive, got {max_size}")
    say = (lambda _m: None) if quiet or log is None else log
    started = time.time()
    overrides = parse_overrides(overrides)
    if metric is not None:
        overrides["train.metric"] = metric
    cfg = make_config(preset, overrides)
    params = search_space(preset, overrides)
    if max_size is not None and cfg.model != "bag":
        raise ConfigError(f"--max-size quantizes bag-of-n-grams models; this preset trains model={cfg.model}")
    metric = cfg.train.metric or TASKS[cfg.task].default_metric
    stem = cfg.dataset or (Path(cfg.data.train).name.split(".")[0] if cfg.data.train else "sample")
    out = Path(out) if out is not None else Path("runs") / f"tune-{stem}-{cfg.model}"
    try:
        (out / "trials").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the tuning folder ({e.strerror})", path=out) from None
    s = Study(str(preset) if preset is not None else None, overrides, params, out,
              storage or f"sqlite:///{(out / 'study.db').resolve()}", metric,
              "minimize" if metric in LOWER_IS_BETTER else "maximize", budget, trials, seed, started, quiet, max_size)
    study = s.load()
    what = {"preset": s.preset, "overrides": {k: v for k, v in overrides.items()}, "metric": metric,
            "space": [p.describe() for p in params], "max_size": max_size}
    before = study.user_attrs.get("what")
    if before is None:
        study.set_user_attr("what", json.loads(json.dumps(what, default=str)))
    elif before != json.loads(json.dumps(what, default=str)):
        raise ConfigError(f"{out} holds a study of another preset, overrides or space ({before['preset']}); "
                          "tune into another --out")
    cut = _fail_cut_trials(study)
    done = _finished(study)
    say(f"tuning {s.preset or 'the default preset'} on valid {metric} ({s.direction}), "
        + (f"budget {_clock(budget)}" if budget else f"{trials} trials")
        + (f", {done} trials finished before" if done else "") + (f", {cut} cut trial(s) marked failed" if cut
                                                                  else ""))
    for p in params:
        say(f"  {p.describe()}")
    if workers == 1:
        work(s)
    else:
        import multiprocessing

        threads = overrides.get("threads") or max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")
        procs = [context.Process(target=_work_process, args=(s, threads)) for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise ConfigError(f"{sum(bool(p.exitcode) for p in procs)} of {workers} workers failed (see above)")
    return finish(s, say)


def finish(s: Study, say) -> dict:
    """Link the best trial as DIR/best, evaluate it on test once, write best.yaml, report.md, the plots and
    result.json."""
    import yaml
    from optuna.trial import TrialState

    from seqlab import api

    study = s.load()
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise ConfigError("no trial finished within the budget: give a larger --budget")
    best = study.best_trial
    quantized = best.user_attrs.get("quantized")
    best_dir = Path(quantized["run"]) if quantized else s.out / "trials" / str(best.number)
    link = s.out / "best"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    try:
        link.symlink_to(Path("trials") / best_dir.name, target_is_directory=True)
    except OSError:  # no symbolic links here: a copy
        shutil.copytree(best_dir, link)
    tree = load_yaml(best_dir / "config.yaml")
    tree.setdefault("train", {})["max_seconds"] = None  # the budget's share, not a choice of the search
    head = f"# seqlab tune: trial {best.number} of {s.name}, valid {s.metric} {best.value:.6g}\n"
    if quantized:
        head += (f"# scored quantized to fit --max-size: seqlab quantize RUN --out RUN_Q --dsub {quantized['dsub']}"
                 + (f" --cutoff {quantized['cutoff']}" if quantized["cutoff"] else "") + "\n")
    atomic_write_text(s.out / "best.yaml", head + yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))
    test = None
    try:
        test = api.evaluate(best_dir)
    except ConfigError as e:
        if "split" not in e.message:
            raise
    counts = {state: sum(t.state.name == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL")}
    result = {"study": s.name, "storage": s.storage, "metric": s.metric, "direction": s.direction,
              "best_trial": best.number, "best_params": best.params, "valid": best.value,
              "test": {k: v for k, v in (test or {}).items() if isinstance(v, (int, float))} or None,
              "trials": counts, "seconds": time.time() - s.started, "budget_seconds": s.budget,
              "best_run": str(best_dir), "best_bytes": _run_bytes(best_dir), "max_size": s.max_size}
    plots = _plots(study, s.out)
    _write_report(s, study, result, plots)
    atomic_write_text(s.out / "result.json", json.dumps(result, indent=1, default=str))
    headline = "" if not result["test"] else "  |  test " + "  ".join(
        f"{k} {v:.4f}" for k, v in result["test"].items() if k == s.metric or k in ("accuracy", "loss"))
    say(f"best: trial {best.number}, valid {s.metric} {best.value:.4f}{headline}  ({counts['COMPLETE']} "
        f"complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed, {_clock(result['seconds'])})")
    say(f"best run: {link}  |  preset: {s.out / 'best.yaml'}  |  report: {s.out / 'report.md'}")
    return result


def _plots(study, out: Path) -> list[str]:
    """Optuna's optimisation history and parameter importances as PNGs (the second from 4 complete trials)."""
    import matplotlib
    from optuna.trial import TrialState

    matplotlib.use("Agg")  # no display: tune is a command, not a library call inside a notebook
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ov

    made = []
    plots = [("history.png", ov.plot_optimization_history)]
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= 4:  # fewer: all would look equal
        plots.append(("importances.png", ov.plot_param_importances))
    for name, plot in plots:
        try:
            ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        figure.set_size_inches(8, 4.5)
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
        made.append(name)
    return made


def _write_report(s: Study, study, result: dict, plots: list[str]) -> None:
    keys = [p.key for p in s.params]
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        value = t.value if t.value is not None else (t.intermediate_values[max(t.intermediate_values)]
                                                     if t.intermediate_values else None)
        rows.append(f"| {t.number} | {t.state.name.lower()} | {_fmt(value) if value is not None else ''} | "
                    f"{len(t.intermediate_values)} | {f'{seconds:.1f}' if seconds is not None else ''} | "
                    + " | ".join(_fmt(t.params.get(k, "")) for k in keys) + " |")
    test = {k: v for k, v in (result["test"] or {}).items() if k != "examples"}
    lines = [f"# seqlab tune: {s.name}", "",
             f"Preset {s.preset or '(default)'}, overrides {s.overrides or 'none'}; valid {s.metric} "
             f"({s.direction}); storage {s.storage}.", "",
             f"Best: trial {result['best_trial']}, valid {s.metric} {result['valid']:.6g}"
             + (", test " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()) if test else ", no test split")
             + f"; params {result['best_params']}.", "",
             f"Trials: {result['trials']['COMPLETE']} complete, {result['trials']['PRUNED']} pruned, "
             f"{result['trials']['FAIL']} failed, in {result['seconds']:.0f} s"
             + (f" (budget {result['budget_seconds']:.0f} s)." if result["budget_seconds"] else "."), "",
             "Search space:", "", *[f"- {p.describe()}" for p in s.params], "",
             "| trial | state | valid | evaluations | seconds | " + " | ".join(keys) + " |",
             "|---:|---|---:|---:|---:|" + "---:|" * len(keys), *rows, ""]
    lines += [f"![{name}]({name})" for name in plots]
    atomic_write_text(s.out / "report.md", "\n".join(lines) + "\n")

