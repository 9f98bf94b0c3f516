"""Dynamic micro-batching: requests to one model that arrive close together run as one call of the model,
and a large request does not hold up the small ones queued behind it.

A request brings a list of items (texts, sentences, images...) and options that must be equal across a call
(top-k, beam size...). While the model runs one batch, new requests queue up; the next batch is formed when
the previous one is done: if the queued items do not fill it, it first waits up to `wait` seconds for more
(0: not at all). It then takes items round-robin, one of each queued request in turn (those the previous
batch left out first), until it holds `max_batch` items or `max_chars` characters (a single item always
fits): a request larger than that is split over several batches, and a one-text request that arrives behind
three 64-text requests runs in the next batch, not after them. The items of a batch with the same options
run as one call of `run(items, options)` in the model's executor, off the event loop; each request gets its
results, in its order, once its last item has run. If a batched call fails with a user error (a
`SeqlabError`: one bad prompt, say), each request's part runs again alone, so only the bad request gets the
error. `max_batch=1` turns batching off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from seqlab.errors import SeqlabError


def item_chars(item: Any) -> int:
    """What an item costs a batch: the characters of a text, or of a pre-split sentence's words; 1 otherwise
    (an image, a token list)."""
    if isinstance(item, str):
        return len(item)
    if isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item):
        return sum(map(len, item))
    return 1


@dataclass(eq=False)
class _Request:
    items: list
    options: tuple  # the options dict as sorted (key, value) pairs: requests with equal options share a call
    future: asyncio.Future
    taken: int = 0  # items given to a batch so far
    results: list = field(default_factory=list)


@dataclass
class _Part:
    """The items `start:stop` of one request, in one batch."""

    request: _Request
    start: int
    stop: int

    @property
    def items(self) -> list:
        return self.request.items[self.start:self.stop]


class MicroBatcher:
    """Gathers concurrent requests for one model; see the module docstring. `calls` counts model calls."""

    def __init__(self, run: Callable[[list, dict], list], executor: Executor, max_batch: int = 64,
                 wait: float = 0.0, max_chars: int | None = None):
        if max_batch < 1 or wait < 0 or (max_chars is not None and max_chars < 1):
            raise ValueError(f"max_batch and max_chars must be >= 1 and wait >= 0, got {max_batch}, "
                             f"{max_chars}, {wait}")
        self.run, self.executor = run, executor
        self.max_batch, self.wait, self.max_chars = max_batch, wait, max_chars
        self.calls = 0
        self._queued: list[_Request] = []
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, items: list, options: dict[str, Any]) -> list:
        """The results of `run` for `items` (one per item), once the batches holding them have run."""
        if self._worker is None:  # started by the first request, inside the server's event loop
            self._arrived = asyncio.Event()
            self._worker = asyncio.create_task(self._loop())
        if not items:
            return []
        future = asyncio.get_running_loop().create_future()
        self._queued.append(_Request(list(items), tuple(sorted(options.items())), future))
        self._arrived.set()
        return await future

    async def stop(self) -> None:
        """Stop gathering; requests still queued fail (the server drains in-flight requests before this)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            for request in self._queued:
                _settle(request.future, error=RuntimeError("the server is shutting down"))
            self._queued.clear()
            self._worker = None

    def _waiting_items(self) -> int:
        self._queued = [r for r in self._queued if not r.future.done()]  # their clients may have gone away
        return sum(len(r.items) - r.taken for r in self._queued)

    async def _next_batch(self) -> list[_Part]:
        """Wait for requests, then for `wait` more seconds while they do not fill a batch; then take items."""
        loop = asyncio.get_running_loop()
        while not self._waiting_items():
            self._arrived.clear()
            await self._arrived.wait()
        deadline = loop.time() + self.wait
        while self._waiting_items() < self.max_batch and (remaining := deadline - loop.time()) > 0:
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self._take()

    def _take(self) -> list[_Part]:
        """One item of each queued request in turn, until the batch holds max_batch items or max_chars."""
        counts = [0] * len(self._queued)
        n = chars = 0
        full = False
        while not full:
            moved = False
            for i, request in enumerate(self._queued):
                j = request.taken + counts[i]
                if j == len(request.items):
                    continue
                cost = item_chars(request.items[j])
                if n and (n >= self.max_batch or (self.max_chars is not None and chars + cost > self.max_chars)):
                    full = True
                    break
                counts[i] += 1
                n, chars, moved = n + 1, chars + cost, True
            full = full or not moved
        parts = []
        for request, k in zip(self._queued, counts, strict=True):
            if k:
                parts.append(_Part(request, request.taken, request.taken + k))
                request.taken += k
        # the requests that got nothing go first next time, those served and not done join the end
        served = list(zip(self._queued, counts, strict=True))
        self._queued = [r for r, k in served if not k] + [r for r, k in served if k and r.taken < len(r.items)]
        return parts

    async def _loop(self) -> None:
        while True:
            groups: dict[tuple, list[_Part]] = {}
            for part in await self._next_batch():
                groups.setdefault(part.request.options, []).append(part)
            for options, group in groups.items():
                await self._run(group, dict(options))

    async def _call(self, items: list, options: dict) -> list:
        self.calls += 1
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.run, items, options)

    async def _run(self, group: list[_Part], options: dict) -> None:
        group = [p for p in group if not p.request.future.done()]  # failed in an earlier part, or abandoned
        if not group:
            return
        try:
            results = await self._call([x for p in group for x in p.items], options)
        except SeqlabError as e:
            if len(group) == 1:
                _settle(group[0].request.future, error=e)
            else:  # find the bad request(s): each part runs alone
                for part in group:
                    await self._run([part], options)
            return
        except Exception as e:  # a bug: every request of the call reports it
            for part in group:
                _settle(part.request.future, error=e)
            return
        start = 0
        for part in group:
            request = part.request
            request.results += results[start:start + part.stop - part.start]
            start += part.stop - part.start
            if len(request.results) == len(request.items):
                _settle(request.future, result=request.results)


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
