"""Coalesces concurrent encode work into model batches, off the event loop, behind a bounded queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from whitevec.models.encoder import EncodeResult, Encoder

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More texts are waiting than the queue holds; the caller should retry later."""


@dataclass
class _Item:
    encoder: Encoder
    texts: list[str]
    future: asyncio.Future


class Batcher:
    """Requests wait up to max_wait_ms for company, then go to the model together.

    The queue is bounded in texts (max_queue): a request that would overflow it is
    refused at once (QueueFull → 429) instead of piling up latency. One model thread
    runs batches in turn; items of different encoders (a model swap) never share a batch.
    """

    def __init__(self, max_batch: int, max_wait_ms: float, max_queue: int,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.pending = 0
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="whitevec-model")
        self._task = asyncio.create_task(self._run(), name="whitevec-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError("server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def try_acquire(self, n: int) -> bool:
        """Reserve queue room for n texts; a lone request larger than the queue still runs."""
        if self.pending and self.pending + n > self.max_queue:
            return False
        self.pending += n
        return True

    async def encode(self, encoder: Encoder, texts: list[str]) -> EncodeResult:
        if self._queue is None:
            raise RuntimeError("batcher is not started")
        if not self.try_acquire(len(texts)):
            raise QueueFull(f"{self.pending} texts are waiting for the model (limit {self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(encoder, texts, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while True:
            items = [await self._queue.get()]
            size = len(items[0].texts)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                items.append(item)
                size += len(item.texts)
            await self._run_batch(loop, items)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, items: list[_Item]) -> None:
        groups: dict[int, list[_Item]] = {}
        for item in items:
            groups.setdefault(id(item.encoder), []).append(item)
        for group in groups.values():
            texts = [t for item in group for t in item.texts]
            try:
                result = await loop.run_in_executor(self._executor, group[0].encoder.encode, texts, self.max_batch)
            except Exception as exc:  # the model failed: every waiting request hears why
                log.exception("encoding a batch of %d texts failed", len(texts))
                for item in group:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            finally:
                self.pending -= len(texts)
            if self.on_batch is not None:
                self.on_batch(len(texts))
            start = 0
            for item in group:
                end = start + len(item.texts)
                if not item.future.done():
                    item.future.set_result(EncodeResult(np.ascontiguousarray(result.vectors[start:end]),
                                                        result.truncated[start:end], result.tokens[start:end]))
                start = end
