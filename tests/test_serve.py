"""The HTTP server (seqlab.serve.app) through FastAPI's TestClient against tiny trained runs of every task:
each task's predict body equals the Python API, lm streaming equals non-streaming with the same seed, every
bad input gets its 4xx with one message (and the server serves on), concurrent requests are micro-batched."""

from __future__ import annotations

import asyncio
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import seqlab  # noqa: E402
from seqlab.data.images import load_digits_arrays  # noqa: E402
from seqlab.errors import DataError  # noqa: E402
from seqlab.serve.app import ServeConfig, create_app  # noqa: E402
from seqlab.serve.batching import MicroBatcher  # noqa: E402
from tests.test_serve_runs import (  # noqa: E402
    train_caption,
    train_classify,
    train_image,
    train_lm,
    train_tag,
    train_translate,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {"classify-bag": train_classify(root), "tag-rnn": train_tag(root), "image": train_image(root),
            "lm": train_lm(root), "translate": train_translate(root)}


@pytest.fixture(scope="module")
def client(runs):
    limits = ServeConfig(max_texts=4, max_chars=200, max_new_tokens=50, max_beam=4, max_body_bytes=20_000,
                         batch_wait_ms=1)
    app = create_app(list(runs.values()), limits)
    with TestClient(app) as c:
        yield c


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_health_and_the_models_with_their_tasks_labels_and_metrics(client, runs):
    assert client.get("/healthz").json() == {"status": "ok", "models": 5}
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert {n: m["task"] for n, m in models.items()} == {
        "classify-bag": "classify", "tag-rnn": "tag", "image": "image", "lm": "lm", "translate": "translate"}
    assert sorted(models["classify-bag"]["labels"]) == ["neg", "pos"]
    assert set(models["image"]["labels"]) == {str(d) for d in range(10)}
    test_line = json.loads((runs["classify-bag"] / "metrics.jsonl").read_text().splitlines()[-1])
    assert models["classify-bag"]["metrics"]["test"]["accuracy"] == pytest.approx(test_line["accuracy"])
    assert client.get("/v1/models/lm").json()["endpoint"] == "/v1/models/lm/predict"


def test_each_task_answers_as_the_python_api(client, runs):
    texts = ["the film was great", "a dull and boring plot"]
    r = client.post("/v1/models/classify-bag/predict", json={"texts": texts, "top_k": 2})
    assert r.status_code == 200 and r.json()["task"] == "classify"
    expected = seqlab.load(runs["classify-bag"]).predict(texts, top_k=2)
    assert r.json()["results"] == json.loads(json.dumps(expected))

    sentences = ["the big cat sees a dog", ["a", "fox", "finds", "the", "bird"]]
    r = client.post("/v1/models/tag-rnn/predict", json={"sentences": sentences})
    assert r.json()["results"] == json.loads(json.dumps(seqlab.load(runs["tag-rnn"]).predict(sentences)))

    r = client.post("/v1/models/translate/predict", json={"texts": ["ein hund", "der mann hat"], "beam": 1})
    expected = seqlab.load(runs["translate"]).predict(["ein hund", "der mann hat"], beam=1)
    assert [x["translation"] for x in r.json()["results"]] == [x["translation"] for x in expected]

    r = client.post("/v1/models/lm/predict", json={"prompt": "the cat", "max_new_tokens": 12, "seed": 3})
    expected = seqlab.load(runs["lm"]).predict(["the cat"], max_new_tokens=12, seed=3)[0]["text"]
    assert r.json()["results"] == [{"text": expected}]

    x, _ = load_digits_arrays()
    r = client.post("/v1/models/image/predict", files={"image": ("digit.png", png(x[7, 0]), "image/png")},
                    data={"top_k": "3"})
    expected = seqlab.load(runs["image"]).predict(x[7], top_k=3)
    assert r.status_code == 200 and r.json()["results"] == json.loads(json.dumps(expected))


def test_caption_answers_an_uploaded_picture_as_the_python_api(tmp_path):
    run = train_caption(tmp_path)
    picture = np.asarray(Image.open(tmp_path / "img" / "green.png"))
    with TestClient(create_app([run])) as c:
        r = c.post("/v1/models/caption/predict", files={"image": ("g.png", png(picture), "image/png")},
                   data={"beam": "1"})
        bad = c.post("/v1/models/caption/predict", files={"image": ("g.png", png(picture), "image/png")},
                     data={"beam": "0"})
    assert r.status_code == 200 and r.json()["task"] == "caption"
    assert r.json()["results"] == json.loads(json.dumps(seqlab.load(run).predict([picture], beam=1)))
    assert bad.status_code == 422 and "beam must be at least 1, got 0" in bad.json()["error"]


def test_streaming_yields_the_same_text_as_non_streaming_with_the_same_seed(client):
    body = {"prompt": "the dog", "max_new_tokens": 30, "temperature": 1.0, "seed": 7}
    whole = client.post("/v1/models/lm/predict", json=body).json()["results"][0]["text"]
    with client.stream("POST", "/v1/models/lm/predict", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert events[-1] == "event: done\ndata: {}"
    pieces = [json.loads(e.removeprefix("data: "))["text"] for e in events[:-1]]
    assert len(pieces) > 1 and "".join(pieces) == whole


CLS, LM, IMG = "/v1/models/classify-bag/predict", "/v1/models/lm/predict", "/v1/models/image/predict"
BAD = [  # (method, path, request options, status, words of the message)
    ("post", CLS, {"content": b'{"texts": ["a"'}, 400, "malformed JSON"),
    ("post", CLS, {"content": b""}, 400, "empty body"),
    ("post", CLS, {"content": b"\xff\xfe{}"}, 400, "malformed JSON"),
    ("post", CLS, {"json": ["a"]}, 422, "must be a JSON object"),
    ("post", CLS, {"json": {"texts": "a film"}}, 422, "texts: Input should be"),
    ("post", CLS, {"json": {"texts": ["ok", 3]}}, 422, "texts[1]: Input should be"),
    ("post", CLS, {"json": {"texts": ["a"], "top_k": "2"}}, 422, "top_k"),
    ("post", CLS, {"json": {"texts": ["a"], "colour": 1}}, 422, "colour"),
    ("post", CLS, {"json": {}}, 422, "texts: Field required"),
    ("post", CLS, {"json": {"texts": []}}, 422, "texts is empty"),
    ("post", CLS, {"json": {"texts": ["ok", "  "]}}, 422, "texts[1] is empty"),
    ("post", CLS, {"json": {"texts": ["a"] * 5}}, 422, "the limit is 4"),
    ("post", CLS, {"json": {"texts": ["a" * 201]}}, 422, "201 characters"),
    ("post", CLS, {"json": {"texts": ["a"], "top_k": 0}}, 422, "top_k must be"),
    ("post", CLS, {"content": b"x" * 20_001}, 413, "over the limit"),
    ("post", "/v1/models/nope/predict", {"json": {"texts": ["a"]}}, 404, "unknown model 'nope'"),
    ("get", "/v1/models/nope", {}, 404, "unknown model"),
    ("get", "/no/such/page", {}, 404, "Not Found"),
    ("get", CLS, {}, 405, "Method Not Allowed"),
    ("post", "/v1/models/tag-rnn/predict", {"json": {"sentences": [[]]}}, 422, "sentences[0] has no tokens"),
    ("post", "/v1/models/tag-rnn/predict", {"json": {"sentences": [["a b"]]}}, 422, "is not a token"),
    ("post", "/v1/models/translate/predict", {"json": {"texts": ["ein"], "beam": 9}}, 422, "beam must be"),
    ("post", LM, {"json": {"prompt": ""}}, 422, "prompt is empty"),
    ("post", LM, {"json": {"prompt": "the", "max_new_tokens": 51}}, 422, "max_new_tokens"),
    ("post", LM, {"json": {"prompt": "the", "temperature": -1}}, 422, "temperature"),
    ("post", LM, {"json": {"prompt": "the", "top_p": 1.5}}, 422, "top_p"),
    ("post", LM, {"json": {"prompt": "the", "stream": "yes"}}, 422, "stream"),
    ("post", LM, {"json": {"prompt": "the cat Z!"}}, 422, "never saw"),
    ("post", LM, {"json": {"prompt": "the cat Z!", "stream": True}}, 422, "never saw"),
    ("post", IMG, {"json": {"image": "x"}}, 415, "multipart/form-data"),
    ("post", IMG, {"files": {"image": ("a.png", b"not an image", "image/png")}}, 415,
     "not an image"),
    ("post", IMG, {"files": {"picture": ("a.png", b"x", "image/png")}}, 422, "'image'"),
    ("post", IMG, {"files": {"image": ("a.png", b"", "image/png")}}, 422, "empty"),
    ("post", IMG, {"files": {"image": ("a.png", b"x" * 20_001, "image/png")}}, 413,
     "over the limit"),
]


def test_every_bad_input_gets_its_4xx_with_one_message_and_the_server_serves_on(client):
    x, _ = load_digits_arrays()
    for method, path, options, status, words in BAD:
        r = getattr(client, method)(path, **options)
        assert r.status_code == status, (path, options, r.status_code, r.text)
        message = r.json()["error"]
        assert words in message and "\n" not in message, (path, options, message)
    chunked = client.post(CLS, content=iter([b'{"texts": ["' + b"a" * 9_000] * 3))  # no Content-Length
    assert chunked.status_code == 413 and "over the limit" in chunked.json()["error"]
    bad_top_k = client.post("/v1/models/image/predict", files={"image": ("d.png", png(x[0, 0]), "image/png")},
                            data={"top_k": "two"})
    assert bad_top_k.status_code == 422 and "top_k must be an integer" in bad_top_k.json()["error"]
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/models/classify-bag/predict", json={"texts": ["fine"]}).status_code == 200


def test_concurrent_requests_run_as_one_batch_and_each_gets_its_own_result(runs):
    words = ("great", "dull", "superb", "awful", "moving", "bland", "funny", "weak")
    texts = [f"the film was {w}" for w in words]
    # the batch closes when it holds max_batch texts, long before its wait runs out: one model call
    app = create_app([runs["classify-bag"]], ServeConfig(max_batch=len(texts), batch_wait_ms=60_000))
    served = app.state.models["classify-bag"]
    with TestClient(app) as c, ThreadPoolExecutor(len(texts)) as pool:
        answers = list(pool.map(lambda t: c.post(CLS, json={"texts": [t]}), texts))
    assert served.batcher.calls == 1
    expected = json.loads(json.dumps(seqlab.load(runs["classify-bag"]).predict(texts)))
    assert [a.json()["results"][0] for a in answers] == expected


def test_without_batching_each_request_is_its_own_call(runs):
    app = create_app([runs["classify-bag"]], ServeConfig(max_batch=1, batch_wait_ms=50))
    with TestClient(app) as c, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: c.post(CLS, json={"texts": [f"a {i}"]}), range(6)))
    assert all(a.status_code == 200 for a in answers) and app.state.models["classify-bag"].batcher.calls == 6


def test_a_bad_request_in_a_batch_fails_alone():
    def run(items, options):
        if "bad" in items:
            raise DataError("a bad item")
        return [f"{x}{options['suffix']}" for x in items]

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=3, wait=60.0)
            results = await asyncio.gather(*(batcher.submit([x], {"suffix": "!"}) for x in ("a", "bad", "c")),
                                           return_exceptions=True)
            await batcher.stop()
            return results, batcher.calls

    (a, bad, c), calls = asyncio.run(main())
    assert a == ["a!"] and c == ["c!"] and isinstance(bad, DataError)
    assert calls == 4  # the batch of three, then each request alone


def test_requests_with_different_options_share_a_batch_but_not_a_call():
    seen = []

    def run(items, options):
        seen.append((sorted(items), options["k"]))
        return [f"{x}/{options['k']}" for x in items]

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=4, wait=60.0)
            requests = (("a", 1), ("b", 2), ("c", 1), ("d", 2))
            out = await asyncio.gather(*(batcher.submit([x], {"k": k}) for x, k in requests))
            await batcher.stop()
            return out

    assert asyncio.run(main()) == [["a/1"], ["b/2"], ["c/1"], ["d/2"]]
    assert sorted(seen) == [(["a", "c"], 1), (["b", "d"], 2)]


def test_a_large_request_is_split_and_a_small_one_behind_it_runs_in_the_next_batch():
    calls = []

    def run(items, options):
        calls.append(list(items))
        return [x.upper() for x in items]

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=4, wait=0.0, max_chars=9)
            big = [f"b{i}" for i in range(10)]
            first = asyncio.ensure_future(batcher.submit(big, {}))
            second = asyncio.ensure_future(batcher.submit(["s"], {}))
            out = await asyncio.gather(first, second)
            await batcher.stop()
            return out

    big, small = asyncio.run(main())
    assert big == [f"B{i}" for i in range(10)] and small == ["S"]  # every result, in its request's order
    # round-robin: the small request shares the first call; at most 4 items and 9 characters per call
    assert calls[0] == ["b0", "b1", "b2", "s"] and all(len(c) <= 4 and len("".join(c)) <= 9 for c in calls)
    assert [x for c in calls for x in c if x != "s"] == [f"b{i}" for i in range(10)]


def test_requests_a_batch_left_out_go_first_in_the_next():
    calls = []

    def run(items, options):
        calls.append(sorted(items))
        return list(items)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=2)
            # five requests queue while the first call runs; each call serves two of them
            out = await asyncio.gather(*(batcher.submit([f"{r}{i}" for i in range(3)], {}) for r in "abcde"))
            await batcher.stop()
            return out

    out = asyncio.run(main())
    assert out == [[f"{r}{i}" for i in range(3)] for r in "abcde"]
    # without the rotation, "e" would wait until "a" to "d" were done
    assert [c for c in calls if any(x.startswith("e") for x in c)][0] in calls[:3]


def test_a_bad_part_of_a_split_request_fails_that_request_only():
    def run(items, options):
        if "bad" in items:
            raise DataError("a bad item")
        return list(items)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch=2)
            out = await asyncio.gather(batcher.submit(["a", "b", "bad", "c"], {}), batcher.submit(["x", "y"], {}),
                                       return_exceptions=True)
            await batcher.stop()
            return out

    bad, good = asyncio.run(main())
    assert isinstance(bad, DataError) and good == ["x", "y"]


def test_the_openapi_page_documents_every_body_with_an_example(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    examples = body["application/json"]["examples"]
    assert set(examples) == {"ClassifyRequest", "TagRequest", "TranslateRequest", "LmRequest"}
    assert all(e["value"] for e in examples.values())
    assert "image" in body["multipart/form-data"]["schema"]["properties"]
    assert client.get("/docs").status_code == 200


def test_an_image_over_max_pixels_is_refused_from_its_header_without_decoding(runs):
    huge = io.BytesIO()
    Image.new("1", (13_000, 13_000)).save(huge, "PNG")  # a few kB of file, 169 M pixels
    app = create_app([runs["image"]], ServeConfig(max_body_bytes=10_000_000))
    with TestClient(app) as c:
        assert c.get("/v1/models/image").json()["limits"]["max_pixels"] == 4096 * 4096
        r = c.post(IMG, files={"image": ("bomb.png", huge.getvalue(), "image/png")})
        assert r.status_code == 413 and "13000x13000" in r.json()["error"] and "max_pixels" in r.json()["error"]
        x, _ = load_digits_arrays()
        assert c.post(IMG, files={"image": ("d.png", png(x[0, 0]), "image/png")}).status_code == 200


def test_a_model_at_max_pending_answers_503_with_retry_after_and_a_slow_answer_times_out(runs):
    # one request waits in a batch that would stay open 5 s: a second is refused at once, the first times out
    app = create_app([runs["classify-bag"]], ServeConfig(max_pending=1, max_batch=8, batch_wait_ms=5_000,
                                                         request_timeout_s=0.5))
    with TestClient(app) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(c.post, CLS, json={"texts": ["slow"]})
        served = app.state.models["classify-bag"]
        while served.pending == 0:
            time.sleep(0.01)
        refused = c.post(CLS, json={"texts": ["refused"]})
        timed_out = first.result()
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "busy" in refused.json()["error"] and "max_pending" in refused.json()["error"]
        assert timed_out.status_code == 503 and "request_timeout_s" in timed_out.json()["error"]
        assert served.pending == 0 and c.get("/v1/models/classify-bag").json()["limits"]["max_pending"] == 1


def test_seqlab_predict_refuses_an_image_over_max_pixels_in_one_line(runs, tmp_path, capsys):
    from seqlab.cli import main

    bomb = tmp_path / "bomb.png"
    Image.new("1", (13_000, 13_000)).save(bomb)
    assert main(["predict", str(runs["image"]), str(bomb)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bomb.png" in err and "13000x13000" in err


def test_seqlab_caption_refuses_an_image_over_max_pixels_in_one_line(tmp_path, capsys):
    from seqlab.cli import main

    run = train_caption(tmp_path)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (13_000, 13_000)).save(bomb)
    assert main(["caption", str(run), str(bomb)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bomb.png" in err and "13000x13000" in err and "Traceback" not in err


def test_a_client_that_leaves_a_stream_stops_its_generation(runs):
    """A real server (uvicorn in a thread): the client reads two pieces and closes its socket; the pieces the
    model draws stop growing within a step, and the model's slot is free again."""
    import socket
    import threading

    import uvicorn

    app = create_app([runs["lm"]], ServeConfig(max_new_tokens=100_000, max_pending=1))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        served = app.state.models["lm"]  # loaded by the lifespan, before `started`
        drawn = []
        stream = served.predictor.stream

        def counted(prompt, **options):
            for piece in stream(prompt, **options):
                drawn.append(piece)
                time.sleep(0.005)  # a model step of a few ms, as a real one
                yield piece

        served.predictor.stream = counted
        body = json.dumps({"prompt": "the", "max_new_tokens": 100_000, "stream": True}).encode()
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"POST /v1/models/lm/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        client.settimeout(20)
        received = b""
        while received.count(b"data:") < 2:
            chunk = client.recv(4096)
            assert chunk, received
            received += chunk
        client.close()
        time.sleep(0.5)
        after_close = len(drawn)
        time.sleep(0.5)
        assert len(drawn) == after_close < 1000  # stopped, far short of the 100,000 tokens asked for
        assert served.pending == 0
        import httpx

        r = httpx.post(f"http://127.0.0.1:{port}/v1/models/lm/predict", json={"prompt": "the", "max_new_tokens": 3})
        assert r.status_code == 200  # the slot (max_pending=1) was released
    finally:
        server.should_exit = True
        thread.join(10)
