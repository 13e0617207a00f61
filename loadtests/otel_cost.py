"""The cost of OpenTelemetry on a cache hit: ``python -m loadtests.otel_cost``.

Blocks of hits alternate between untraced, traced with the API's no-op provider (the extra
installed, no SDK configured) and traced by the SDK into a batch processor with an exporter that
drops spans (the tracing work itself, no export I/O). Same function, same process, same server.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider

from loadtests.harness import private_server
from redispatterns import otel
from redispatterns.cache import cached
from redispatterns.client import connect

PAYLOAD = {"id": 42, "name": "Ada Lovelace", "roles": ["admin", "dev"], "score": 9.5}


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _block(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def measure(url: str, calls: int = 6000, block: int = 250) -> dict[str, list[float]]:
    c = connect(url)

    @cached(ttl=3600, client=c, name="otel.cost")
    def user(user_id: int) -> dict[str, Any]:
        return PAYLOAD

    user(42)
    sdk = TracerProvider()
    sdk.add_span_processor(BatchSpanProcessor(_Drop()))
    modes: dict[str, Callable[[], None]] = {
        "untraced": otel.uninstrument,
        "traced, no-op provider": lambda: otel.instrument(
            tracer_provider=NoOpTracerProvider(), meter_provider=MeterProvider([])
        ),
        "traced, SDK (spans + metrics)": lambda: otel.instrument(
            tracer_provider=sdk, meter_provider=MeterProvider([InMemoryMetricReader()])
        ),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(calls // block):
        for mode, switch in modes.items():
            switch()
            _block(lambda: user(42), 20)  # warm up after the switch
            times[mode] += _block(lambda: user(42), block)
    otel.uninstrument()
    sdk.shutdown()
    return times


def main() -> int:
    calls = int(os.environ.get("BENCH_CALLS", "6000"))
    with private_server() as url:
        times = measure(url, calls)
    base = statistics.median(times["untraced"])
    print(f"cache hit, {calls} calls per mode (µs)")
    print(f"{'mode':32} {'median':>8} {'p99':>8} {'ratio':>6}")
    for mode, t in times.items():
        t.sort()
        med, p99 = statistics.median(t), t[int(len(t) * 0.99) - 1]
        print(f"{mode:32} {med:8.1f} {p99:8.1f} {med / base:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
