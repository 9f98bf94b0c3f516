"""The end of a study: DIR/best, its one test evaluation, best.yaml, report.md, Optuna's plots, result.json."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from seqlab.config import load_yaml
from seqlab.data.io import atomic_write_text
from seqlab.errors import ConfigError
from seqlab.tuning.study import Study, _clock, _fmt, _run_bytes


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
