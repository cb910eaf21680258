"""Prometheus metrics, in a registry of the app's own (several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from .database import JobsUnavailable


class _JobsCollector:
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self):
        try:
            counts = self.counts()
        except JobsUnavailable:  # the other metrics still answer while Postgres is away
            return
        family = GaugeMetricFamily("whitevec_jobs", "Jobs by state.", labels=["state"])
        for state, n in counts.items():
            family.add_metric([state], n)
        yield family


class _CollectionsCollector:
    def __init__(self, documents: Callable[[], dict[str, int]]) -> None:
        self.documents = documents

    def collect(self):
        family = GaugeMetricFamily("whitevec_index_vectors", "Documents served, by collection.", labels=["collection"])
        for name, n in self.documents().items():
            family.add_metric([name], n)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("whitevec_requests", "HTTP requests by route and status.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("whitevec_request_duration_seconds", "HTTP request latency by route.",
                                 ["route", "method"], registry=self.registry,
                                 buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch_size = Histogram("whitevec_batch_size", "Texts per model batch.", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_tokens = Counter("whitevec_batch_tokens", "Tokens the model ran: text (the texts' own) and padded "
                                    "(rows × the batch's longest row); text / padded is how much of its work "
                                    "was text.", ["kind"], registry=self.registry)
        for kind in ("text", "padded"):  # both series from the start, at 0
            self.batch_tokens.labels(kind)
        self.queue_depth = Gauge("whitevec_queue_depth", "Tokens admitted and not yet encoded.", registry=self.registry)
        self.auth_failures = Counter("whitevec_auth_failures", "Refused credentials: missing, wrong (or revoked), "
                                     "out_of_scope (another tenant's collection), read_only, not_admin.",
                                     ["reason"], registry=self.registry)

    def observe_batch(self, rows: int, text_tokens: int, padded_tokens: int) -> None:
        """One model batch: its size and its tokens, text and padded."""
        self.batch_size.observe(rows)
        self.batch_tokens.labels("text").inc(text_tokens)
        self.batch_tokens.labels("padded").inc(padded_tokens)

    def bind(self, queue_depth: Callable[[], float], documents: Callable[[], dict[str, int]],
             job_counts: Callable[[], dict[str, int]]) -> None:
        self.queue_depth.set_function(queue_depth)
        self.registry.register(_CollectionsCollector(documents))
        self.registry.register(_JobsCollector(job_counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)
