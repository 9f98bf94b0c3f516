"""The HTTP server: `seqlab serve RUN_DIR [RUN_DIR ...]`, a FastAPI app over `seqlab.load(run_dir)`.

    GET  /healthz                      {"status": "ok", "models": N}
    GET  /v1/models                    each model: name, task, model, labels, metrics of its run
    GET  /v1/models/{name}             one of them
    POST /v1/models/{name}/predict     a body shaped by the model's task (see ENDPOINTS and /docs)

The per-task bodies: classify `{"texts": [...], "top_k": 1}`; tag `{"sentences": ["a text" or
["tokens", ...]], "top_k": 1}`; translate `{"texts": [...], "beam": null}`; lm `{"prompt": "...",
"max_new_tokens": null, "temperature": 1.0, "top_k": null, "top_p": null, "seed": null, "stream": false}`,
where `stream: true` answers with server-sent events, one `data: {"text": piece}` per piece and a final
`event: done`; image and caption: a multipart/form-data upload with the file in the field `image` (and
`top_k`, or for caption `beam`).
A task is served when its predictor exists: adding one is an entry in ENDPOINTS.

Concurrent requests to one model are micro-batched (`seqlab.serve.batching`) and run in the model's own
worker thread, off the event loop; torch's threads come from the run's config (or `threads`). Bad input
never reaches a 500: malformed JSON -> 400, an unknown model -> 404, a body over `max_body_bytes` -> 413,
a non-image upload or a wrong content type -> 415, wrong types, empty texts and exceeded limits -> 422;
every error is `{"error": "one line"}`. SIGTERM: uvicorn stops accepting, in-flight requests finish (up to
`drain_seconds`), then the workers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from seqlab.api import info, load
from seqlab.errors import ConfigError, SeqlabError
from seqlab.report.runs import run_names
from seqlab.serve.batching import MicroBatcher

log = logging.getLogger("seqlab.serve")


@dataclass
class ServeConfig:
    """Limits and batching of the server (the CLI's `seqlab serve` flags override these defaults)."""

    max_body_bytes: int = 1_000_000  # whole request body, JSON or upload
    max_texts: int = 64  # texts / sentences per request
    max_chars: int = 2_000  # characters per text, sentence or prompt
    max_new_tokens: int = 512  # lm: tokens generated per request
    max_beam: int = 16  # translate: beam size
    # how long a batch waits for more requests after taking those queued while the previous one ran
    # (0: no wait); 2 ms measured best of 0/2/5 on 2 cores with 16 clients (docs/benchmarks.md)
    batch_wait_ms: float = 2.0
    max_batch: int = 64  # items per model call (1: no micro-batching)
    threads: int | None = None  # torch threads (None: the runs' config)
    drain_seconds: float = 30.0  # SIGTERM: how long in-flight requests may take to finish

    def validate(self) -> None:
        for name in ("max_body_bytes", "max_texts", "max_chars", "max_new_tokens", "max_beam", "max_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_wait_ms < 0 or self.drain_seconds < 0:
            raise ConfigError("batch_wait_ms and drain_seconds must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")


# ---------------------------------------------------------------------------------------------- bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ClassifyRequest(_Body):
    """classify: a label for each text."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"texts": ["a gripping, funny film"],
                                                               "top_k": 2}]})
    texts: list[str]
    top_k: int = 1


class TagRequest(_Body):
    """tag: one tag per token; a sentence is a string (split at whitespace) or a list of tokens."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"sentences": ["The cat sat on the mat ."]}]})
    sentences: list[str | list[str]]
    top_k: int = 1


class TranslateRequest(_Body):
    """translate: a translation of each text; `beam` null is the run's beam size, 1 greedy."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"texts": ["Ein Hund läuft im Schnee."],
                                                               "beam": 4}]})
    texts: list[str]
    beam: int | None = None


class GenerateRequest(_Body):
    """lm: the continuation of `prompt`; `stream: true` sends it piece by piece as server-sent events."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"prompt": "ROMEO:", "max_new_tokens": 100, "temperature": 0.8, "top_k": 40, "seed": 1,
         "stream": False}]})
    prompt: str
    max_new_tokens: int | None = None  # None: 100, or the server's limit if that is lower
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stream: bool = False


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _text(text: str, where: str, limits: ServeConfig) -> str:
    if not text.strip():
        raise _error(422, f"{where} is empty")
    if len(text) > limits.max_chars:
        raise _error(422, f"{where} has {len(text):,} characters; the limit is {limits.max_chars:,}")
    return text


def _texts(texts: list, field_name: str, limits: ServeConfig) -> list:
    if not texts:
        raise _error(422, f"{field_name} is empty: give at least one")
    if len(texts) > limits.max_texts:
        raise _error(422, f"{len(texts)} {field_name} in one request; the limit is {limits.max_texts}")
    for i, t in enumerate(texts):
        if isinstance(t, list):  # a pre-tokenised sentence
            if not t:
                raise _error(422, f"{field_name}[{i}] has no tokens")
            for j, token in enumerate(t):
                if not token.strip() or any(c.isspace() for c in token):
                    raise _error(422, f"{field_name}[{i}][{j}] is not a token (empty or holding whitespace)")
            _text(" ".join(t), f"{field_name}[{i}]", limits)
        else:
            _text(t, f"{field_name}[{i}]", limits)
    return texts


def _form_int(form: dict[str, str], name: str, default: int | None) -> int | None:
    """An integer field of an upload form (absent or empty: `default`)."""
    value = form.get(name, "").strip()
    if not value:
        return default
    if not value.lstrip("-").isdigit():
        raise _error(422, f"{name} must be an integer, got {value!r}")
    return int(value)


def _top_k(k: int) -> int:
    if k < 1:
        raise _error(422, f"top_k must be at least 1, got {k}")
    return k


def _sampling(b: GenerateRequest, limits: ServeConfig) -> dict:
    n = min(100, limits.max_new_tokens) if b.max_new_tokens is None else b.max_new_tokens
    if not 0 <= n <= limits.max_new_tokens:
        raise _error(422, f"max_new_tokens must be in 0..{limits.max_new_tokens}, got {n}")
    if b.temperature < 0:
        raise _error(422, f"temperature must be >= 0, got {b.temperature}")
    if b.top_k is not None and b.top_k < 1:
        raise _error(422, f"top_k must be at least 1, got {b.top_k}")
    if b.top_p is not None and not 0 < b.top_p <= 1:
        raise _error(422, f"top_p must be in (0, 1], got {b.top_p}")
    return {"max_new_tokens": n, "temperature": b.temperature, "top_k": b.top_k,
            "top_p": b.top_p, "seed": b.seed}


def _beam(beam: int | None, limits: ServeConfig) -> dict:
    if beam is not None and not 1 <= beam <= limits.max_beam:
        raise _error(422, f"beam must be in 1..{limits.max_beam}, got {beam}")
    return {"beam": beam}


@dataclass(frozen=True)
class Endpoint:
    """How one task is served: its JSON body, or for an uploaded image `decode` (predictor, bytes) -> the
    picture the predictor takes; the items of a request to batch (checked against the limits); the options
    a batch shares (from the body, or from the upload form's text fields); the predictor call on a batch."""

    body: type[BaseModel] | None
    items: Callable[[Any, ServeConfig], list]
    options: Callable[[Any, ServeConfig], dict]
    run: Callable[[Any, list, dict], list]
    decode: Callable[[Any, bytes], Any] | None = None


ENDPOINTS: dict[str, Endpoint] = {
    "classify": Endpoint(ClassifyRequest, lambda b, lim: _texts(b.texts, "texts", lim),
                         lambda b, lim: {"top_k": _top_k(b.top_k)}, lambda p, xs, o: p.predict(xs, **o)),
    "tag": Endpoint(TagRequest, lambda b, lim: _texts(b.sentences, "sentences", lim),
                    lambda b, lim: {"top_k": _top_k(b.top_k)}, lambda p, xs, o: p.predict(xs, **o)),
    "translate": Endpoint(TranslateRequest, lambda b, lim: _texts(b.texts, "texts", lim),
                          lambda b, lim: _beam(b.beam, lim), lambda p, xs, o: p.translate(xs, **o)),
    "lm": Endpoint(GenerateRequest, lambda b, lim: [_text(b.prompt, "prompt", lim)], _sampling,
                   lambda p, xs, o: [{"text": p.generate(x, **o)} for x in xs]),
    # image: `items` are the decoded (C, H, W) arrays of the upload, `options` its top_k form field
    # uploads: `items` are the decoded pictures, `options` read the form's fields
    "image": Endpoint(None, lambda pictures, lim: pictures,
                      lambda form, lim: {"top_k": _top_k(_form_int(form, "top_k", 1))},
                      lambda p, xs, o: p.predict(xs, **o), decode=lambda p, data: p.as_array(data)),
    "caption": Endpoint(None, lambda pictures, lim: pictures,
                        lambda form, lim: _beam(_form_int(form, "beam", None), lim),
                        lambda p, xs, o: p.caption(xs, **o), decode=lambda p, data: p.picture(data)),
}


# ---------------------------------------------------------------------------------------------- models
@dataclass
class Served:
    """One model behind the server: its predictor, its worker thread and its batcher."""

    name: str
    task: str
    predictor: Any
    endpoint: Endpoint
    executor: ThreadPoolExecutor
    batcher: MicroBatcher
    description: dict = field(default_factory=dict)

    async def in_worker(self, fn: Callable, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def _describe(name: str, run_dir: Path, predictor) -> dict:
    about = info(run_dir)
    summary = about.get("summary") or {}
    labels = getattr(predictor, "labels", None) or getattr(predictor, "tags", None)
    return {"name": name, "task": about["task"], "model": about["model"], "dataset": about["dataset"],
            "labels": list(labels) if labels is not None else None, "metrics": summary.get("results", {}),
            "parameters": summary.get("parameters"), "endpoint": f"/v1/models/{name}/predict"}


def load_models(run_dirs: list[str | os.PathLike], config: ServeConfig) -> dict[str, Served]:
    """Load each run's predictor (a ConfigError for a task the server cannot serve yet)."""
    if not run_dirs:
        raise ConfigError("give at least one run directory to serve")
    runs = [Path(r) for r in run_dirs]
    models = {}
    for name, run in zip(run_names(runs), runs, strict=True):
        predictor = load(run)
        task = predictor.task_name
        if task not in ENDPOINTS:
            raise ConfigError(f"the server has no endpoint for task {task!r} yet (it serves "
                              f"{', '.join(ENDPOINTS)})", path=run)
        endpoint = ENDPOINTS[task]
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"seqlab-{name}")
        batcher = MicroBatcher(functools.partial(endpoint.run, predictor), executor, config.max_batch,
                               config.batch_wait_ms / 1000)
        models[name] = Served(name, task, predictor, endpoint, executor, batcher,
                              _describe(name, run, predictor))
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return models


# ---------------------------------------------------------------------------------------------- the app
class _BodyLimit:
    """ASGI middleware: a body over `max_bytes` (its Content-Length, or counted as it arrives) -> 413."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = f"request body over the limit of {self.max_bytes:,} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await JSONResponse({"error": too_large}, status_code=413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _error(413, too_large)
            return message

        return await self.app(scope, limited, send)


def _validation_message(e: ValidationError | RequestValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in err.get("loc", ()) if x != "body")
        loc = loc.lstrip(".")
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def create_app(run_dirs: list[str | os.PathLike] | None = None, config: ServeConfig | None = None,
               models: dict[str, Served] | None = None) -> FastAPI:
    """The FastAPI app serving `run_dirs` (or already loaded `models`)."""
    config = config or ServeConfig()
    config.validate()
    models = models if models is not None else load_models(run_dirs or [], config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for m in models.values():  # uvicorn has drained the in-flight requests by now
            await m.batcher.stop()
            m.executor.shutdown(wait=True)

    app = FastAPI(title="seqlab", version="1", lifespan=lifespan,
                  description="Models trained with seqlab: classify, tag, translate, lm, image. "
                              "Every error is `{\"error\": \"one line\"}`.")
    app.state.models = models
    app.state.config = config
    app.add_middleware(_BodyLimit, max_bytes=config.max_body_bytes)

    @app.exception_handler(StarletteHTTPException)  # ours, and starlette's 404/405 for unknown routes
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(e)}, status_code=422)

    @app.exception_handler(SeqlabError)
    async def user_error(request: Request, e: SeqlabError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=422)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(e).__name__}); see the server log"},
                            status_code=500)

    def served(name: str) -> Served:
        if name not in models:
            raise _error(404, f"unknown model {name!r} (serving: {', '.join(models)})")
        return models[name]

    @app.get("/healthz", summary="Liveness: the server answers and how many models it serves")
    async def healthz() -> dict:
        return {"status": "ok", "models": len(models)}

    @app.get("/v1/models", summary="The models served: name, task, labels and the metrics of their runs")
    async def list_models() -> dict:
        return {"models": [m.description for m in models.values()]}

    @app.get("/v1/models/{name}", summary="One model: task, labels and the metrics of its run")
    async def describe(name: str) -> dict:
        return served(name).description

    @app.post("/v1/models/{name}/predict", summary="Predict with one model; the body depends on its task",
              openapi_extra=_openapi_bodies())
    async def predict(name: str, request: Request):
        m = served(name)
        if m.endpoint.body is None:
            items, options = await _upload(m, request, config)
        else:
            body = _parse(m.endpoint.body, await request.body())
            items, options = m.endpoint.items(body, config), m.endpoint.options(body, config)
            if getattr(body, "stream", False):
                return await _stream(m, items[0], options)
        results = await m.batcher.submit(items, options)
        return {"model": m.name, "task": m.task, "results": results}

    return app


def _parse(model: type[BaseModel], raw: bytes) -> BaseModel:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise _error(400, f"malformed JSON body ({e})" if raw.strip() else "empty body: send a JSON object"
                     ) from None
    if not isinstance(data, dict):
        raise _error(422, f"the body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _error(422, _validation_message(e)) from None


async def _upload(m: Served, request: Request, config: ServeConfig) -> tuple[list, dict]:
    """The decoded image of a multipart upload (field `image`) and the options (the form's other fields)."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raise _error(415, f"upload the image as multipart/form-data in a field named 'image' (got "
                          f"{kind or 'no content type'})")
    form = await request.form(max_files=1, max_fields=8, max_part_size=config.max_body_bytes)
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise _error(422, "no file in the form field 'image'")
    data = await upload.read()
    if not data:
        raise _error(422, "the uploaded image is empty")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    options = m.endpoint.options(fields, config)
    try:
        picture = await m.in_worker(m.endpoint.decode, m.predictor, data)
    except SeqlabError as e:  # Pillow names the bytes it was given as an object: leave that out
        raise _error(415, "not an image this model can read: " + re.sub(r" <[^>]*>", "", e.message)) from None
    return m.endpoint.items([picture], config), options


async def _stream(m: Served, prompt: str, options: dict) -> StreamingResponse:
    """Server-sent events of an lm's pieces as they are drawn; a bad prompt fails before the stream starts."""
    pieces = m.predictor.stream(prompt, **options)
    step = functools.partial(next, pieces, None)
    first = await m.in_worker(step)

    async def events() -> AsyncIterator[str]:
        piece = first
        while piece is not None:
            yield f"data: {json.dumps({'text': piece}, ensure_ascii=False)}\n\n"
            piece = await m.in_worker(step)
        yield "event: done\ndata: {}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _openapi_bodies() -> dict:
    """The request bodies of every task for the OpenAPI page, each with its example."""
    json_bodies = [e.body for e in ENDPOINTS.values() if e.body is not None]
    examples = {b.__name__: {"summary": (b.__doc__ or "").split(":")[0],
                             "value": b.model_config["json_schema_extra"]["examples"][0]}
                for b in json_bodies}
    upload = {"type": "object", "required": ["image"],
              "properties": {"image": {"type": "string", "format": "binary"},
                             "top_k": {"type": "integer", "description": "image: labels to return"},
                             "beam": {"type": "integer", "description": "caption: beam size"}}}
    upload_example = {"summary": "image, caption: an uploaded picture",
                      "value": {"image": "(binary)", "top_k": 3}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"oneOf": [b.model_json_schema() for b in json_bodies]},
                             "examples": examples},
        "multipart/form-data": {"schema": upload, "examples": {"image": upload_example}},
    }}}


def serve(run_dirs: list[str | os.PathLike], host: str = "127.0.0.1", port: int = 8000,
          config: ServeConfig | None = None, log_level: str = "info") -> None:
    """Run the server until SIGTERM/SIGINT (in-flight requests finish first)."""
    import uvicorn

    config = config or ServeConfig()
    app = create_app(run_dirs, config)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=config.drain_seconds))
    server.run()
