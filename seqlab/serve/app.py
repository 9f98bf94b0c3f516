"""The HTTP server: `seqlab serve RUN_DIR [RUN_DIR ...]`, a FastAPI app over `seqlab.load(run_dir)`.

    GET  /healthz                      {"status": "ok", "models": N}
    GET  /v1/models                    each model: name, task, inputs, options, labels, metrics of its run
    GET  /v1/models/{name}             one of them
    POST /v1/models/{name}/predict     a body made from the model's predictor (see /docs)
    GET  /  and  /runs                 the web page to try each model, and the runs' cards and curves
                                       (`seqlab.serve.page`; its data: GET /v1/runs)

A request body is made from what the predictor describes (`Predictor.inputs` and `.options`), so every task
is served with no table of its own here: the items under the input's field name (`texts`, `sentences`: a
string or a list of tokens, `prompt`) and the predictor's options, e.g. classify `{"texts": [...],
"top_k": 1}`, translate `{"texts": [...], "beam": null}`, lm `{"prompt": "...", "max_new_tokens": 200,
"temperature": 1.0, ..., "stream": false}`, where `stream: true` answers with server-sent events, one
`data: {"text": piece}` per piece and a final `event: done`. Image inputs (image, caption): a
multipart/form-data upload with the file in the field `image` and the options as text fields.

Concurrent requests to one model are micro-batched (`seqlab.serve.batching`) and run in the model's own
worker thread, off the event loop; torch's threads come from the run's config (or `threads`). Bad input
never reaches a 500: malformed JSON -> 400, an unknown model -> 404, a body over `max_body_bytes` -> 413,
an image over `max_pixels` (read from its header, never decoded) -> 413, a non-image upload or a wrong
content type -> 415, wrong types, empty texts and exceeded limits -> 422; a model holding `max_pending`
requests already, or a request unanswered after `request_timeout_s` -> 503 with `Retry-After`; every
error is `{"error": "one line"}`. SIGTERM: uvicorn stops accepting, in-flight requests finish (up to
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
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from seqlab.api import info, load
from seqlab.data.images import MAX_PIXELS
from seqlab.errors import ConfigError, ImageTooLarge, SeqlabError
from seqlab.report.runs import run_names
from seqlab.serve.batching import MicroBatcher
from seqlab.serve.page import add_pages

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
    # characters per model call: a request over it is split, and the small ones queued behind it run between
    # its parts (8 texts of max_chars: ~3 ms of a bag model)
    max_batch_chars: int = 16_000
    threads: int | None = None  # torch threads (None: the runs' config)
    drain_seconds: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    max_pixels: int = MAX_PIXELS  # image uploads: larger ones (by their header) -> 413, never decoded
    # requests one model holds at once, waiting or running (an upload's bytes, a stream); more -> 503
    max_pending: int = 64
    request_timeout_s: float = 30.0  # a request not answered (or a stream not started) by then -> 503

    def validate(self) -> None:
        for name in ("max_body_bytes", "max_texts", "max_chars", "max_new_tokens", "max_beam", "max_batch",
                     "max_batch_chars", "max_pixels", "max_pending"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_wait_ms < 0 or self.drain_seconds < 0:
            raise ConfigError("batch_wait_ms and drain_seconds must be >= 0")
        if self.request_timeout_s <= 0:
            raise ConfigError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")


# ---------------------------------------------------------------------------------------------- bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


ITEMS = {"text": list[str], "tokens": list[str | list[str]], "prompt": str}  # a JSON body's items, by input kind
OPTION_LIMITS = {"beam": "max_beam", "max_new_tokens": "max_new_tokens"}  # option -> the ServeConfig bound


def request_body(predictor) -> type[BaseModel] | None:
    """The JSON body of a predictor's requests, made from its inputs and options (None: an image upload)."""
    kind, field_name = predictor.inputs.kind, predictor.inputs.field
    if kind == "image":
        return None
    fields: dict[str, Any] = {field_name: (ITEMS[kind], ...)}
    for name, o in predictor.options.items():
        fields[name] = (o.type | None if o.optional or o.default is None else o.type, o.default)
    if kind == "prompt":
        fields["stream"] = (bool, False)  # server-sent events, piece by piece
    items, _ = predictor.example_inputs(1)
    example = {field_name: (items[0] if items else "") if kind == "prompt" else items[:1]}
    base = type("_Base", (_Body,), {"model_config": ConfigDict(json_schema_extra={"examples": [example]})})
    return create_model(f"{predictor.task_name.capitalize()}Request", __base__=base,
                        __doc__=f"{predictor.task_name}: {predictor.inputs.help}", **fields)


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


RETRY_AFTER_S = 1  # what a 503 asks a client to wait before trying again


def _busy(message: str) -> HTTPException:
    """503 with Retry-After: the model is at its limit of pending requests, or a request ran out of time."""
    return HTTPException(status_code=503, detail=message, headers={"Retry-After": str(RETRY_AFTER_S)})


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


def _items(predictor, body: BaseModel, limits: ServeConfig) -> list:
    """The items of a JSON request, checked against the limits."""
    value = getattr(body, predictor.inputs.field)
    if predictor.inputs.kind == "prompt":
        return [_text(value, predictor.inputs.field, limits)]
    return _texts(value, predictor.inputs.field, limits)


def _options(predictor, given: dict[str, Any], limits: ServeConfig) -> dict:
    """The predictor's options of a request, checked (422) by the predictor and against the server's bounds."""
    try:
        options = predictor.check_options({k: v for k, v in given.items() if k in predictor.options})
    except SeqlabError as e:
        raise _error(422, e.message) from None
    for name, bound in OPTION_LIMITS.items():
        limit = getattr(limits, bound)
        if name in options and options[name] is not None and options[name] > limit:
            if name not in given:  # the predictor's default is above the server's bound
                options[name] = limit
            else:
                raise _error(422, f"{name} must be at most {limit} on this server, got {options[name]}")
    return options


def _form_value(predictor, name: str, value: str) -> Any:
    """A text field of an upload form as the option's type."""
    o = predictor.options[name]
    value = value.strip()
    if not value:
        return o.default
    try:
        if o.type is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        return o.type(value)
    except ValueError:
        kind = {int: "an integer", float: "a number", bool: "true or false"}[o.type]
        raise _error(422, f"{name} must be {kind}, got {value!r}") from None


# ---------------------------------------------------------------------------------------------- models
@dataclass
class Served:
    """One model behind the server: its predictor, its request body, its worker thread and its batcher."""

    name: str
    task: str
    predictor: Any
    body: type[BaseModel] | None
    executor: ThreadPoolExecutor
    batcher: MicroBatcher
    description: dict = field(default_factory=dict)
    pending: int = 0  # requests held now (waiting, running or streaming)

    async def in_worker(self, fn: Callable, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def admit(self, limit: int) -> None:
        """Hold one more request, or refuse it (503) when `limit` are held; `release` when it is answered."""
        if self.pending >= limit:
            raise _busy(f"model {self.name!r} is busy ({self.pending} requests in progress, the limit of "
                        f"max_pending); retry in {RETRY_AFTER_S} s")
        self.pending += 1

    def release(self) -> None:
        self.pending -= 1


def _describe(name: str, run_dir: Path, predictor, limits: dict) -> dict:
    about = info(run_dir)
    summary = about.get("summary") or {}
    return {"name": name, "dataset": about["dataset"], **predictor.describe(), "attends": predictor.attends(),
            "metrics": summary.get("results", {}),
            "parameters": summary.get("parameters"), "endpoint": f"/v1/models/{name}/predict", "limits": limits}


def _limits(predictor, config: ServeConfig) -> dict:
    """The server's limits that apply to a model's requests, for its description."""
    kind = predictor.inputs.kind
    names = ["max_body_bytes", "max_pending", "request_timeout_s", "max_batch", "max_batch_chars", "batch_wait_ms"]
    names += ["max_pixels"] if kind == "image" else ["max_chars"] if kind == "prompt" else ["max_texts", "max_chars"]
    names += [bound for option, bound in OPTION_LIMITS.items() if option in predictor.options]
    return {n: getattr(config, n) for n in names}


def load_models(run_dirs: list[str | os.PathLike], config: ServeConfig) -> dict[str, Served]:
    """Load each run's predictor, its request body and its worker."""
    if not run_dirs:
        raise ConfigError("give at least one run directory to serve")
    runs = [Path(r) for r in run_dirs]
    models = {}
    for name, run in zip(run_names(runs), runs, strict=True):
        predictor = load(run)
        predictor.max_pixels = config.max_pixels
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"seqlab-{name}")
        batcher = MicroBatcher(lambda items, options, p=predictor: p.predict(items, **options), executor,
                               config.max_batch, config.batch_wait_ms / 1000, config.max_batch_chars)
        models[name] = Served(name, predictor.task_name, predictor, request_body(predictor), executor, batcher,
                              _describe(name, run, predictor, _limits(predictor, config)))
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
                  description="Models trained with seqlab (`GET /v1/models` describes each: its task, inputs and "
                              "options). Every error is `{\"error\": \"one line\"}`.")
    app.state.models = models
    app.state.config = config
    app.add_middleware(_BodyLimit, max_bytes=config.max_body_bytes)
    add_pages(app, models)

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
              openapi_extra=_openapi_bodies(models))
    async def predict(name: str, request: Request):
        m = served(name)
        m.admit(config.max_pending)  # before reading the body: a flood is refused at once
        streaming = False

        async def answer():
            nonlocal streaming
            if m.body is None:
                items, options = await _upload(m, request, config)
            else:
                body = _parse(m.body, await request.body())
                given = body.model_dump(exclude_unset=True)
                items, options = _items(m.predictor, body, config), _options(m.predictor, given, config)
                if getattr(body, "stream", False):
                    response = await _stream(m, items[0], options)
                    streaming = True  # the stream releases the model when it ends or its client leaves
                    return response
            return {"model": m.name, "task": m.task, "results": await m.batcher.submit(items, options)}

        try:
            return await asyncio.wait_for(answer(), config.request_timeout_s)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            raise _busy(f"no answer within request_timeout_s = {config.request_timeout_s:g} s; retry in "
                        f"{RETRY_AFTER_S} s") from None
        finally:
            if not streaming:
                m.release()

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
    unknown = sorted(set(fields) - set(m.predictor.options))
    if unknown:
        raise _error(422, f"{unknown[0]}: not an option of this model (its options: "
                          f"{', '.join(m.predictor.options) or 'none'})")
    given = {k: _form_value(m.predictor, k, v) for k, v in fields.items()}
    options = _options(m.predictor, {k: v for k, v in given.items() if v is not None}, config)
    try:
        picture = await m.in_worker(m.predictor.load_input, data)
    except ImageTooLarge as e:
        raise _error(413, f"{e.message} (max_pixels)") from None
    except SeqlabError as e:  # Pillow names the bytes it was given as an object: leave that out
        raise _error(415, "not an image this model can read: " + re.sub(r" <[^>]*>", "", e.message)) from None
    return [picture], options


class _Stream(StreamingResponse):
    """A streaming response that calls `on_close` once it is over: sent in full, failed, or its client gone
    (Starlette then cancels the stream at its next await, so no further piece is drawn)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(content, media_type="text/event-stream")
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


async def _stream(m: Served, prompt: str, options: dict) -> StreamingResponse:
    """Server-sent events of an lm's pieces as they are drawn; a bad prompt fails before the stream starts.
    Each piece is drawn in the model's worker when the previous one has been sent: a client that leaves
    stops the generation within one step."""
    pieces = m.predictor.stream(prompt, **options)
    step = functools.partial(next, pieces, None)
    first = await m.in_worker(step)

    async def events() -> AsyncIterator[str]:
        piece = first
        while piece is not None:
            yield f"data: {json.dumps({'text': piece}, ensure_ascii=False)}\n\n"
            piece = await m.in_worker(step)
        yield "event: done\ndata: {}\n\n"

    return _Stream(events(), m.release)


def _openapi_bodies(models: dict[str, Served]) -> dict:
    """The request bodies of the served models for the OpenAPI page, each with its example: JSON bodies, and
    multipart uploads (the picture in `image`, the options as form fields) for image models."""
    bodies = {m.body.__name__: m.body for m in models.values() if m.body is not None}
    examples = {name: {"summary": (b.__doc__ or "").split(":")[0],
                       "value": b.model_config["json_schema_extra"]["examples"][0]} for name, b in bodies.items()}
    content: dict[str, Any] = {}
    if bodies:
        content["application/json"] = {"schema": {"oneOf": [b.model_json_schema() for b in bodies.values()]},
                                       "examples": examples}
    uploads = [m for m in models.values() if m.body is None]
    if uploads:
        properties: dict[str, Any] = {"image": {"type": "string", "format": "binary",
                                                "description": uploads[0].predictor.inputs.help}}
        for m in uploads:
            for name, o in m.predictor.options.items():
                kind = {int: "integer", float: "number", bool: "boolean"}[o.type]
                properties.setdefault(name, {"type": kind, "description": f"{m.task}: {o.help}"})
        content["multipart/form-data"] = {
            "schema": {"type": "object", "required": ["image"], "properties": properties},
            "examples": {m.task: {"summary": f"{m.task}: an uploaded picture", "value": {"image": "(binary)"}}
                         for m in uploads}}
    return {"requestBody": {"required": True, "content": content}}


def serve(run_dirs: list[str | os.PathLike], host: str = "127.0.0.1", port: int = 8000,
          config: ServeConfig | None = None, log_level: str = "info") -> None:
    """Run the server until SIGTERM/SIGINT (in-flight requests finish first)."""
    import socket

    import uvicorn

    config = config or ServeConfig()
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:  # a busy port: one line
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); is another server there? "
                              "choose --port") from None
    app = create_app(run_dirs, config)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=config.drain_seconds))
    server.run()
