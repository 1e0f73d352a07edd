"""Many CoAP posts, one storage commit: posts that arrive while a batch is being stored go together
into the next one, on one storage thread, so the event loop never blocks on a commit. Each post still
counts as one request for the gateway-wide rate limit (``storage.rateLimit``): within a batch only the
posts past it are refused.

``submit`` takes a plain callback (the fast path for posts answers from it without a task or a future
per message); ``store`` is the awaitable form for coroutines."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from connectors.rest.device_api.operations import Unavailable
from connectors.rest.device_api.payloads import BadPayload
from converters.model import ConvertedData

#: stores posts in one commit and returns each one's outcome: None once stored, else why it was refused
#: (past the gateway-wide rate limit); raises Unavailable when none was stored, BadPayload when one is bad
Store = Callable[[Sequence[ConvertedData]], Sequence[BaseException | None]]
#: called on the event loop once the data is stored (None) or was refused (the exception)
Done = Callable[[BaseException | None], None]


class StoreBatcher:
    """``await store(data)`` returns once ``data`` is durably stored (raises what the store raised)."""

    def __init__(self, store: Store, max_batch: int = 512) -> None:
        self._store = store
        self.max_batch = max_batch
        self._pending: list[tuple[ConvertedData, Done]] = []
        self._busy = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="coap-store")
        self.batches = 0
        self.stored = 0

    async def store(self, data: ConvertedData) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(error: BaseException | None) -> None:
            if future.done():
                return  # the request was cancelled meanwhile (what was stored stays stored)
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.submit(data, done)
        await future

    def submit(self, data: ConvertedData, done: Done) -> None:
        """Queue ``data``; ``done`` is called on the event loop's thread once it is stored or refused."""
        self._pending.append((data, done))
        if not self._busy:
            self._next()

    def _next(self) -> None:
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        if not batch:
            self._busy = False
            return
        self._busy = True
        done = asyncio.get_running_loop().run_in_executor(self._thread, self._run, batch)
        done.add_done_callback(lambda outcome: self._finished(batch, outcome))

    def _run(self, batch: list[tuple[ConvertedData, Done]]) -> list[BaseException | None]:
        """On the storage thread: the whole batch in one put, each post one request for the gateway-wide
        rate limit (the posts past it are refused alone); when one item cannot be stored, each alone."""
        try:
            return list(self._store([data for data, _ in batch]))
        except Unavailable as exc:
            return [exc] * len(batch)
        except BadPayload:
            pass
        outcomes: list[BaseException | None] = []
        for data, _ in batch:
            try:
                outcomes.extend(self._store([data]))
            except (Unavailable, BadPayload) as exc:
                outcomes.append(exc)
        return outcomes

    def _finished(self, batch: list[tuple[ConvertedData, Done]],
                  outcome: asyncio.Future[list[BaseException | None]]) -> None:
        error = outcome.exception()
        results = [error] * len(batch) if error is not None else outcome.result()
        self.batches += 1
        self._next()  # the next batch starts storing while this one's answers go out
        for (_, done), result in zip(batch, results, strict=True):
            if result is None:
                self.stored += 1
            done(result)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
