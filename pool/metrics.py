"""Prometheus metrics for pool admins (prometheus-client, own registry per pool)."""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)


class PoolMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections = Gauge("stope_connections", "Open Stratum connections", registry=r)
        self.workers_authorized = Gauge("stope_workers_authorized", "Connections that are subscribed, authorized and receiving work", registry=r)
        self.shares_accepted = Counter("stope_shares_accepted", "Accepted shares", registry=r)
        self.shares_rejected = Counter("stope_shares_rejected", "Rejected shares by reason", ["reason"], registry=r)
        self.accepted_difficulty = Counter(
            "stope_accepted_difficulty", "Sum of accepted share difficulty (rate() * 2^32 = hashrate)", registry=r
        )
        self.blocks_found = Counter("stope_blocks_found", "Shares that met the network target", registry=r)
        self.blocks_submitted = Counter("stope_blocks_submitted", "Blocks submitted to a node by result", ["result"], registry=r)
        self.network_difficulty = Gauge("stope_network_difficulty", "Current network difficulty", registry=r)
        self.block_height = Gauge("stope_block_height", "Height of the block being mined", registry=r)
        self.best_share_difficulty = Gauge("stope_best_share_difficulty", "Highest share difficulty achieved since start", registry=r)
        self.share_validation_seconds = Histogram(
            "stope_share_validation_seconds", "Time to judge one share",
            buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0), registry=r,
        )
        self.template_fetch_seconds = Histogram("stope_template_fetch_seconds", "getblocktemplate latency", registry=r)
        self.db_queue_depth = Gauge("stope_db_queue_depth", "Share records waiting for the database", registry=r)
        self._server: WSGIServer | None = None

    def serve(self, host: str, port: int) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        actual = server.server_port
        log.info("metrics on http://%s:%d/metrics", host, actual)
        return actual

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
