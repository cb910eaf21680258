"""The token-budget batcher on its own: ordering, isolation, admission, shutdown."""

import asyncio
import threading
import time

import numpy as np
import pytest

from whitevec.service.batcher import Batcher, BatcherStopped, QueueFull

pytestmark = pytest.mark.anyio


class Recording:
    """A real encoder whose batches are recorded (and can be held)."""

    def __init__(self, encoder, hold: threading.Event | None = None):
        self.encoder, self.hold, self.batches = encoder, hold, []
        self.dim = encoder.dim

    def tokenize(self, texts):
        return self.encoder.tokenize(texts)

    def embed_tokens(self, ids):
        self.batches.append([len(row) for row in ids])
        if self.hold is not None:
            self.hold.wait(10)
        return self.encoder.embed_tokens(ids)


async def test_results_come_back_in_order_for_each_request(tiny_encoder):
    batcher = Batcher(max_batch=4, max_batch_tokens=64, max_queue_tokens=10_000)
    await batcher.start()
    rec = Recording(tiny_encoder)
    texts = [[f"the cat {i}", f"a red car {i} by the river", "hello"] for i in range(12)]
    results = await asyncio.gather(*[batcher.encode(rec, t) for t in texts])
    await batcher.stop()
    for t, r in zip(texts, results):
        np.testing.assert_allclose(r.vectors, tiny_encoder.encode(t).vectors, atol=1e-5)
    assert all(len(b) <= 4 and max(b) * len(b) <= 64 for b in rec.batches)
    assert batcher.pending == 0


async def test_admission_is_counted_in_tokens(tiny_encoder):
    hold = threading.Event()
    batcher = Batcher(max_batch=32, max_batch_tokens=8192, max_queue_tokens=10)
    await batcher.start()
    rec = Recording(tiny_encoder, hold)
    first = asyncio.create_task(batcher.encode(rec, ["the cat sat on the mat"]))  # 8 tokens: admitted
    while not rec.batches:
        await asyncio.sleep(0.005)
    with pytest.raises(QueueFull, match="8 tokens are waiting"):
        await batcher.encode(rec, ["hello world"])  # 4 more would pass 10
    hold.set()
    await first
    assert (await batcher.encode(rec, ["hello world"])).vectors.shape == (1, tiny_encoder.dim)
    await batcher.stop()


async def test_stop_answers_every_waiting_request(tiny_encoder):
    hold = threading.Event()
    batcher = Batcher(max_batch=1, max_batch_tokens=8192, max_queue_tokens=10_000)
    await batcher.start()
    rec = Recording(tiny_encoder, hold)
    waiting = [asyncio.create_task(batcher.encode(rec, [f"text {i}"])) for i in range(5)]
    while not rec.batches:
        await asyncio.sleep(0.005)
    threading.Timer(0.2, hold.set).start()
    started = time.monotonic()
    await batcher.stop()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert time.monotonic() - started < 5
    assert all(isinstance(o, BatcherStopped) for o in outcomes)
    with pytest.raises(BatcherStopped):
        await batcher.encode(rec, ["after"])
