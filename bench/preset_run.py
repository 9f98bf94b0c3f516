"""What the preset benchmarks share: train a preset in a fresh `python -m seqlab train` process and read back
its metrics, and the machine's load average (the 2 cores may be shared)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_average() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def train_preset(preset: str, overrides: list[str], out: Path) -> tuple[float, list[dict]]:
    """`python -m seqlab train PRESET OVERRIDES --out OUT --quiet` -> (its wall seconds, start-up and every
    evaluation included; the records of OUT/metrics.jsonl). Refuses an existing OUT."""
    if out.exists():
        raise SystemExit(f"{out} exists: remove it or choose another --runs")
    cmd = [sys.executable, "-m", "seqlab", "train", preset, *overrides, "--out", str(out), "--quiet"]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    wall = time.perf_counter() - t0
    return wall, [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
