"""Prometheus metrics (prometheus-client): every series the edge exports, defined once.

Listeners and the certificate service increment these; the admin server renders them. Hot
paths bind label values once per listener (`for_listener`) so a request pays one increment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "edge_requests",
    "Requests answered, by listener and status class (2xx, 3xx, 4xx, 5xx; gRPC: the status code name)",
    ["listener", "code_class"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "edge_errors", "Requests the edge itself failed (502, 504, upstream resets, protocol errors)", ["listener", "kind"], registry=REGISTRY
)
UPSTREAM_LATENCY = Histogram(
    "edge_upstream_latency_seconds",
    "Time from sending a request upstream to receiving its response head",
    ["listener"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
HANDSHAKES = Counter("edge_tls_handshakes", "Completed TLS handshakes", ["listener"], registry=REGISTRY)
HANDSHAKE_FAILURES = Counter("edge_tls_handshake_failures", "Failed or timed-out TLS handshakes", ["listener"], registry=REGISTRY)
OPEN_CONNECTIONS = Gauge("edge_open_connections", "Client connections open now", ["listener"], registry=REGISTRY)
SWAPS = Counter("edge_certificate_swaps", "Certificate versions published", ["source"], registry=REGISTRY)
REJECTIONS = Counter("edge_certificate_rejections", "Certificate material refused", ["source"], registry=REGISTRY)
CERT_VERSION = Gauge("edge_certificate_version", "Version of the serving certificate", registry=REGISTRY)
CERT_EXPIRY = Gauge("edge_certificate_expiry_seconds", "Seconds until the serving certificate expires", registry=REGISTRY)
CERT_DIR_LAST_READ = Gauge(
    "edge_certificate_dir_last_read_timestamp_seconds",
    "Unix time the certificate directory was last read (each watcher pass and each reload)",
    registry=REGISTRY,
)


@dataclass(frozen=True, slots=True)
class ListenerMetrics:
    """The series of one listener, labels bound once."""

    name: str
    handshakes: Counter
    handshake_failures: Counter
    open_connections: Gauge
    upstream_latency: Histogram

    def requests(self, code_class: str) -> Counter:
        return REQUESTS.labels(self.name, code_class)

    def errors(self, kind: str) -> Counter:
        return ERRORS.labels(self.name, kind)


def for_listener(name: str) -> ListenerMetrics:
    return ListenerMetrics(
        name=name,
        handshakes=HANDSHAKES.labels(name),
        handshake_failures=HANDSHAKE_FAILURES.labels(name),
        open_connections=OPEN_CONNECTIONS.labels(name),
        upstream_latency=UPSTREAM_LATENCY.labels(name),
    )


# prometheus_client has no bulk observe. These two are the one place that reaches into its
# Histogram (one plain value per bucket, counted non-cumulatively, plus a sum), so a release
# that renames those internals breaks here and nowhere else.
def bucket_bounds(histogram: Histogram) -> tuple[float, ...]:
    """The upper bounds of a labelled histogram's buckets, +Inf last: bucket i counts the
    observations v with bounds[i - 1] < v <= bounds[i]."""
    return tuple(histogram._upper_bounds)


def add_observations(histogram: Histogram, counts: Sequence[int], total: float) -> None:
    """Record many observations at once: counts[i] of them in bucket i (see `bucket_bounds`),
    their values summing to `total`. The same result as that many `observe` calls."""
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(total)
