"""`seqlab serve` as a real process: SIGTERM lets the in-flight request finish, then the server stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from tests.test_serve_runs import train_classify  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_drains_the_in_flight_request_then_stops(tmp_path):
    run = train_classify(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # a request waits 5 s for company in its batch: it is in flight when SIGTERM comes
    server = subprocess.Popen([sys.executable, "-m", "seqlab", "serve", str(run), "--port", str(port),
                               "--batch-wait-ms", "5000", "--threads", "1"], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stdout.read().decode()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.3)
        answer = {}
        post = threading.Thread(target=lambda: answer.update(r=httpx.post(
            f"{url}/v1/models/{run.name}/predict", json={"texts": ["a gripping film"]}, timeout=60)))
        post.start()
        time.sleep(1.5)
        server.send_signal(signal.SIGTERM)
        post.join(60)
        assert answer["r"].status_code == 200 and answer["r"].json()["results"][0]["label"] in ("pos", "neg")
        # uvicorn re-raises the signal once it has shut down cleanly (older versions exit 0)
        assert server.wait(60) in (0, -signal.SIGTERM)
        log = server.stdout.read().decode()
        assert "Finished server process" in log and "Traceback" not in log
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/healthz", timeout=2)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
