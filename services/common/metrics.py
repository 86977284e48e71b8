"""Prometheus metrics shared by every server, exposed over HTTP on the metrics port."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

RPC_TOTAL = Counter(
    "loraplex_rpc_total", "RPCs handled, by method and status code", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "loraplex_rpc_seconds",
    "RPC handling time in seconds, by method",
    ["method"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)


def start_metrics_server(port: int, host: str) -> None:
    """Serves /metrics on the service's own host; port 0 disables it (tests, several
    servers in one process). A pod sets the host to 0.0.0.0 so Prometheus can scrape it."""
    if port <= 0:
        return
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)
