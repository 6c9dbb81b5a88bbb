"""Prometheus metrics of the service (``GET /metrics``), one registry per app.

A registry per app (not prometheus-client's global one) lets tests and embedders build several
apps in one process without "Duplicated timeseries" errors.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServeMetrics", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    """Counters, gauges and histograms of one app; also the batcher's observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "m3e_rag_requests", "HTTP requests answered, by route and status code.", ["route", "status"], registry=r
        )
        self.in_progress = Gauge(
            "m3e_rag_requests_in_progress", "HTTP requests received and not yet answered, by route.", ["route"],
            registry=r,
        )
        self.latency = Histogram(
            "m3e_rag_request_seconds", "Time from request to response, by route.", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_texts = Histogram(
            "m3e_rag_batch_texts", "Texts per coalesced model batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "m3e_rag_batch_requests", "Requests sharing one coalesced model batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "m3e_rag_batch_seconds", "Model time of one coalesced batch.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue = Gauge("m3e_rag_queue_texts", "Texts waiting for the model worker.", registry=r)
        self.texts = Counter("m3e_rag_embedded_texts", "Texts embedded.", registry=r)
        self.tokens = Counter("m3e_rag_embedded_tokens", "Tokens read by the model (usage.total_tokens).", registry=r)
        self.cancelled_texts = Counter(
            "m3e_rag_cancelled_texts", "Queued texts dropped because their client went away.", registry=r
        )
        self.rejected = Counter(
            "m3e_rag_rejected_requests", "Requests refused before any model work, by reason.", ["reason"], registry=r
        )
        self.ready = Gauge("m3e_rag_ready", "1 once the model is loaded and requests are served.", registry=r)

    # -- the batcher's observer protocol
    def batch_done(self, texts: int, requests: int, seconds: float) -> None:
        """One coalesced batch was encoded."""
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)
        self.texts.inc(texts)

    def queue_depth(self, texts: int) -> None:
        """Texts now waiting in the queue."""
        self.queue.set(texts)

    def cancelled(self, texts: int) -> None:
        """Texts dropped from the queue because their request was cancelled."""
        self.cancelled_texts.inc(texts)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
