"""Prometheus metrics: requests and latency by outcome, pool gauges, errors by SQLSTATE."""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from poolgate.core.cache import QueryCache
from poolgate.core.pool import PoolRegistry
from poolgate.core.transactions import Transactions

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MAX_SQLSTATE_LABELS = 200
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _PoolCollector(Collector):
    """Per-pool gauges (at most MAX_POOLS label sets) and the gateway-wide totals."""

    def __init__(self, pools: PoolRegistry) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        labels = ["user", "database"]
        size = GaugeMetricFamily(
            "poolgate_pool_connections", "Open server connections", labels=labels
        )
        in_use = GaugeMetricFamily(
            "poolgate_pool_in_use", "Connections lent to a request", labels=labels
        )
        waiting = GaugeMetricFamily(
            "poolgate_pool_waiting", "Requests waiting for a connection", labels=labels
        )
        for pool in self._pools.stats():
            key = [pool.user, pool.database]
            size.add_metric(key, pool.open)
            in_use.add_metric(key, pool.in_use)
            waiting.add_metric(key, pool.waiting)
        yield from (size, in_use, waiting)
        budget = self._pools.budget
        yield GaugeMetricFamily(
            "poolgate_server_connections", "Server connections of all pools", value=budget.held
        )
        yield GaugeMetricFamily("poolgate_max_connections", "--max-connections", value=budget.limit)
        yield CounterMetricFamily(
            "poolgate_logins_throttled",
            "Login attempts refused (429) after too many failures",
            value=self._pools.throttle.refused,
        )


class _RequestCollector(Collector):
    """Requests and their latency by outcome, kept as plain numbers on the request path
    and turned into samples only when scraped: a prometheus_client Counter and Histogram
    take a lock and update per-bucket value objects on every request (~1 us of a cache
    hit's ~30, issue 23). Same series: `poolgate_requests_total{outcome}` and the
    `poolgate_request_duration_seconds{outcome}` histogram (no `_created` samples)."""

    def __init__(self) -> None:
        # outcome -> [sum of seconds, count per bucket..., count past the last bucket]
        self.by_outcome: dict[str, list[float]] = {}

    def observe(self, outcome: str, seconds: float) -> None:
        counts = self.by_outcome.get(outcome)
        if counts is None:
            counts = self.by_outcome[outcome] = [0.0] * (len(_LATENCY_BUCKETS) + 2)
        counts[0] += seconds
        counts[1 + bisect_left(_LATENCY_BUCKETS, seconds)] += 1  # le: bound >= seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "poolgate_requests", "HTTP requests by outcome", labels=["outcome"]
        )
        latency = HistogramMetricFamily(
            "poolgate_request_duration_seconds",
            "Time from request to answer, by outcome",
            labels=["outcome"],
        )
        for outcome, counts in self.by_outcome.items():
            cumulative = list(itertools.accumulate(counts[1:]))
            requests.add_metric([outcome], cumulative[-1])
            buckets = [
                (floatToGoString(bound), count)  # type: ignore[no-untyped-call]
                for bound, count in zip(_LATENCY_BUCKETS, cumulative, strict=False)
            ]
            latency.add_metric([outcome], [*buckets, ("+Inf", cumulative[-1])], counts[0])
        yield requests
        yield latency


class _TransactionCollector(Collector):
    def __init__(self, transactions: Transactions) -> None:
        self._transactions = transactions

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "poolgate_transactions_open",
            "Interactive transactions holding a connection",
            value=self._transactions.open_count,
        )


class _CacheCollector(Collector):
    def __init__(self, cache: QueryCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        counters = self._cache.counters
        for name, help_text, value in (
            ("poolgate_cache_hits", "Answers served fresh from the cache", counters.hits),
            (
                "poolgate_cache_stale_hits",
                "Stale answers served while refreshing",
                counters.stale_hits,
            ),
            (
                "poolgate_cache_misses",
                "Cacheable requests not answered from the cache",
                counters.misses,
            ),
            ("poolgate_cache_refreshes", "Background refreshes started", counters.refreshes),
            (
                "poolgate_cache_upstream_runs",
                "Queries the cache sent upstream",
                counters.upstream_runs,
            ),
            ("poolgate_cache_invalidations", "Invalidation requests", counters.invalidations),
            (
                "poolgate_cache_store_errors",
                "Cache store round trips that failed",
                counters.store_errors,
            ),
            (
                "poolgate_cache_entries_invalidated",
                "Entries dropped by invalidation",
                counters.entries_invalidated,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        yield GaugeMetricFamily(
            "poolgate_cache_bytes", "Bytes held by the cache", value=self._cache.bytes_held
        )


class Metrics:
    """One registry per gateway, so several gateways can live in one process (tests)."""

    def __init__(self, pools: PoolRegistry, cache: QueryCache | None = None) -> None:
        self.registry = CollectorRegistry()
        self._requests = _RequestCollector()
        self.registry.register(self._requests)
        self.errors = Counter(
            "poolgate_postgres_errors",
            "Postgres errors by SQLSTATE",
            ["sqlstate"],
            registry=self.registry,
        )
        self.transaction_seconds = Histogram(
            "poolgate_transaction_duration_seconds",
            "Interactive transactions, from BEGIN to commit, rollback or expiry",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.transactions_expired = Counter(
            "poolgate_transactions_expired",
            "Interactive transactions rolled back at their timeout",
            registry=self.registry,
        )
        self.registry.register(_PoolCollector(pools))
        self._sqlstates: set[str] = set()
        if cache is not None:
            self.registry.register(_CacheCollector(cache))

    def watch_transactions(self, transactions: Transactions) -> None:
        self.registry.register(_TransactionCollector(transactions))

    def transaction_ended(self, seconds: float, expired: bool) -> None:
        self.transaction_seconds.observe(seconds)
        if expired:
            self.transactions_expired.inc()

    def observe(self, outcome: str, seconds: float, sqlstate: str | None) -> None:
        self._requests.observe(outcome, seconds)
        if sqlstate:
            # a client can raise any code (RAISE ... USING ERRCODE): the label set is bounded
            if sqlstate not in self._sqlstates and len(self._sqlstates) >= MAX_SQLSTATE_LABELS:
                sqlstate = "other"
            self._sqlstates.add(sqlstate)
            self.errors.labels(sqlstate).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def merge_expositions(texts: list[str]) -> bytes:
    """Several workers' expositions as one: samples with the same name and labels are
    added up (counters, gauges, histogram buckets alike: each worker holds its share),
    except `_created` timestamps, of which the earliest is kept."""
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            _, _, samples = families.setdefault(
                family.name, (family.type, family.documentation, {})
            )
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in samples:
                    samples[key] = sample.value
                elif sample.name.endswith("_created"):
                    samples[key] = min(samples[key], sample.value)
                else:
                    samples[key] += sample.value
    lines: list[str] = []
    for name, (kind, documentation, samples) in families.items():
        help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for (sample_name, labels), value in samples.items():
            label_text = ",".join(f'{key}="{_escape(label)}"' for key, label in labels)
            braces = f"{{{label_text}}}" if label_text else ""
            lines.append(f"{sample_name}{braces} {floatToGoString(value)}")  # type: ignore[no-untyped-call]
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
