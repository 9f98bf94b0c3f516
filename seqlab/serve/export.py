"""Export a run's model to ONNX, verified against PyTorch with ONNX Runtime.

    seqlab export RUN_DIR --format onnx --out exports/sst2-cnn/model.onnx

Exported: every model whose predictor gives an `export_spec()` (`seqlab.tasks.base.ExportSpec`: its input
names, dynamic axes and how items become inputs): the `classify` models (`bag` takes the lecture's flat
`text` + `offsets`; `cnn`, `rnn` and `transformer` take padded `tokens` + `lengths`), the `tag` models
(`words`, `chars`, `lengths`) and the `image` ConvNet (`images`, already scaled and normalised). Batch,
sequence and word-length axes are dynamic. The output is `logits`: (B, C), or (B, T, K) for a tagger.
Models that decode step by step (translate, lm, caption) are refused with one line.

Beside the .onnx file go what a runtime needs to turn text into those inputs and logits back into labels:
the run's `config.yaml`, its vocabulary/labels file (`vocab.json` or `labels.json`) and `export.json`
(input and output names, dynamic axes, exporter, opset, the parity check). One exported model per folder.
`load_onnx(FILE)` rebuilds the task's predictor around an ONNX Runtime session, so that
`seqlab predict FILE.onnx TEXT...` runs the exported model with the run's own tokenization and output.

The exporter: `dynamo` (torch.export), `torchscript` (tracing), or `auto`: dynamo where it works, else the
TorchScript-based one. The export verifies itself before anything is written: ONNX Runtime's logits must
equal PyTorch's (max abs diff <= `tolerance`) on real examples of the run's data (the shortest beside a
long one, all of up to `examples` of them in one batch, the first one alone), else it fails with the diff.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seqlab.api import load, read_run_config
from seqlab.data.io import atomic_write_text
from seqlab.errors import CheckpointError, ConfigError, SeqlabError
from seqlab.tasks.base import ExportSpec

TOLERANCE = 1e-4
EXPORTERS = ("auto", "dynamo", "torchscript")
TORCHSCRIPT_OPSET = 17
META = "export.json"
LONG = 24  # tokens of the long example the exporter traces with and the parity check pads against
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise SeqlabError("ONNX needs onnx and onnxruntime: pip install 'seqlab[serve]'") from None
    return onnxruntime


# ---------------------------------------------------------------------------------------------- export
def ort_session(path: str | os.PathLike, threads: int | None = None):
    ort = _onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: no optimiser chatter on stderr
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _quiet():
    """Silence the exporters while they run: their progress lines, warnings, log records and the graph
    dumps their C++ side prints straight to file descriptors 1 and 2. Errors still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        logger.setLevel(level)


def _export(model: nn.Module, inputs: tuple[Tensor, ...], path: Path, names: tuple[str, ...],
            axes: dict[str, dict[int, str]], exporter: str) -> None:
    options: dict[str, Any] = {"external_data": False} if exporter == "dynamo" else {
        "opset_version": TORCHSCRIPT_OPSET}
    with _quiet(), torch.no_grad():
        torch.onnx.export(model, inputs, str(path), input_names=list(names), output_names=["logits"],
                          dynamic_axes=axes, dynamo=exporter == "dynamo", **options)


def _verify(model: nn.Module, session, names: tuple[str, ...], cases: list[tuple[str, tuple[Tensor, ...]]],
            tolerance: float) -> float:
    """The largest |ONNX Runtime - PyTorch| over every case; SeqlabError when a case exceeds `tolerance`."""
    worst = 0.0
    for what, inputs in cases:
        with torch.no_grad():
            expected = model(*inputs).float().numpy()
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})[0]
        if got.shape != expected.shape:
            raise SeqlabError(f"ONNX Runtime's logits have shape {got.shape}, PyTorch's {expected.shape} "
                              f"({what})")
        diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        if not diff <= tolerance:  # also catches NaN
            raise SeqlabError(f"ONNX Runtime's logits differ from PyTorch's by up to {diff:.3g} "
                              f"(> {tolerance:g}) on {what}")
        worst = max(worst, diff)
    return worst


def _reason(e: Exception) -> str:
    """One line on why an exporter failed: torch.export's own summary line when it has one."""
    lines = [ANSI.sub("", line).strip() for line in str(e).splitlines()]
    lines = [line for line in lines if line]
    if "## Exception summary" in lines:
        lines = lines[lines.index("## Exception summary") + 1:]
    return lines[0][:300] if lines else type(e).__name__


def _cases(spec: ExportSpec, items: list, source: str) -> list[tuple[str, tuple[Tensor, ...]]]:
    """The batches the parity check runs: the shortest item beside a long one (the longest repeated to LONG
    tokens: padding, and a length no item may have), all items, and the first one alone. The first case is
    the one the exporter traces: a tracer can fold shapes of its example into the graph (a window count of 1,
    say), which the other cases then catch."""
    sizes = [spec.size(e) for e in items]
    short, long = items[int(np.argmin(sizes))], spec.longer(items[int(np.argmax(sizes))], LONG)
    return [(f"the shortest of the {source} beside a long one", spec.inputs([long, short])),
            (f"a batch of {len(items)} {source}", spec.inputs(items)),
            (f"the first of the {source} alone", spec.inputs(items[:1]))]


def export_onnx(run_dir: str | os.PathLike, out: str | os.PathLike, exporter: str = "auto",
                examples: int = 64, tolerance: float = TOLERANCE) -> dict:
    """Write the run's model to `out` (.onnx) with its config, vocabulary/labels and `export.json` beside
    it, after checking ONNX Runtime against PyTorch. Returns what `export.json` holds."""
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if examples < 1:
        raise ConfigError(f"examples must be at least 1, got {examples}")
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError("the exported file's name must end in .onnx", path=out)
    cfg = read_run_config(run_dir)
    folder = out.parent
    if str(out.parent) in ("", "."):
        raise ConfigError("export into a folder of its own (--out DIR/model.onnx): the run's config and vocabulary "
                          "are written beside the model", path=out)
    others = sorted(p.name for p in folder.glob("*.onnx") if p.name != out.name) if folder.is_dir() else []
    if others:
        raise ConfigError(f"the folder already holds another exported model ({others[0]}): its vocabulary "
                          f"would be overwritten; export into an empty folder", path=folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / META).is_file() \
            and folder.resolve() != Path(run_dir).resolve():
        mine = sorted(p.name for p in folder.iterdir())[0]
        raise ConfigError(f"the folder holds files of its own ({mine}, ...) that the export's config and vocabulary "
                          "could overwrite; export into an empty folder", path=folder)
    _onnxruntime()
    predictor = load(run_dir, device="cpu")
    spec = predictor.export_spec()
    if spec is None:
        raise ConfigError(f"a {cfg.task} model has no single-call ONNX form (its output is decoded step by step); "
                          "export covers models that map inputs to logits in one call", path=run_dir)
    model = predictor.model.float().eval()
    names, axes = spec.names, spec.axes
    items, source = predictor.example_inputs(examples)
    cases = _cases(spec, items, source)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{out.name}.partial-{os.getpid()}"
    failures: list[str] = []
    used, diff = None, None
    try:
        for name in ("dynamo", "torchscript") if exporter == "auto" else (exporter,):
            try:
                _export(model, cases[0][1], tmp, names, axes, name)
                diff = _verify(model, ort_session(tmp), names, cases, tolerance)
            except Exception as e:  # an exporter's failure is reported, then the next one is tried
                failures.append(f"{name}: {_reason(e)}")
                continue
            used = name
            break
        if used is None:
            raise SeqlabError(f"cannot export {cfg.task} model {cfg.model!r} to ONNX: {'; '.join(failures)}",
                              path=run_dir)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    import onnx

    meta = {
        "format": "onnx", "file": out.name, "task": cfg.task, "model": cfg.model, "run": str(run_dir),
        "inputs": list(names), "outputs": ["logits"], "dynamic_axes": {k: {str(a): v for a, v in d.items()}
                                                                        for k, d in axes.items()},
        "exporter": used, "exporters_failed": failures,
        "opset": max(o.version for o in onnx.load(str(out), load_external_data=False).opset_import
                     if o.domain in ("", "ai.onnx")),
        "max_abs_diff": diff, "tolerance": tolerance, "verified_on": [what for what, _ in cases],
        "torch": torch.__version__, "onnxruntime": _onnxruntime().__version__, "onnx": onnx.__version__,
    }
    if folder.resolve() != Path(run_dir).resolve():
        atomic_write_text(folder / "config.yaml", cfg.to_yaml())
        predictor.task.save_artifacts(folder)
    atomic_write_text(folder / META, json.dumps(meta, indent=1))
    return meta


# ---------------------------------------------------------------------------------------------- runtime
class OnnxModel(nn.Module):
    """An ONNX Runtime session behind the call a task's predictor makes: tensors in, logits out."""

    def __init__(self, path: str | os.PathLike, input_names: list[str], threads: int | None = None):
        super().__init__()
        self.session = ort_session(path, threads)
        self.input_names = list(input_names)

    def forward(self, *inputs: Tensor) -> Tensor:
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(self.input_names, inputs, strict=True)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def load_onnx(path: str | os.PathLike, threads: int | None = None):
    """The task's predictor (as `seqlab.load` returns) running an exported model with ONNX Runtime."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("ONNX file not found", path=path)
    try:
        meta = json.loads((path.parent / META).read_text(encoding="utf-8"))
        names = [str(n) for n in meta["inputs"]]
    except FileNotFoundError:
        raise CheckpointError(f"no {META} beside the ONNX file (write it with `seqlab export`)", path=path
                              ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{META} is corrupt ({e.__class__.__name__})", path=path.parent / META
                              ) from None
    _onnxruntime()
    try:
        model = OnnxModel(path, names, threads)
    except Exception as e:  # onnxruntime's own error for a file that is not a valid model
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise CheckpointError(f"not a loadable ONNX model ({reason})", path=path) from None
    return load(path.parent, device="cpu", model=model)
