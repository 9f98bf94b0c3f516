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

With `--load` it runs issue 25's test of the server under hostile load instead: one server (3 models: the
sst2/bag classifier, a digits ConvNet, a small Tiny Shakespeare transformer lm) gets 16 concurrent clients
for 30 s, each sending one kind of request again and again: the largest image the limits allow (a 4096 x
4096 PNG or JPEG under max_body_bytes), a 13,000 x 13,000 PNG (refused, 413), max_texts texts of max_chars
characters, or a streaming generation of max_new_tokens read in full or dropped after 3 pieces (16 clients:
3, 3, 3, 3, 2 and 2 of these six kinds). Beside them one client
sends a small text every 10 ms. Reported: the answers' status codes, the server's peak RSS against idle, the
small client's p50/p99 against the same client on the idle server, /healthz after; then, on the idle server,
the 13,000^2 PNG's refusal time and RSS growth, and the server's CPU time after a streaming client drops.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
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


def start_server(argv: list[str], port: int) -> subprocess.Popen:
    """`python -c argv...` in a process of its own; returns once it accepts connections on `port`."""
    server = subprocess.Popen([sys.executable, "-c", *argv], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None:
            raise RuntimeError(server.stderr.read().decode()[-2000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("the server did not start") from None
            time.sleep(0.3)


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
    server = start_server([SERVER, str(run), str(port), str(setting["max_batch"]), str(setting["batch_wait_ms"])],
                          port)
    try:
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


# ------------------------------------------------------------------------------------- hostile load (--load)
HOSTILE_SERVER = """
import sys
from seqlab.serve.app import ServeConfig, serve
serve(sys.argv[2:], port=int(sys.argv[1]), config=ServeConfig(threads=1), log_level="warning")
"""
ALLOWED = {200, 413, 422, 429, 503}
KINDS = ("png", "jpeg", "bomb", "texts", "stream", "drop")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def http(port: int, path: str, body: bytes | None = None, content_type: str = "application/json",
               pieces: int | None = None) -> tuple[int, bytes]:
    """One request on a connection of its own -> (status, body). With `pieces`, the client leaves after
    that many chunks of a chunked (streamed) answer. A body the server refuses before reading it in full
    (a 503 on admission) may reset the connection under the client's feet: the status is still read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        method = "GET" if body is None else "POST"
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + (body or b""))
        sending = asyncio.ensure_future(writer.drain())
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            data = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            chunks = []
            while (size := int((await reader.readline()).strip() or b"0", 16)) and (pieces is None or
                                                                                       len(chunks) < pieces):
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            data = b"".join(chunks)
        else:
            data = await reader.read()
        try:
            await sending
        except ConnectionError:
            pass
        return status, data
    finally:
        writer.close()


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    """A multipart/form-data body with `data` as the file of the field `image`, and its content type."""
    boundary = "seqlab-bench-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def hostile_images(max_pixels: int, max_body: int) -> dict[str, bytes]:
    """The largest PNG and JPEG the limits let through (a side of sqrt(max_pixels), a body under max_body:
    gradients and a few hundred random boxes, as a photo compresses), and a 13,000 x 13,000 black PNG."""
    import random

    import numpy as np
    from PIL import Image, ImageDraw

    side = int(max_pixels ** 0.5)
    rng = random.Random(0)
    x = np.linspace(0, 255, side, dtype="float32")
    picture = Image.merge("RGB", [Image.fromarray((x[None, :] * 0 + x[:, None]).astype("uint8")),
                                  Image.fromarray((x[None, :] + x[:, None] * 0).astype("uint8")),
                                  Image.new("L", (side, side), 90)])
    draw = ImageDraw.Draw(picture)
    for _ in range(300):
        x0, y0 = rng.randrange(side), rng.randrange(side)
        draw.rectangle([x0, y0, x0 + rng.randrange(20, 400), y0 + rng.randrange(20, 400)],
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    images = {}
    for kind, options in (("png", {"optimize": True}), ("jpeg", {"quality": 85})):
        out = io.BytesIO()
        picture.save(out, kind.upper(), **options)
        images[kind] = out.getvalue()
        if len(images[kind]) > max_body - 1000:
            raise RuntimeError(f"the {kind} is {len(images[kind])} bytes, over max_body_bytes")
    out = io.BytesIO()
    Image.new("1", (13_000, 13_000)).save(out, "PNG")
    images["bomb"] = out.getvalue()
    return images


def hostile(a: argparse.Namespace) -> None:
    import seqlab
    from seqlab.data import get_dataset, read
    from seqlab.serve.app import ServeConfig

    limits = ServeConfig()
    spec = get_dataset("sst2")
    sentences = [ex.text for ex in read(spec.test, format=spec.format, **spec.reader_options)]
    long_text = " ".join(sentences)[:limits.max_chars]
    images = hostile_images(limits.max_pixels, limits.max_body_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = {"classify": seqlab.train("sst2/bag", ["threads=2"], out=root / "classify", quiet=True),
                "image": seqlab.train("digits/convnet", ["train.epochs=2"], out=root / "image", quiet=True),
                "lm": seqlab.train("tiny_shakespeare/transformer", ["train.max_steps=30", "train.warmup_steps=5",
                                   "train.log_every=10"], out=root / "lm", quiet=True)}
        port = free_port()
        server = start_server([HOSTILE_SERVER, str(port), *map(str, runs.values())], port)
        try:
            report = run_hostile(server, port, images, sentences, long_text, limits, a)
        finally:
            server.terminate()
            server.wait(30)
    from seqlab.report.card import hardware

    report["cpu"] = hardware()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    out = a.out.with_name("serve_load.json") if a.out.name == "serve.json" else a.out
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


def run_hostile(server: subprocess.Popen, port: int, images: dict[str, bytes], sentences: list[str],
                long_text: str, limits, a: argparse.Namespace) -> dict:
    small = [json.dumps({"texts": [s]}).encode() for s in sentences]
    uploads = {kind: multipart(data, f"x.{kind}") for kind, data in images.items()}
    texts = json.dumps({"texts": [long_text] * limits.max_texts}).encode()
    stream = json.dumps({"prompt": "ROMEO:", "max_new_tokens": limits.max_new_tokens, "stream": True}).encode()
    predict = "/v1/models/{}/predict".format

    async def small_client(seconds: float) -> list[float]:
        latencies = []
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            t = time.perf_counter()
            status, _ = await http(port, predict("classify"), small[i % len(small)])
            latencies.append(time.perf_counter() - t)
            assert status == 200, status
            i += 1
            await asyncio.sleep(0.01)
        return latencies

    async def hostile_client(c: int, seconds: float, codes: Counter, kinds: Counter) -> None:
        kind = a.kinds[c % len(a.kinds)]  # each client sends one kind
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if kind in uploads:
                status, _ = await http(port, predict("image"), *uploads[kind])
            elif kind == "texts":
                status, _ = await http(port, predict("classify"), texts)
            else:
                status, _ = await http(port, predict("lm"), stream, pieces=3 if kind == "drop" else None)
            codes[status] += 1
            kinds[f"{kind} {status}"] += 1

    def sampled(coroutine, every: float = 0.1) -> tuple[object, list[float]]:
        memory = [rss_mb(server.pid)]
        done = threading.Event()

        def sample():
            while not done.wait(every):
                memory.append(rss_mb(server.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = asyncio.run(asyncio.wait_for(coroutine, a.seconds + 120))
        finally:
            done.set()
            sampler.join()
        return result, memory

    def p(latencies: list[float], q: int) -> float:
        return statistics.quantiles(latencies, n=100)[q - 1] * 1000

    async def warm_up() -> None:
        for kind in ("png", "jpeg"):
            await http(port, predict("image"), *uploads[kind])
        await http(port, predict("classify"), texts)
        await http(port, predict("lm"), stream)

    asyncio.run(warm_up())
    load_before = os.getloadavg()
    idle, idle_memory = sampled(small_client(a.idle_seconds))
    idle_rss = max(idle_memory)
    codes: Counter = Counter()
    kinds: Counter = Counter()

    async def under_load() -> list[float]:
        crowd = [hostile_client(c, a.seconds, codes, kinds) for c in range(a.clients)]
        latencies, *_ = await asyncio.gather(small_client(a.seconds), *crowd)
        return latencies

    loaded, load_memory = sampled(under_load())
    health, _ = asyncio.run(http(port, "/healthz"))
    # alone on the idle server: the 13,000^2 PNG, then a streaming client that leaves after 3 pieces
    time.sleep(2)
    before = rss_mb(server.pid)
    refusals = []
    for _ in range(5):
        t = time.perf_counter()
        status, _ = asyncio.run(http(port, predict("image"), *uploads["bomb"]))
        refusals.append((status, (time.perf_counter() - t) * 1000))
    bomb_rss = rss_mb(server.pid) - before
    asyncio.run(http(port, predict("lm"), stream, pieces=3))
    left = cpu_seconds(server.pid)
    cpu_after = []
    for _ in range(30):  # 1.5 s
        time.sleep(0.05)
        cpu_after.append(cpu_seconds(server.pid) - left)
    full_stream_t = time.perf_counter()
    asyncio.run(http(port, predict("lm"), stream))
    full_stream_s = time.perf_counter() - full_stream_t
    return {
        "clients": a.clients, "kinds": a.kinds, "seconds": a.seconds, "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "limits": {k: getattr(limits, k) for k in (
            "max_pixels", "max_body_bytes", "max_texts", "max_chars", "max_new_tokens", "max_pending",
            "request_timeout_s")},
        "image_bytes": {k: len(v) for k, v in images.items()},
        "status_codes": dict(codes), "by_kind": dict(sorted(kinds.items())),
        "only_allowed_codes": set(codes) <= ALLOWED,
        "rss_mb_idle_peak": idle_rss, "rss_mb_load_peak": max(load_memory),
        "rss_mb_growth_under_load": max(load_memory) - idle_rss,
        "small_idle": {"requests": len(idle), "p50_ms": p(idle, 50), "p99_ms": p(idle, 99)},
        "small_load": {"requests": len(loaded), "p50_ms": p(loaded, 50), "p99_ms": p(loaded, 99)},
        "small_p99_ratio": p(loaded, 99) / p(idle, 99), "healthz_after": health,
        "bomb": {"statuses": [s for s, _ in refusals], "ms": [round(t, 1) for _, t in refusals],
                 "median_ms": statistics.median(t for _, t in refusals), "rss_mb_growth": bomb_rss},
        "dropped_stream": {"cpu_s_after_drop_at_0.1_0.25_0.5_1.0_1.5_s": [round(cpu_after[i], 3)
                                                                         for i in (1, 4, 9, 19, 29)],
                           "cpu_s_from_0.5_to_1.5_s": round(cpu_after[29] - cpu_after[9], 3),
                           "a_full_stream_s": round(full_stream_s, 2)},
    }


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
    p.add_argument("--load", action="store_true", help="the hostile load test of issue 25 instead")
    p.add_argument("--seconds", type=float, default=30, help="--load: how long the 16 clients load the server")
    p.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS),
                   help=f"--load: the hostile requests, one kind per client in turn (default {','.join(KINDS)})")
    p.add_argument("--idle-seconds", type=float, default=15, help="--load: the small client alone, for its p99")
    a = p.parse_args()
    if a.load:
        return hostile(a)

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
