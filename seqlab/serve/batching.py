"""Dynamic micro-batching: requests to one model that arrive close together run as one call of the model.

A request brings a list of items (texts, sentences, images...) and options that must be equal across a call
(top-k, beam size...). While the model runs one batch, new requests queue up; the next batch takes all of
them, and then waits up to `wait` seconds for more (0: not at all), closing early once it holds `max_batch`
items (a request is never split, so a batch may hold a few more). Requests with the same options then run
as one call of `run(items, options)` in the model's executor, off the event loop, and each gets its own
slice of the results. If a batched call fails with a user error (a `SeqlabError`: one bad prompt, say),
each of its requests runs again alone, so only the bad one gets the error. `max_batch=1` turns batching off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from seqlab.errors import SeqlabError


@dataclass
class _Request:
    items: list
    options: tuple  # the options dict as sorted (key, value) pairs: requests with equal options share a call
    future: asyncio.Future


class MicroBatcher:
    """Gathers concurrent requests for one model; see the module docstring. `calls` counts model calls."""

    def __init__(self, run: Callable[[list, dict], list], executor: Executor, max_batch: int = 64,
                 wait: float = 0.0):
        if max_batch < 1 or wait < 0:
            raise ValueError(f"max_batch must be >= 1 and wait >= 0, got {max_batch}, {wait}")
        self.run, self.executor = run, executor
        self.max_batch, self.wait = max_batch, wait
        self.calls = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, items: list, options: dict[str, Any]) -> list:
        """The results of `run` for `items` (one per item), once the batch holding them has run."""
        if self._worker is None:  # started by the first request, inside the server's event loop
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(list(items), tuple(sorted(options.items())), future))
        return await future

    async def stop(self) -> None:
        """Stop gathering; requests still queued fail (the server drains in-flight requests before this)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            while not self._queue.empty():
                request = self._queue.get_nowait()
                if not request.future.done():
                    request.future.set_exception(RuntimeError("the server is shutting down"))
            self._worker = None

    async def _gather(self) -> list[_Request]:
        """The next batch: the first request, then what arrives within `wait` (up to `max_batch` items)."""
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        n = len(batch[0].items)
        deadline = loop.time() + self.wait
        while n < self.max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                request = self._queue.get_nowait()
            batch.append(request)
            n += len(request.items)
        return batch

    async def _loop(self) -> None:
        while True:
            groups: dict[tuple, list[_Request]] = {}
            for request in await self._gather():
                if not request.future.done():  # its client may have gone away while it waited
                    groups.setdefault(request.options, []).append(request)
            for options, group in groups.items():
                await self._run(group, dict(options))

    async def _call(self, items: list, options: dict) -> list:
        self.calls += 1
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.run, items, options)

    async def _run(self, group: list[_Request], options: dict) -> None:
        try:
            results = await self._call([x for r in group for x in r.items], options)
        except SeqlabError as e:
            if len(group) == 1:
                _settle(group[0].future, error=e)
            else:  # find the bad request(s): each runs alone
                for request in group:
                    await self._run([request], options)
            return
        except Exception as e:  # a bug: every request of the call reports it
            for request in group:
                _settle(request.future, error=e)
            return
        start = 0
        for request in group:
            _settle(request.future, result=results[start:start + len(request.items)])
            start += len(request.items)


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
