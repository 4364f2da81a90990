"""Prometheus metrics for one member, read at scrape time from the running state.

A collector that reads the driver's state when Prometheus scrapes costs nothing on the
consensus hot path: no gauge is set per message. The HTTP server is prometheus-client's
own exporter thread, the one kind of thread the runtime allows besides fsync workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from raftd.core import Role

if TYPE_CHECKING:
    from raftd.config import Address
    from raftd.runtime.driver import Driver
    from raftd.runtime.peers import PeerTransport


class RaftCollector(Collector):
    def __init__(self, driver: Driver, peers: PeerTransport) -> None:
        self.driver = driver
        self.peers = peers

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.driver.node
        name = self.driver.config.name
        labels = ["node"]

        def gauge(metric: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(metric, doc, labels=labels)
            family.add_metric([name], value)
            return family

        yield gauge("raft_term", "Current Raft term.", node.current_term)
        yield gauge("raft_is_leader", "1 if this member leads.", node.role is Role.LEADER)
        yield gauge("raft_commit_index", "Highest log index known committed.", node.commit_index)
        yield gauge("raft_applied_index", "Highest log index applied.", self.driver.applied_index)
        yield gauge("raft_last_log_index", "Last index in the local log.", node.log.last_index)
        dropped = CounterMetricFamily(
            "raft_messages_dropped", "Raft messages dropped, by reason.", labels=[*labels, "reason"]
        )
        for reason, count in self.peers.dropped.items():
            dropped.add_metric([name, reason], count)
        dropped.add_metric([name, "inbox_full"], self.driver.dropped_inbound)
        yield dropped


def serve_metrics(address: Address, driver: Driver, peers: PeerTransport) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RaftCollector(driver, peers))
    start_http_server(address.port, addr=address.host, registry=registry)
    return registry
