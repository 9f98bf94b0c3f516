"""Checkpoints that are never half-written and never run code when loaded.

Layout inside a run directory::

    checkpoints/step-000001234/
        model.safetensors   weights (safetensors: tensors only)
        train_state.pt      optimiser, schedule, scaler, RNG states, data position, task state
        manifest.json       sha256 of both files, the step, the format version

A checkpoint is written into a temporary directory, every file fsynced, then renamed into place
(rename is atomic), so a crash leaves either the old set or the new one. Loading checks the manifest
hashes; a truncated or corrupted checkpoint is skipped with a warning in favour of the previous good
one. `train_state.pt` is read with `torch.load(weights_only=True)`: a crafted pickle is refused.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from seqlab.data.io import atomic_write_text, sha256_file
from seqlab.errors import CheckpointError

STATE_VERSION = 1
_PREFIX = "step-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Write a model's weights to `path` atomically (tied weights are stored once)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_model(model, str(tmp))
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load safetensors weights into `model`; a missing, corrupt or mismatched file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("weights file not found", path=path)
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read weights ({e})", path=path) from None
    except RuntimeError as e:  # shape mismatch
        raise CheckpointError(f"weights do not fit this model: {str(e).splitlines()[0]}", path=path) from None
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not fit this model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})",
            path=path,
        )


def load_state(path: str | os.PathLike) -> dict:
    """`torch.load(weights_only=True)`: tensors and plain containers only; anything else is refused."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError("training state not found", path=path) from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unpickling error"
        raise CheckpointError(
            f"refusing to load: the file holds Python objects other than tensors and plain data, which could "
            f"run code ({first[:160]})",
            path=path,
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"training state is corrupt ({str(e).splitlines()[0][:160]})", path=path) from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"training state has an unknown format (expected version {STATE_VERSION})", path=path)
    return state


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """Finished checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: nn.Module, state: dict, keep: int) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep`."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{step:09d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    for stale in root.glob(".tmp-*"):  # left by a process killed while writing (one writer per run)
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save({**state, "version": STATE_VERSION}, tmp / "train_state.pt")
        files = {}
        for name in ("model.safetensors", "train_state.pt"):
            _fsync_file(tmp / name)
            files[name] = sha256_file(tmp / name)
        atomic_write_text(tmp / "manifest.json", json.dumps({"version": STATE_VERSION, "step": step, "files": files}))
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(root)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _verify(ckpt: Path) -> None:
    try:
        manifest = json.loads((ckpt / "manifest.json").read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"manifest missing or unreadable ({e.__class__.__name__})", path=ckpt) from None
    for name, digest in files.items():
        f = ckpt / name
        if not f.is_file() or sha256_file(f) != digest:
            raise CheckpointError(f"{name} does not match its manifest hash (truncated or corrupted)", path=ckpt)


def load_latest_checkpoint(run_dir: str | os.PathLike, model: nn.Module) -> dict:
    """Load the newest checkpoint that verifies into `model`; return its training state. Broken ones are
    skipped with a warning; none at all is a CheckpointError."""
    ckpts = checkpoint_dirs(run_dir)
    if not ckpts:
        raise CheckpointError("no checkpoint to resume from", path=Path(run_dir) / "checkpoints")
    problems = []
    for ckpt in reversed(ckpts):
        try:
            _verify(ckpt)
            state = load_state(ckpt / "train_state.pt")
            load_weights(model, ckpt / "model.safetensors")
        except CheckpointError as e:
            if "refusing to load" in e.message:
                raise
            warnings.warn(f"skipping checkpoint: {e}", stacklevel=2)
            problems.append(str(e))
            continue
        if problems:
            warnings.warn(f"resumed from the older checkpoint {ckpt.name}", stacklevel=2)
        return state
    raise CheckpointError("no usable checkpoint: " + "; ".join(problems), path=Path(run_dir) / "checkpoints")
