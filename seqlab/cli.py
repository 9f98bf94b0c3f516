"""`seqlab VERB ...`: argv -> one call of the Python API. No logic of its own.

Exit codes: 0 done, 2 a user error (one line on stderr), 3 training interrupted by a signal (a
checkpoint was written; resume with --resume), 1 a bug (traceback).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from seqlab.errors import DataError, Interrupted, SeqlabError

_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes of argv that are not UTF-8 (surrogateescape)


def _warning_line(message, category, filename, lineno, file=None, line=None):
    print(f"seqlab: warning: {message}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"seqlab: {message}", file=sys.stderr)


def _read_inputs(texts: list[str], file: str | None) -> list[str]:
    if file is None:
        if not texts:
            raise DataError("give TEXT arguments or --file F")
        for i, t in enumerate(texts, 1):
            if not t.strip():
                raise DataError(f"empty text (argument {i})")
            if _UNDECODABLE.search(t):
                raise DataError(f"not valid UTF-8 text (argument {i})")
        return texts
    from seqlab.data.io import read_lines

    out = []
    for number, line, problem in read_lines(file, encoding="UTF-8"):
        if problem is not None:  # undecodable bytes, a NUL byte, an overlong line
            raise DataError(problem.split(" (")[0], path=file, line=number)
        if not line.strip():
            raise DataError("empty text", path=file, line=number)
        out.append(line)
    if not out:
        raise DataError("no texts in file", path=file)
    return out


def cmd_train(a: argparse.Namespace) -> None:
    from seqlab import api

    preset, overrides = _preset_and_overrides(a.args)
    if a.skip_bad_rows:
        overrides.append("data.skip_bad_rows=true")
    api.train(preset, overrides, out=a.out, resume=a.resume, quiet=a.quiet)


def _preset_and_overrides(args: list[str]) -> tuple[str | None, list[str]]:
    preset, overrides = None, []
    for arg in args:
        if "=" in arg:
            overrides.append(arg)
        elif preset is None:
            preset = arg
        else:
            raise SeqlabError(f"unexpected argument {arg!r}: give one PRESET.yaml and key=value overrides")
    return preset, overrides


def cmd_tune(a: argparse.Namespace) -> None:
    from seqlab.tuning import parse_budget, parse_size, tune

    preset, overrides = _preset_and_overrides(a.args)
    tune(preset, overrides, out=a.out, budget=None if a.budget is None else parse_budget(a.budget),
         trials=a.trials, metric=a.metric, workers=a.workers, storage=a.storage, seed=a.seed, quiet=a.quiet,
         max_size=None if a.max_size is None else parse_size(a.max_size))


def cmd_evaluate(a: argparse.Namespace) -> None:
    from seqlab import api

    rep = api.evaluate(a.run_dir, data=a.data, split=a.split, skip_bad_rows=a.skip_bad_rows, log=_note,
                       overrides=a.overrides)
    if a.json:
        print(json.dumps(rep))
        return
    scalars = {k: v for k, v in rep.items() if isinstance(v, (int, float))}
    print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scalars.items()))
    if "per_class" in rep:
        width = max(8, *(len(k) for k in rep["per_class"]))
        print(f"\n{'label':<{width}}  precision  recall     f1  support")
        for lab, r in rep["per_class"].items():
            print(f"{lab:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['support']:7d}")
    if "confusion_matrix" in rep:
        labels, m = rep["confusion_matrix"]["labels"], rep["confusion_matrix"]["matrix"]
        w = max(6, *(len(x) for x in labels))
        print("\nconfusion matrix (rows: gold, columns: predicted)")
        print(f"{'':<{w}} " + " ".join(f"{x:>{w}}" for x in labels))
        for lab, row in zip(labels, m, strict=True):
            print(f"{lab:<{w}} " + " ".join(f"{v:>{w}}" for v in row))


def _load(a: argparse.Namespace, verb: str):
    """The run's predictor; a SeqlabError when `verb` is not made for it (`seqlab predict` takes any run)."""
    from seqlab import api

    if getattr(a, "onnx", False):
        from seqlab.serve.export import load_onnx

        predictor = load_onnx(a.run_dir)
    else:
        predictor = api.load(a.run_dir)
    if verb not in ("predict", predictor.verb):
        raise SeqlabError(f"{a.run_dir} is a {predictor.task_name} run, which `seqlab {verb}` does not take; "
                          f"use `seqlab {predictor.verb}`")
    return predictor


def _image_inputs(paths: list[str]) -> list[str]:
    """Image files and folders -> the image files (folders recursively, by extension; see
    `seqlab.data.images.image_files`), with a note on stderr for each folder's skipped non-image files. Every
    image is decoded before anything is printed: one unreadable file stops all with its name (exit 2)."""
    from seqlab.data.images import image_files

    files, skipped = image_files(paths)
    for folder, other in skipped.items():
        shown = ", ".join(Path(f).relative_to(folder).as_posix() for f in other[:3])
        more = f" and {len(other) - 3} more" if len(other) > 3 else ""
        _note(f"{folder}: skipped {len(other)} file{'s' if len(other) > 1 else ''} without an image extension "
              f"({shown}{more})")
    return files


def _predict(a: argparse.Namespace, verb: str, items: list, options: dict) -> None:
    """Predict `items` with the run and print one line (or JSON object) per item; with `--plot-attention`
    draw each item's attention, with `--explain` print each token's weight."""
    predictor = _load(a, verb)
    if predictor.inputs.kind == "image":
        items = _image_inputs(items)
    plot = getattr(a, "plot_attention", None)
    if plot is not None:
        from seqlab.report.attention import check_plot_path

        check_plot_path(plot)  # before any work: a bad name is one line, not a traceback after predicting
    if plot is not None or getattr(a, "explain", False):
        options["attention"] = True
    options = {k: v for k, v in options.items() if v is not None}
    field = "image" if predictor.inputs.kind == "image" else "text"  # the key of the input in --json lines
    for i, (item, r) in enumerate(zip(items, predictor.predict(items, **options), strict=True), 1):
        line = predictor.format_text(r)
        if plot is not None:
            from seqlab.report.attention import plot_result_attention

            out = Path(plot)
            if len(items) > 1:  # one picture per item: OUT-1.png, OUT-2.png, ...
                out = out.with_name(f"{out.stem}-{i}{out.suffix}")
            picture = predictor.load_input(item) if predictor.inputs.kind == "image" else None
            plot_result_attention(predictor.attention, r, picture, out, title=line)
            print(f"seqlab: attention of input {i} written to {out}", file=sys.stderr)
        if a.json:
            shown = {k: v for k, v in r.items() if plot is None or k not in ("attention", "src_tokens", "tgt_tokens",
                                                                             "words", "grid")}
            print(json.dumps({field: str(item), **shown}, ensure_ascii=False))
            continue
        print(line)
        if getattr(a, "explain", False) and predictor.attention == "tokens":  # each token, its weight, a bar
            width = max((len(tok) for tok, _ in r["attention"]), default=0)
            for tok, w in r["attention"]:
                print(f"  {tok:<{width}}  {w:.3f}  {'#' * round(w * 40)}")


def cmd_predict(a: argparse.Namespace) -> None:
    _predict(a, "predict", _read_inputs(a.texts, a.file), {"top_k": a.top_k, "threshold": a.threshold})


def cmd_translate(a: argparse.Namespace) -> None:
    _predict(a, "translate", _read_inputs(a.texts, a.file), {"beam": a.beam})


def cmd_nearest(a: argparse.Namespace) -> None:
    _predict(a, "nearest", _read_inputs(a.texts, a.file), {"top_k": a.top_k})


def cmd_caption(a: argparse.Namespace) -> None:
    _predict(a, "caption", a.images, {"beam": a.beam})


def cmd_generate(a: argparse.Namespace) -> None:
    predictor = _load(a, "generate")
    given = {"max_new_tokens": a.max_new_tokens, "temperature": a.temperature, "top_k": a.top_k,
             "top_p": a.top_p, "seed": a.seed}
    pieces = predictor.stream(a.prompt, **{k: v for k, v in given.items() if v is not None})
    first = next(pieces, "")  # a bad prompt or option fails here, before anything is printed
    print(a.prompt + first, end="", flush=True)
    for piece in pieces:
        print(piece, end="", flush=True)
    print()


def cmd_info(a: argparse.Namespace) -> None:
    from seqlab import api

    i = api.info(a.run_dir)
    if a.json:
        print(json.dumps(i))
        return
    s = i["summary"]
    print(f"run        {i['run_dir']}")
    print(f"task       {i['task']}   model {i['model']}   data {i['dataset']}")
    print(f"status     {i['status']}")
    if s:
        print(f"parameters {s.get('parameters', 0):,}   wall {s.get('wall_seconds', 0):.1f} s")
        counts = s.get("counts", {})
        print("examples   " + ", ".join(f"{k.removesuffix('_examples')} {v:,}" for k, v in counts.items()
                                        if k.endswith("_examples")))
        for split, m in s.get("results", {}).items():
            print(f"{split:<10} " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in m.items() if isinstance(v, (int, float))))
    print(f"checkpoints {', '.join(i['checkpoints']) or '-'}")
    print(f"files      {', '.join(i['files'])}")


SERVE_OPTIONS = ("batch_wait_ms", "max_batch", "max_batch_chars", "threads", "max_texts", "max_chars", "max_new_tokens",
                 "max_beam", "max_body_bytes", "drain_seconds", "max_pixels", "max_pending", "request_timeout_s")


def cmd_serve(a: argparse.Namespace) -> None:
    try:
        from seqlab.serve.app import ServeConfig, serve
    except ImportError as e:
        raise SeqlabError(f"seqlab serve needs the serve extra ({e.name} is missing): "
                          "pip install 'seqlab[serve]'") from None
    given = {k: getattr(a, k) for k in SERVE_OPTIONS if getattr(a, k) is not None}
    serve(a.run_dirs, host=a.host, port=a.port, config=ServeConfig(**given))


def cmd_export(a: argparse.Namespace) -> None:
    from seqlab.serve.export import export_onnx

    m = export_onnx(a.run_dir, a.out, exporter=a.exporter, examples=a.examples)
    print(f"{m['task']} model {m['model']} exported to {a.out} ({m['exporter']} exporter, opset "
          f"{m['opset']}); ONNX Runtime matches PyTorch within {m['max_abs_diff']:.1e} on "
          f"{'; '.join(m['verified_on'])}")


def cmd_presets(a: argparse.Namespace) -> None:
    from seqlab import api

    listing = api.listing()
    shown = [a.what] if a.what else ["presets", "datasets", "keys"]
    if a.json:
        print(json.dumps({k: listing[k] for k in shown}, default=str))
        return
    if "presets" in shown:
        print("presets (seqlab train NAME [key=value ...]; a path to a YAML file works too):")
        width = max(len(p["name"]) for p in listing["presets"])
        for p in listing["presets"]:
            print(f"  {p['name']:<{width}}  {p['about']}")
    if "datasets" in shown:
        print("\nnamed datasets (dataset=NAME; $SEQLAB_DATA/NAME/ is looked in first, then the cache, then the "
              "download address):")
        for d in listing["datasets"]:
            print(f"  {d['name']}  ({d['format']})")
            for split, files in d["splits"].items():
                for f in files:
                    found = f"{f['where']}: {f['path']} ({f['bytes'] / 1e6:,.1f} MB)" if f["path"] else \
                        f"not here; downloads from {f['where']}"
                    print(f"      {split:<5}  {found}")
    if "keys" in shown:
        print("\nconfig keys (key=value; task.* and model.* depend on the task and model):")
        section = None
        for k in listing["keys"]:
            if k["section"] != section:
                section = k["section"]
                print(f"  [{section}]")
            about = f"{k['type']}; {k['help']}" if k["help"] else k["type"]
            print(f"    {k['key']} = {json.dumps(k['default'])}    {about}")


def cmd_completion(a: argparse.Namespace) -> None:
    import shtab

    print(shtab.complete(build_parser(), shell=a.shell))


def cmd_quantize(a: argparse.Namespace) -> None:
    from seqlab import api

    q = api.quantize(a.run_dir, a.out, cutoff=a.cutoff, dsub=a.dsub, log=_note)
    line = (f"quantized {a.run_dir} to {a.out}: {q['rows']:,} embedding rows, dsub {q['dsub']}; "
            f"{q['bytes_before'] / 1e6:,.2f} MB -> {q['bytes_after'] / 1e6:,.2f} MB "
            f"({q['bytes_before'] / max(q['bytes_after'], 1):.1f}x smaller)")
    if "test_after" in q:
        metric = next(k for k in ("accuracy", "p@1") if k in q["test_after"])
        line += f"; test {metric} {q['test_before'][metric]:.4f} -> {q['test_after'][metric]:.4f}"
    print(line)


def cmd_report(a: argparse.Namespace) -> None:
    from seqlab.report.runs import write_report

    print(f"report written to {write_report(a.run_dirs, a.out, evaluate=not a.no_eval)}")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`seqlab: error: ... (see `seqlab VERB --help`)`), exit 2."""

    def error(self, message: str):
        self.exit(2, f"seqlab: error: {message} (see `{self.prog} --help`)\n")


def _train_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("args", nargs="*", metavar="[PRESET] [key=value]",
                   help="a preset (a name such as sst2/bag, see `seqlab presets`, or a YAML file) and dotted "
                        "overrides (train.epochs=3 model=cnn data.train=my.csv ...), in any order")
    t.add_argument("--out", help="run directory to create (default runs/<data>-<model>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped")
    t.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    t.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) malformed rows")


def _tune_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("args", nargs="*", metavar="[PRESET] [key=value]",
                   help="a preset and dotted overrides, as for `seqlab train`; an overridden key is fixed, not "
                        "searched; the search space: TrainConfig.space, the model's space and the preset's tune:")
    t.add_argument("--budget", help="wall-clock time for the trials: 10m, 90s, 1h or seconds (like fastText's "
                                    "-autotune-duration)")
    t.add_argument("--trials", type=int, help="stop once this many trials finished (complete or pruned)")
    t.add_argument("--metric", help="the valid metric to optimise (default: the task's, e.g. accuracy)")
    t.add_argument("--workers", type=int, default=1, help="trial processes on this machine (default 1)")
    t.add_argument("--storage", metavar="URL", help="an Optuna RDB URL shared by processes on several machines "
                                                    "(default sqlite:///OUT/study.db)")
    t.add_argument("--out", help="the tuning folder: trials/N, best, best.yaml, report.md (default "
                                 "runs/tune-<data>-<model>); the same --out continues its study")
    t.add_argument("--max-size", help="bag models: a trial's model and vocabulary larger than this (2M, 500K) is "
                                      "quantized to fit and scored so (like fastText's -autotune-modelsize)")
    t.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    t.add_argument("--quiet", action="store_true", help="no line per trial")


def _evaluate_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("run_dir", help="a run directory")
    e.add_argument("overrides", nargs="*", metavar="data.KEY=VALUE",
                   help="how to read --data when its layout differs from the training data's (data.format=, "
                        "data.header=, data.label_column=, data.text_columns=, data.encoding=, ...)")
    e.add_argument("--data", help="a file (read as the run's training data was, or as data.* says) or a "
                                  "dataset name")
    e.add_argument("--split", default="test", help="the split to evaluate (default test)")
    e.add_argument("--json", action="store_true", help="one JSON object")
    e.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) malformed rows")


def _inputs_arguments(r: argparse.ArgumentParser, what: str) -> None:
    r.add_argument("run_dir", help="a run directory")
    r.add_argument("texts", nargs="*", metavar="INPUT", help=what)
    r.add_argument("--file", help="one input per line (UTF-8)")
    r.add_argument("--json", action="store_true", help="one JSON object per input")


def _predict_arguments(r: argparse.ArgumentParser) -> None:
    _inputs_arguments(r, "texts (or image files and folders of them, or prompts) to predict on")
    r.add_argument("--top-k", type=int, help="labels (tags) to return per input, best first (default 1)")
    r.add_argument("--threshold", type=float,
                   help="also print the labels whose probability reaches it (multi-label runs: each label's "
                        "threshold tuned on valid, when not given)")
    r.add_argument("--explain", action="store_true",
                   help="show each token's attention weight (models with attention pooling or [CLS])")
    r.add_argument("--plot-attention", metavar="OUT.png",
                   help="draw the model's attention (OUT-1.png, ... for several inputs)")
    r.add_argument("--onnx", action="store_true",
                   help="RUN_DIR is a model.onnx written by `seqlab export`: run it with ONNX Runtime")


def _generate_arguments(g: argparse.ArgumentParser) -> None:
    g.add_argument("run_dir", help="a language-model run directory")
    g.add_argument("--prompt", required=True, help="the text to continue")
    g.add_argument("--max-new-tokens", type=int, help="tokens to generate (default 200)")
    g.add_argument("--temperature", type=float, help="0: always the most likely token; higher: more varied")
    g.add_argument("--top-k", type=int, help="draw only from the K most likely tokens")
    g.add_argument("--top-p", type=float, help="draw only from the smallest set of tokens with probability >= P")
    g.add_argument("--seed", type=int, help="the same seed gives the same text")


def _translate_arguments(tr: argparse.ArgumentParser) -> None:
    _inputs_arguments(tr, "sentences to translate")
    tr.add_argument("--beam", type=int, help="beam size (default: the run's task.beam; 1: greedy)")
    tr.add_argument("--plot-attention", metavar="OUT.png",
                    help="draw the source x output attention as a heatmap (OUT-1.png, ... for several)")


def _nearest_arguments(n: argparse.ArgumentParser) -> None:
    _inputs_arguments(n, "words, or analogies as sums of words (\"king - man + woman\")")
    n.add_argument("--top-k", type=int, help="how many neighbours (default 10)")


def _caption_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("run_dir", help="a captioning run directory")
    c.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files (any size and mode: greyscale, transparent on white, 16-bit, CMYK, EXIF-"
                        "rotated), or folders: every image file under them, recursively, sorted (other files "
                        "skipped with a note); an unreadable image stops all before any output (exit 2)")
    c.add_argument("--beam", type=int, help="beam size (default: the run's task.beam; 1: greedy)")
    c.add_argument("--plot-attention", metavar="OUT.png",
                   help="draw each word's attention over the picture (OUT-1.png, ... for several images)")
    c.add_argument("--json", action="store_true", help="one JSON object per image")


def _serve_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="the runs to serve")
    s.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="the port to listen on (default 8000)")
    s.add_argument("--batch-wait-ms", type=float, help="how long a batch waits for more requests (default 2)")
    s.add_argument("--max-batch", type=int, help="items per model call (1: no micro-batching)")
    s.add_argument("--max-batch-chars", type=int, help="characters per model call: a larger request is split "
                   "and small requests run between its parts (default 16000)")
    s.add_argument("--threads", type=int, help="torch threads (default: the runs' config)")
    s.add_argument("--max-texts", type=int, help="texts or sentences per request")
    s.add_argument("--max-chars", type=int, help="characters per text, sentence or prompt")
    s.add_argument("--max-new-tokens", type=int, help="tokens an lm may generate per request")
    s.add_argument("--max-beam", type=int, help="largest beam size of a translate request")
    s.add_argument("--max-body-bytes", type=int, help="largest request body (JSON or image upload)")
    s.add_argument("--drain-seconds", type=float, help="on SIGTERM, how long in-flight requests may take")
    s.add_argument("--max-pixels", type=int, help="largest image upload in pixels, read from its header before "
                                                  "decoding (default 4096x4096); larger: 413")
    s.add_argument("--max-pending", type=int, help="requests one model holds at once, waiting or running "
                                                   "(default 64); more: 503 with Retry-After")
    s.add_argument("--request-timeout-s", type=float, help="a request not answered by then gets 503 with "
                                                         "Retry-After (default 30)")


def _export_arguments(x: argparse.ArgumentParser) -> None:
    x.add_argument("run_dir", help="a run directory")
    x.add_argument("--format", choices=["onnx"], default="onnx", help="the format (onnx)")
    x.add_argument("--out", required=True, metavar="DIR/FILE.onnx",
                   help="the model file, in a folder of its own: its config and vocabulary are written beside it")
    x.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], default="auto",
                   help="auto: torch.export (dynamo) where it works, else the TorchScript-based exporter")
    x.add_argument("--examples", type=int, default=64, help="examples of the run's data to verify on")


def _quantize_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("run_dir", help="a bag-of-n-grams run directory")
    q.add_argument("--out", required=True, metavar="RUN_DIR_Q", help="the quantized run directory to create")
    q.add_argument("--cutoff", type=int, help="keep this many embedding rows (largest norms; default: all)")
    q.add_argument("--dsub", type=int, default=2, help="numbers per sub-vector, one byte each (default 2)")


def _report_arguments(rp: argparse.ArgumentParser) -> None:
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="the runs to report on")
    rp.add_argument("--out", help="folder for report.md and its PNGs (default RUN_DIR/report, or ./report)")
    rp.add_argument("--no-eval", action="store_true",
                    help="only what the run directory holds (no confusion matrix or decoded examples)")


def _info_arguments(i: argparse.ArgumentParser) -> None:
    i.add_argument("run_dir", help="a run directory")
    i.add_argument("--json", action="store_true", help="one JSON object")


def _presets_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=["presets", "datasets", "keys"],
                   help="only the presets, the named datasets or the config keys (default: all three)")
    p.add_argument("--json", action="store_true", help="one JSON object")


def _completion_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("shell", choices=["bash", "zsh"], help="the shell (e.g. `eval \"$(seqlab completion bash)\"`)")


VERBS: dict[str, tuple[str, Callable, Callable]] = {  # verb -> (help, arguments, command)
    "train": ("train a model (default: the bag-of-n-grams classifier on the bundled sample)", _train_arguments,
              cmd_train),
    "tune": ("search a preset's hyper-parameters within a budget (Optuna), scored on valid, best run tested once",
             _tune_arguments, cmd_tune),
    "evaluate": ("metrics of a run on a split, a named dataset or a file", _evaluate_arguments, cmd_evaluate),
    "predict": ("predict with any run: labels, tags, translations, continuations, captions", _predict_arguments,
                cmd_predict),
    "generate": ("continue a prompt with a language model, printing tokens as they come", _generate_arguments,
                 cmd_generate),
    "translate": ("translate sentences with a translation run", _translate_arguments, cmd_translate),
    "caption": ("describe images with a captioning run", _caption_arguments, cmd_caption),
    "nearest": ("the nearest words of words or of analogies, with a word-vectors run", _nearest_arguments,
                cmd_nearest),
    "serve": ("serve runs over HTTP (FastAPI): /v1/models/NAME/predict, a page to try them at /, docs at /docs",
              _serve_arguments,
              cmd_serve),
    "export": ("export a run's model to ONNX, verified against PyTorch", _export_arguments, cmd_export),
    "quantize": ("compress a bag-of-n-grams run (pruned rows, product-quantized embedding), as fasttext quantize",
                 _quantize_arguments, cmd_quantize),
    "report": ("learning curves, confusion matrix, model card; several runs compared", _report_arguments,
               cmd_report),
    "info": ("what a run directory holds", _info_arguments, cmd_info),
    "presets": ("the presets, named datasets and config keys (with defaults and help)", _presets_arguments,
                cmd_presets),
    "completion": ("print a shell completion script for bash or zsh", _completion_arguments, cmd_completion),
}


def verb_parser(verb: str) -> argparse.ArgumentParser:
    """The parser of one verb; options and positional arguments may come in any order."""
    help_, arguments, command = VERBS[verb]
    p = _Parser(prog=f"seqlab {verb}", description=help_[0].upper() + help_[1:] + ".")
    arguments(p)
    p.set_defaults(func=command)
    return p


def build_parser() -> argparse.ArgumentParser:
    """All verbs as subcommands of one parser: what `seqlab --help` and shell completion show."""
    from seqlab import __version__

    p = _Parser(prog="seqlab", description="Classic sequence models: train, evaluate, predict, serve.")
    p.add_argument("--version", action="version", version=f"seqlab {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    for verb, (help_, arguments, _) in VERBS.items():
        arguments(sub.add_parser(verb, help=help_, description=help_[0].upper() + help_[1:] + "."))
    return p


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _warning_line
    warnings.filterwarnings("always", category=UserWarning, module=r"seqlab(\.|$)")  # each run's notes, every time
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "--version"):
        try:
            build_parser().parse_args(argv or ["--help"])
        except SystemExit as e:
            return int(e.code or 0)
    if argv[0] not in VERBS:
        import difflib

        near = difflib.get_close_matches(argv[0], list(VERBS), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f" (verbs: {', '.join(VERBS)})"
        print(f"seqlab: error: unknown verb {argv[0]!r}{hint}", file=sys.stderr)
        return 2
    try:
        args = verb_parser(argv[0]).parse_intermixed_args(argv[1:])
    except SystemExit as e:
        return int(e.code or 0)
    try:
        args.func(args)
    except Interrupted as e:  # not an error: the run can be resumed
        print(f"seqlab: {e}", file=sys.stderr)
        return e.exit_code
    except SeqlabError as e:
        print(f"seqlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("seqlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
