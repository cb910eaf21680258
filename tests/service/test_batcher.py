"""The token-budget batcher on its own: ordering, isolation, admission, shutdown."""

import asyncio
import threading
import time

import numpy as np
import pytest

from whitevec.service.engine import batcher as batcher_module
from whitevec.service.engine.bands import band
from whitevec.service.engine.batcher import Batcher, BatcherStopped, QueueFull

pytestmark = pytest.mark.anyio


class Recording:
    """A real encoder whose batches are recorded (and can be held)."""

    def __init__(self, encoder, hold: threading.Event | None = None):
        self.encoder, self.hold, self.batches = encoder, hold, []
        self.dim, self.engine, self.tokenizer = encoder.dim, encoder.engine, encoder.tokenizer

    def tokenize(self, texts):
        return self.encoder.tokenize(texts)

    def embed_tokens(self, ids):
        self.batches.append([len(row) for row in ids])
        if self.hold is not None:
            self.hold.wait(10)
        return self.encoder.embed_tokens(ids)


async def hold_the_model(batcher: Batcher, encoder, hold: threading.Event) -> tuple[Recording, asyncio.Task]:
    """A recording encoder whose first batch (one text) is running and held until `hold` is set."""
    rec = Recording(encoder, hold)
    blocker = asyncio.create_task(batcher.encode(rec, ["hold the model"]))
    while not rec.batches:
        await asyncio.sleep(0.005)
    return rec, blocker


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


def _brute_window(lengths, anchors, max_rows, max_tokens):
    """Every window holding an anchor: most rows that fit, then least padding, then leftmost."""
    best = None
    for lo in range(len(lengths)):
        for hi in range(lo + 1, len(lengths) + 1):
            size = hi - lo
            if not any(lo <= a < hi for a in anchors) or size > max_rows or (
                    size > 1 and lengths[hi - 1] * size > max_tokens):
                continue
            key = (-size, lengths[hi - 1] * size - sum(lengths[lo:hi]), lo)
            best = min(best, key) if best else key
    return best


def test_batch_window_is_the_fullest_tightest_band_holding_a_row_of_the_first_request():
    rng = np.random.default_rng(0)
    for _ in range(600):
        n = int(rng.integers(1, 40))
        lengths = sorted(int(x) for x in rng.integers(2, 60, n))
        anchors = sorted(int(a) for a in rng.choice(n, int(rng.integers(1, min(n, 6) + 1)), replace=False))
        max_rows, max_tokens = int(rng.integers(1, 12)), int(rng.integers(20, 300))
        lo, hi = band(lengths, anchors, max_rows, max_tokens)
        size, waste, left = _brute_window(lengths, anchors, max_rows, max_tokens)
        assert any(lo <= a < hi for a in anchors) and hi - lo == -size
        assert lengths[hi - 1] * (hi - lo) - sum(lengths[lo:hi]) == waste and lo == left


def test_the_batch_band_need_not_hold_the_first_requests_longest_row():
    """The first request's long row does not drag every batch into the long tail: the band is the tightest
    that holds any of its rows."""
    lengths = [10] * 6 + [11] * 6 + [40]
    anchors = [0, 12]  # the first request: one short row and the longest
    assert band(lengths, anchors, 6, 10_000) == (0, 6)


async def test_batches_are_length_bands_across_requests(tiny_encoder):
    """Eight requests of mixed lengths queued together are served in bands of similar length
    (less padding than batching each request on its own), and each still gets its own vectors."""
    hold = threading.Event()
    batcher = Batcher(max_batch=8, max_batch_tokens=8192, max_queue_tokens=100_000)
    await batcher.start()
    rec, blocker = await hold_the_model(batcher, tiny_encoder, hold)
    rng = np.random.default_rng(1)
    texts = [[" ".join(["word"] * int(rng.integers(1, 40))) + f" {i} {j}" for j in range(8)] for i in range(8)]
    calls = [asyncio.create_task(batcher.encode(rec, t)) for t in texts]
    while len(batcher._requests) < 9:
        await asyncio.sleep(0.005)
    hold.set()
    results = await asyncio.gather(*calls)
    await blocker
    await batcher.stop()
    for t, r in zip(texts, results):
        np.testing.assert_allclose(r.vectors, tiny_encoder.encode(t).vectors, atol=1e-5)
    served = rec.batches[1:]
    padded = sum(max(b) * len(b) for b in served)
    per_request = sum(max(len(row) for row in tiny_encoder.tokenize(t)[0]) * len(t) for t in texts)
    assert sorted(x for b in served for x in b) == sorted(len(row) for t in texts for row in tiny_encoder.tokenize(t)[0])
    assert padded < 0.8 * per_request


async def test_post_runs_in_the_output_thread_once_per_request(tiny_encoder):
    batcher = Batcher(max_batch=32, max_batch_tokens=8192, max_queue_tokens=100_000)
    await batcher.start()
    seen = []

    def post(result):
        seen.append(threading.current_thread().name)
        if result.vectors.shape[0] == 2:
            raise ValueError("two is too many")
        return float(result.vectors.sum())

    ok = await asyncio.gather(*[batcher.encode(tiny_encoder, [f"text {i}"], post) for i in range(5)])
    with pytest.raises(ValueError, match="two is too many"):
        await batcher.encode(tiny_encoder, ["a", "b"], post)
    assert ok == [pytest.approx(float(tiny_encoder.encode([f"text {i}"]).vectors.sum()), rel=1e-5) for i in range(5)]
    assert len(seen) == 6 and all(name.startswith("whitevec-output") for name in seen)
    assert (await batcher.encode(tiny_encoder, ["after"])).vectors.shape == (1, tiny_encoder.dim)
    await batcher.stop()


async def test_batch_budgets_are_the_engines_unless_set(tiny_encoder):
    """Without settings, each engine's tuned rows × tokens (engines.BATCH_LIMITS) bound its batches."""
    from whitevec.models.engines import BATCH_LIMITS, DEFAULT_BATCH_LIMITS

    rec = Recording(tiny_encoder)
    assert Batcher(None, None, 10_000).limits(rec) == DEFAULT_BATCH_LIMITS  # torch
    rec.engine = "torch-half"
    assert Batcher(None, None, 10_000).limits(rec) == BATCH_LIMITS["torch-half"]
    assert Batcher(8, None, 10_000).limits(rec) == (8, BATCH_LIMITS["torch-half"][1])
    rec.engine = "torch"
    batcher = Batcher(None, None, 100_000)
    await batcher.start()
    texts = [f"the cat {i} sat on the mat" for i in range(100)]
    await asyncio.gather(*[batcher.encode(rec, texts[i:i + 10]) for i in range(0, 100, 10)])
    await batcher.stop()
    assert max(len(b) for b in rec.batches) == DEFAULT_BATCH_LIMITS[0]  # 32 rows, then the rest


async def test_short_requests_skip_the_tokenizer_thread_and_long_ones_use_it(tiny_encoder):
    batcher = Batcher(None, None, 100_000)
    await batcher.start()
    seen: list[str] = []
    rec = Recording(tiny_encoder)
    rec.tokenize = lambda texts: seen.append(threading.current_thread().name) or tiny_encoder.tokenize(texts)
    await batcher.encode(rec, ["hello world"])
    await batcher.encode(rec, ["the cat sat on the mat " * 60])  # 1,380 characters
    await batcher.stop()
    assert seen[0] == threading.main_thread().name and seen[1].startswith("whitevec-tokenize")


async def test_callers_coming_back_together_share_a_batch(tiny_encoder, monkeypatch):
    """Right after a batch that answered four callers, their next requests, arriving a few milliseconds
    apart, wait for each other (up to GATHER_S) and run as one batch, not the first alone."""
    monkeypatch.setattr(batcher_module, "GATHER_S", 0.5)  # far above the gaps below, on any machine
    monkeypatch.setattr(batcher_module, "RETURN_WINDOW_S", 5.0)
    hold = threading.Event()
    batcher = Batcher(max_batch=64, max_batch_tokens=8192, max_queue_tokens=100_000)
    await batcher.start()
    rec, blocker = await hold_the_model(batcher, tiny_encoder, hold)
    first = [asyncio.create_task(batcher.encode(rec, [f"first round {i}"])) for i in range(4)]
    while len(batcher._requests) < 5:
        await asyncio.sleep(0.005)
    hold.set()
    await asyncio.gather(blocker, *first)
    assert [len(b) for b in rec.batches] == [1, 4]
    second = []
    for i in range(4):  # the callers come back one by one
        second.append(asyncio.create_task(batcher.encode(rec, [f"second round {i}"])))
        await asyncio.sleep(0.01)
    await asyncio.gather(*second)
    await batcher.stop()
    assert [len(b) for b in rec.batches] == [1, 4, 4]


async def test_a_lone_caller_or_one_after_a_quiet_spell_never_waits(tiny_encoder, monkeypatch):
    """One caller sending request after request is not held (the batch before answered only it), nor is the
    first request after a quiet spell, even after a batch that answered several."""
    monkeypatch.setattr(batcher_module, "GATHER_S", 10.0)
    monkeypatch.setattr(batcher_module, "RETURN_WINDOW_S", 0.05)
    batcher = Batcher(max_batch=64, max_batch_tokens=8192, max_queue_tokens=100_000)
    await batcher.start()
    started = time.perf_counter()
    for i in range(3):
        await batcher.encode(tiny_encoder, [f"one caller {i}"])
    assert time.perf_counter() - started < 5  # held even once, it would take 10 s
    await asyncio.gather(*(batcher.encode(tiny_encoder, [f"together {i}"]) for i in range(3)))
    await asyncio.sleep(0.2)  # a quiet spell, longer than RETURN_WINDOW_S
    started = time.perf_counter()
    await batcher.encode(tiny_encoder, ["after the quiet spell"])
    await batcher.stop()
    assert time.perf_counter() - started < 5
