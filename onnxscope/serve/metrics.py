"""The server's Prometheus metrics (its own CollectorRegistry, so two servers in one process, as
in the tests, count apart): inference requests, their errors by status and their latency, by
model and protocol; refused credentials by protocol."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

UNKNOWN = "(unknown)"  # the model label of a request for a model not served (no served name)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, models):
        self.models = set(models)
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model", "protocol"]
        self.requests = Counter(
            "onnxscope_requests", "Inference requests", labels, registry=self.registry
        )
        self.errors = Counter(
            "onnxscope_request_errors",
            "Inference requests answered with an error, by HTTP status",
            [*labels, "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "onnxscope_request_duration_seconds",
            "Inference request latency, from the body read to the answer encoded",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.unauthorized = Counter(
            "onnxscope_unauthorized_requests",
            "Requests refused for a missing or wrong API key",
            ["protocol"],
            registry=self.registry,
        )

    def observe(self, model: str, protocol: str, status: int, seconds: float) -> None:
        model = model if model in self.models else UNKNOWN
        self.requests.labels(model, protocol).inc()
        self.latency.labels(model, protocol).observe(seconds)
        if status != 200:
            self.errors.labels(model, protocol, str(status)).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
