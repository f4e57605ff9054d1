"""Prometheus metrics (exposed at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INGESTED = Counter("scrm_ingest_total", "Inbound items ingested", ["channel", "result"])
INGEST_LATENCY = Histogram(
    "scrm_ingest_seconds",
    "Time to store one inbound item",
    ["channel"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WEBHOOK_REQUESTS = Counter("scrm_webhook_requests_total", "Webhook requests", ["channel", "status"])
DELIVERIES = Counter("scrm_deliveries_total", "Outbound delivery attempts by outcome", ["channel", "status"])
OUTBOX_DEPTH = Gauge("scrm_outbox_depth", "Deliveries waiting in the outbox", ["status"])
# A faster ingest path failed and a slower one took its messages (from/to: function, batch, single).
INGEST_FALLBACKS = Counter("scrm_ingest_fallbacks", "Ingest batches handed to a slower path after a failure",
                           ["from", "to", "reason"])
