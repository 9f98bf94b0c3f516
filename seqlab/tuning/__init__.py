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

import json
import os
import time
from pathlib import Path

from seqlab.config import make_config, parse_overrides
from seqlab.errors import ConfigError
from seqlab.tuning.report import finish
from seqlab.tuning.space import Param, parse_budget, parse_param, parse_size, search_space
from seqlab.tuning.study import Study, _clock, _fail_cut_trials, _finished, _optuna_quiet, _work_process, work

__all__ = ["Param", "parse_budget", "parse_param", "parse_size", "search_space", "tune"]


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
