"""One study's workers: `Study` (what every worker process needs), the trial loop (`work`), cut trials failed
by pid or heartbeat, and `--max-size`'s quantization of a trial (`fit_size`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
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

from seqlab.errors import ConfigError, SeqlabError
from seqlab.tuning.space import Param


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

        if self.__dict__.get("_storage") is not None:  # one engine per process, shared by its loads
            return self.__dict__["_storage"]
        if "://" not in self.storage:
            raise ConfigError(f"--storage must be a database URL such as sqlite:///study.db, got {self.storage!r}")
        try:
            self.__dict__["_storage"] = optuna.storages.RDBStorage(self.storage, heartbeat_interval=5, grace_period=20)
        except Exception as e:  # sqlalchemy's errors: a folder that does not exist, no permission, a bad URL
            first = str(e).splitlines()[0][:200] if str(e) else e.__class__.__name__
            raise ConfigError(f"cannot open the study's storage {self.storage} ({first})") from None
        return self.__dict__["_storage"]

    def __getstate__(self) -> dict:
        """A worker process opens its own engine."""
        return {k: v for k, v in self.__dict__.items() if k != "_storage"}

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
