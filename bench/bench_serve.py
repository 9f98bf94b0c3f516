"""Issue 11 benchmark: `seqlab serve` with and without micro-batching, on loopback only.

    SEQLAB_DATA=../shared/data flock /work/bench.lock python bench/bench_serve.py [--run RUN_DIR]
        [--clients 16] [--requests 2000] [--out bench/results/serve.json]

The SST-2 `bag` model (sst2/bag, trained first unless --run is given) is served by a separate
process (uvicorn, 1 torch thread, access log off) for each setting: micro-batching off (`max_batch=1`) and
on (`max_batch=64`; a batch takes the requests queued while the previous one ran, then waits
`batch_wait_ms` = 0, 2 or 5 ms for more). `--clients` concurrent clients, each on its own keep-alive
HTTP/1.1 connection, send `--requests` single-text requests in all (SST-2 dev sentences, in turn) after a
warm-up of 200; `--repeats` rounds over the settings (interleaved) give the median. Reported per setting:
requests/s, p50/p99 latency (of the median trial), errors (any status but 200, all trials), and the
server's resident memory after warm-up, at the end and its peak (sampled every 0.2 s from /proc). The
client is a minimal asyncio HTTP client in this process, so that the load generator costs little of the
machine's two cores. Every request goes to 127.0.0.1 and the run is bounded by --requests and --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = {"no batching": {"max_batch": 1, "batch_wait_ms": 0.0},
            "micro-batching, no wait": {"max_batch": 64, "batch_wait_ms": 0.0},
            "micro-batching, wait 2 ms (default)": {"max_batch": 64, "batch_wait_ms": 2.0},
            "micro-batching, wait 5 ms": {"max_batch": 64, "batch_wait_ms": 5.0}}

SERVER = """
import sys
from seqlab.serve.app import ServeConfig, serve
serve([sys.argv[1]], port=int(sys.argv[2]), config=ServeConfig(threads=1, max_batch=int(sys.argv[3]),
      batch_wait_ms=float(sys.argv[4])), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def client(port: int, path: str, bodies: list[bytes], latencies: list[float],
                 errors: list[str]) -> None:
    """One keep-alive connection sending `bodies` one after another; a latency per answered request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            t = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            if b" 200 " not in status_line:
                errors.append(status_line.decode().strip())
    finally:
        writer.close()


async def load(port: int, path: str, texts: list[str], clients: int, n: int, offset: int
               ) -> tuple[list[float], list[str], float]:
    bodies = [json.dumps({"texts": [texts[(offset + i) % len(texts)]]}).encode() for i in range(n)]
    latencies: list[float] = []
    errors: list[str] = []
    t = time.perf_counter()
    await asyncio.gather(*(client(port, path, bodies[c::clients], latencies, errors) for c in range(clients)))
    return latencies, errors, time.perf_counter() - t


def measure(run: Path, texts: list[str], setting: dict, clients: int, requests: int, timeout: float) -> dict:
    port = free_port()
    argv = [sys.executable, "-c", SERVER, str(run), str(port), str(setting["max_batch"]),
            str(setting["batch_wait_ms"])]
    server = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(server.stderr.read().decode()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.3)
        path = f"/v1/models/{run.name}/predict"
        asyncio.run(asyncio.wait_for(load(port, path, texts, clients, 200, 0), timeout))  # warm-up
        memory = [rss_mb(server.pid)]
        done = threading.Event()

        def sample():
            while not done.wait(0.2):
                memory.append(rss_mb(server.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        measured = load(port, path, texts, clients, requests, 200)
        latencies, errors, wall = asyncio.run(asyncio.wait_for(measured, timeout))
        done.set()
        sampler.join()
        memory.append(rss_mb(server.pid))
    finally:
        server.terminate()
        server.wait(30)
    q = statistics.quantiles(latencies, n=100)
    return {**setting, "requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
            "requests_per_s": len(latencies) / wall, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000,
            "rss_mb_start": memory[0], "rss_mb_end": memory[-1], "rss_mb_peak": max(memory)}


def median_trial(trials: list[dict]) -> dict:
    """The trial with the median requests/s, with every trial's throughput, errors and memory beside it."""
    ranked = sorted(trials, key=lambda t: t["requests_per_s"])
    return {**ranked[len(ranked) // 2], "requests_per_s_all": [t["requests_per_s"] for t in trials],
            "errors": sum(t["errors"] for t in trials), "rss_mb_peak": max(t["rss_mb_peak"] for t in trials)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a trained SST-2 bag run (default: train sst2/bag)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=600, help="seconds any one load may take")
    p.add_argument("--repeats", type=int, default=3, help="rounds over the settings; the median is reported")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.json")
    a = p.parse_args()

    import seqlab
    from seqlab.data import get_dataset, read

    spec = get_dataset("sst2")
    texts = [ex.text for ex in read(spec.test, format=spec.format, **spec.reader_options)]
    with tempfile.TemporaryDirectory() as tmp:
        run = a.run or seqlab.train("sst2/bag", ["threads=2"],
                                    out=Path(tmp) / "sst2-bag", quiet=True)
        load_before = os.getloadavg()
        trials: dict[str, list[dict]] = {name: [] for name in SETTINGS}
        for r in range(a.repeats):  # the settings interleaved, in a rotated order each round
            names = list(SETTINGS)[r % len(SETTINGS):] + list(SETTINGS)[:r % len(SETTINGS)]
            for name in names:
                trial = measure(Path(run), texts, SETTINGS[name], a.clients, a.requests, a.timeout)
                trials[name].append(trial)
        results = {name: median_trial(t) for name, t in trials.items()}
    report = {"clients": a.clients, "requests": a.requests, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "settings": results}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    base = results["no batching"]["requests_per_s"]
    print("server RSS: after warm-up / at the end of the median trial / peak of all trials")
    print(f"{a.clients} clients, {a.requests} single-text requests, median of {a.repeats}; load average "
          f"{load_before[0]:.1f} -> {report['load_average_after'][0]:.1f}")
    print("| setting | requests/s | vs no batching | p50 ms | p99 ms | errors "
          "| server RSS MB start / end / peak |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        print(f"| {name} | {r['requests_per_s']:.0f} | {r['requests_per_s'] / base:.2f}x | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['rss_mb_start']:.0f} / "
              f"{r['rss_mb_end']:.0f} / {r['rss_mb_peak']:.0f} |")


if __name__ == "__main__":
    main()
