"""Shared fixtures. Real datasets are found through $SEQLAB_DATA, defaulting to ../shared/data beside
the checkout; tests that need them are skipped when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if "SEQLAB_DATA" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
    os.environ["SEQLAB_DATA"] = str(REPO.parent / "shared" / "data")

# small, reproducible CPU work: tests share two cores with everything else
torch.set_num_threads(1)


def data_dir() -> Path | None:
    d = os.environ.get("SEQLAB_DATA")
    return Path(d) if d and Path(d).is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    d = data_dir()
    if d is None:
        pytest.skip("real datasets not available (set SEQLAB_DATA)")
    return d
