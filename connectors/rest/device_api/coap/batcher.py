"""Many CoAP posts, one storage commit: posts that arrive while a batch is being stored go together
into the next one, on one storage thread, so the event loop never blocks on a commit."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from connectors.rest.device_api.operations import Unavailable
from connectors.rest.device_api.payloads import BadPayload
from converters.model import ConvertedData

Store = Callable[[Sequence[ConvertedData]], None]


class StoreBatcher:
    """``await store(data)`` returns once ``data`` is durably stored (raises what the store raised)."""

    def __init__(self, store: Store, max_batch: int = 512) -> None:
        self._store = store
        self.max_batch = max_batch
        self._pending: list[tuple[ConvertedData, asyncio.Future[None]]] = []
        self._busy = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="coap-store")
        self.batches = 0
        self.stored = 0

    async def store(self, data: ConvertedData) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((data, future))
        if not self._busy:
            self._next()
        await future

    def _next(self) -> None:
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        if not batch:
            self._busy = False
            return
        self._busy = True
        done = asyncio.get_running_loop().run_in_executor(self._thread, self._run, batch)
        done.add_done_callback(lambda outcome: self._finished(batch, outcome))

    def _run(self, batch: list[tuple[ConvertedData, asyncio.Future[None]]]) -> list[BaseException | None]:
        """On the storage thread: the whole batch in one put; when one item is refused, each alone."""
        try:
            self._store([data for data, _ in batch])
            return [None] * len(batch)
        except Unavailable as exc:
            return [exc] * len(batch)
        except BadPayload:
            pass
        outcomes: list[BaseException | None] = []
        for data, _ in batch:
            try:
                self._store([data])
                outcomes.append(None)
            except (Unavailable, BadPayload) as exc:
                outcomes.append(exc)
        return outcomes

    def _finished(self, batch: list[tuple[ConvertedData, asyncio.Future[None]]],
                  outcome: asyncio.Future[list[BaseException | None]]) -> None:
        error = outcome.exception()
        results = [error] * len(batch) if error is not None else outcome.result()
        self.batches += 1
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # the request was cancelled meanwhile (what was stored stays stored)
            if result is None:
                self.stored += 1
                future.set_result(None)
            else:
                future.set_exception(result)
        self._next()

    def close(self) -> None:
        self._thread.shutdown(wait=True)
