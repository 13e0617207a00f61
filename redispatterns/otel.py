"""OpenTelemetry spans and metrics for every pattern call (the ``otel`` extra).

>>> from redispatterns import otel        # doctest: +SKIP
>>> otel.instrument()                     # the global tracer/meter providers, or pass your own
>>> otel.uninstrument()

Nothing here runs unless :func:`instrument` is called: an application that never imports this
module (or has no ``opentelemetry-api``) pays nothing. Instrumenting wraps the runner entry
points (``run_sync`` / ``run_async``) that every pattern goes through, so each pattern operation
is one ``CLIENT`` span named ``<pattern>.<operation>`` (``cache.get``, ``ratelimit.hit``,
``lock.acquire``, ``session.get``, ``streams.add``, ...), with these attributes:

* ``redispatterns.pattern``, ``redispatterns.operation``, ``db.system.name`` (``redis``);
* ``redispatterns.key_prefix``: the mount's prefix when the operation has one; never a key's
  subject, a value or a token;
* ``redispatterns.outcome``: ``hit``/``miss``/``stale``/``refreshed``/``bypass``/... for caches,
  ``allowed``/``denied`` for limiters, ``acquired``/``not_acquired``/``timed_out`` for locks and
  semaphores, ``error`` (with ``error.type``) when the call raised, else ``ok``/``none``/
  ``true``/``false`` from the result.

Metrics (meter ``redispatterns``): ``redispatterns.operation.duration`` (histogram, s, by
pattern/operation/outcome), ``redispatterns.cache.requests`` (counter by outcome: the hit
ratio is hits over all; ``bypass`` counts calls an open circuit breaker kept off Redis),
``redispatterns.ratelimit.decisions`` (counter, ``allowed`` true/false),
``redispatterns.lock.wait`` and ``redispatterns.lock.hold`` (histograms, s, for locks,
semaphores and Redlock), ``redispatterns.stream.lag`` / ``.pending`` / ``.dead_letters`` (gauges
by stream and group, set whenever ``metrics()`` is read) and ``redispatterns.pubsub.gaps``
(counter), ``redispatterns.cache.breaker_state`` (gauge by cached function: 0 closed,
1 half-open, 2 open).
"""

from __future__ import annotations

import sys
import time
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import context, metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import _cache_handle, _runner
from . import subscriber as _subscriber
from ._core.keys import Keyspace
from ._core.ratelimit import MODE_PEEK, Decision
from ._core.streams import StreamStats
from .errors import LockTimeout, RateLimited

__all__ = ["instrument", "is_instrumented", "uninstrument"]

SCOPE = "redispatterns"
_CACHE_OUTCOMES = frozenset(
    {"hit", "miss", "stale", "refreshed", "stale_error", "bypass", "error", "uncached", "unencodable",
     "undecodable", "coalesced"}
)  # fmt: skip
_ACQUIRE = frozenset({"acquire", "semaphore_acquire", "redlock_acquire"})
_RELEASE = frozenset({"release", "semaphore_release", "redlock_release"})
_HELD_MAX = 10_000  # lock tokens remembered for the hold-time histogram


@dataclass(frozen=True, slots=True)
class _Op:
    pattern: str
    operation: str


_ops: dict[types.CodeType, _Op] = {}


# private modules a pattern's flows live in, by the pattern they belong to
_MODULE_PATTERN = {"_limiters": "ratelimit", "_rate_limited": "ratelimit", "_cache_handle": "cache",
                   "_cache_write": "cache", "_session_base": "session", "_subscriber_base": "subscriber",
                   "ratelimit_policy": "ratelimit"}  # fmt: skip


def _op_of(code: types.CodeType, module: str, local: dict[str, Any]) -> _Op:
    if code.co_name == "check" and module.endswith("ratelimit"):  # one flow for hit and peek
        return _Op("ratelimit", "peek" if local.get("mode") == MODE_PEEK else "hit")
    op = _ops.get(code)
    if op is None:
        pattern = module.rpartition(".")[2]
        pattern = _MODULE_PATTERN.get(pattern, pattern)
        name = code.co_name.lstrip("_")
        if name.startswith("f_"):  # a shell's own flow method (``_f_submit``)
            name = name[2:]
        if name.endswith("_flow"):  # a handle's flow method (``_release_flow``)
            name = name[: -len("_flow")]
        if name.endswith("_one"):  # a single-item flow of a batch operation (``submit_one``)
            name = name[: -len("_one")]
        for family in ("semaphore", "redlock"):  # lock.py holds three patterns today
            if name.startswith(family + "_"):
                pattern = family
        if pattern == "cache" and name == "call":  # one flow per @cached call: its lookup
            name = "get"
        op = _ops[code] = _Op(pattern, name)
    return op


def _prefix(frame_locals: dict[str, Any]) -> str | None:
    for value in frame_locals.values():
        ks = value if isinstance(value, Keyspace) else getattr(value, "keyspace", None)
        if isinstance(ks, Keyspace):
            return ks.prefix
    return None


def _token(frame_locals: dict[str, Any]) -> Any:
    """The lock token of a flow, as text: its own argument (bytes on the lock's hot path), or its
    handle's (``self.token``)."""
    token = frame_locals.get("token")
    if token is None:
        token = getattr(frame_locals.get("self"), "token", None)
    return token.decode("ascii", "replace") if isinstance(token, bytes) else token


def _outcome(op: _Op, result: Any) -> str:
    if isinstance(result, Decision):
        return "allowed" if result.allowed else "denied"
    if op.operation in _ACQUIRE:
        return "acquired" if result else "not_acquired"
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[1], str)
        and result[1] in _CACHE_OUTCOMES
    ):
        return result[1]
    if result is None:
        return "none"
    if isinstance(result, bool):
        return "true" if result else "false"
    return "ok"


def _error_outcome(op: _Op, exc: BaseException) -> str:
    if isinstance(exc, LockTimeout):
        return "timed_out"
    if isinstance(exc, RateLimited):
        return "denied"
    return "error"


class _Instruments:
    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "redispatterns.operation.duration", unit="s", description="Duration of pattern operations"
        )
        self.cache = meter.create_counter(
            "redispatterns.cache.requests", description="Cache lookups by outcome"
        )
        self.decisions = meter.create_counter(
            "redispatterns.ratelimit.decisions", description="Rate-limit decisions"
        )
        self.lock_wait = meter.create_histogram(
            "redispatterns.lock.wait", unit="s", description="Time to acquire a lock or semaphore"
        )
        self.lock_hold = meter.create_histogram(
            "redispatterns.lock.hold", unit="s", description="Time a lock or semaphore was held"
        )
        self.lag = meter.create_gauge("redispatterns.stream.lag", description="Entries not yet delivered")
        self.pending = meter.create_gauge("redispatterns.stream.pending", description="Delivered, unacked")
        self.dead = meter.create_gauge("redispatterns.stream.dead_letters", description="Dead letters")
        self.gaps = meter.create_counter("redispatterns.pubsub.gaps", description="Pub/sub gaps detected")
        self.caches: weakref.WeakSet[Any] = weakref.WeakSet()  # cached functions that met a non-hit
        meter.create_observable_gauge(
            "redispatterns.cache.breaker_state",
            callbacks=[self._breakers],
            description="Circuit breaker of a cached function: 0 closed, 1 half-open, 2 open",
        )
        self.held: dict[str, float] = {}  # lock token -> acquired at (in memory only, never exported)

    def begin(self, flow: Any) -> tuple[_Op, dict[str, Any], dict[str, Any]] | None:
        frame = getattr(flow, "gi_frame", None)
        if frame is None:
            return None
        local = dict(frame.f_locals)
        op = _op_of(flow.gi_code, frame.f_globals.get("__name__", ""), local)
        inner: Any = local.get("release")
        if op.operation == "exit" and getattr(inner, "gi_frame", None) is not None:
            # the end of a ``with`` block (``_handles.exit_flow``): report the release it wraps
            op = _Op(str(local.get("kind")), "release")
            local = {**local, **inner.gi_frame.f_locals}
        attrs: dict[str, Any] = {
            "db.system.name": "redis",
            "redispatterns.pattern": op.pattern,
            "redispatterns.operation": op.operation,
        }
        prefix = _prefix(local)
        if prefix is not None:
            attrs["redispatterns.key_prefix"] = prefix
        return op, attrs, local

    def end(self, op: _Op, local: dict[str, Any], outcome: str, result: Any, t0: float) -> None:
        """Record the metrics of one finished operation."""
        now = time.perf_counter()
        self.duration.record(
            now - t0,
            {"redispatterns.pattern": op.pattern, "redispatterns.operation": op.operation,
             "redispatterns.outcome": outcome},
        )  # fmt: skip
        if op.pattern == "cache" and op.operation == "get":  # once per call: hit, stale, miss, ...
            self.cache.add(1, {"redispatterns.outcome": outcome})
        elif isinstance(result, Decision):
            self.decisions.add(1, {"redispatterns.allowed": result.allowed})
        elif op.operation in _ACQUIRE:
            self.lock_wait.record(
                now - t0, {"redispatterns.pattern": op.pattern, "redispatterns.outcome": outcome}
            )
            token = _token(local)
            if outcome == "acquired" and isinstance(token, str):
                if len(self.held) >= _HELD_MAX:  # leases that expired unreleased: forget the oldest
                    self.held.pop(next(iter(self.held)), None)
                self.held[token] = now
        elif op.operation in _RELEASE:
            started = self.held.pop(str(_token(local)), None)
            if started is not None:
                self.lock_hold.record(now - started, {"redispatterns.pattern": op.pattern})
        elif isinstance(result, StreamStats):
            spec = local.get("spec")
            where = {
                "redispatterns.stream": str(getattr(spec, "name", "")),
                "redispatterns.group": str(local.get("group")),
            }
            if result.lag is not None:
                self.lag.set(result.lag, where)
            self.pending.set(result.pending, where)
            self.dead.set(result.dead_letters, where)

    def _breakers(self, options: CallbackOptions) -> list[Observation]:
        levels = {"closed": 0, "half-open": 1, "open": 2}
        return [
            Observation(levels.get(h.breaker.state, 0), {"redispatterns.function": h.spec.plan.fn_id})
            for h in list(self.caches)
        ]


_state: dict[str, Any] = {}


class _Span:
    """One traced operation: what both runner wrappers do around the original call."""

    __slots__ = ("inst", "local", "op", "span", "t0", "token")

    def __init__(self, inst: _Instruments, op: _Op, attrs: dict[str, Any], local: dict[str, Any]) -> None:
        self.inst, self.op, self.local = inst, op, local
        self.span = inst.tracer.start_span(
            f"{op.pattern}.{op.operation}", kind=SpanKind.CLIENT, attributes=attrs
        )
        self.token = context.attach(trace.set_span_in_context(self.span))  # the current span
        self.t0 = time.perf_counter()

    def _close(self, outcome: str, result: Any) -> None:
        self.span.set_attribute("redispatterns.outcome", outcome)
        self.inst.end(self.op, self.local, outcome, result, self.t0)
        context.detach(self.token)
        self.span.end()

    def done(self, result: Any) -> Any:
        self._close(_outcome(self.op, result), result)
        return result

    def failed(self, exc: BaseException) -> None:
        outcome = _error_outcome(self.op, exc)
        self.span.set_attribute("error.type", type(exc).__qualname__)
        if outcome == "error":
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
        self._close(outcome, None)


def _start(inst: _Instruments, flow: Any) -> _Span | None:
    begun = inst.begin(flow)
    return None if begun is None else _Span(inst, *begun)


def _wrap_sync(inst: _Instruments, original: Callable[..., Any]) -> Callable[..., Any]:
    def run_sync(client: Any, flow: Any, *args: Any, **kwargs: Any) -> Any:
        span = _start(inst, flow)
        if span is None:
            return original(client, flow, *args, **kwargs)
        try:
            result = original(client, flow, *args, **kwargs)
        except BaseException as exc:
            span.failed(exc)
            raise
        return span.done(result)

    return run_sync


def _wrap_async(inst: _Instruments, original: Callable[..., Any]) -> Callable[..., Any]:
    async def run_async(client: Any, flow: Any, *args: Any, **kwargs: Any) -> Any:
        span = _start(inst, flow)
        if span is None:
            return await original(client, flow, *args, **kwargs)
        try:
            result = await original(client, flow, *args, **kwargs)
        except BaseException as exc:
            span.failed(exc)
            raise
        return span.done(result)

    return run_async


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Start emitting spans and metrics (idempotent: a second call replaces the providers)."""
    uninstrument()
    inst = _Instruments(tracer_provider, meter_provider)
    originals = {"run_sync": _runner.run_sync, "run_async": _runner.run_async}
    wrapped = {
        "run_sync": _wrap_sync(inst, _runner.run_sync),
        "run_async": _wrap_async(inst, _runner.run_async),
    }
    patched: list[tuple[types.ModuleType, str, Any]] = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "redispatterns" or name.startswith("redispatterns.")):
            continue
        for attr, original in originals.items():
            if getattr(module, attr, None) is original:
                setattr(module, attr, wrapped[attr])
                patched.append((module, attr, original))
    gap_original = _subscriber._SubscriberBase._gap_flow

    def _gap_flow(self: Any, gap: Any) -> Any:
        inst.gaps.add(1)
        return (yield from gap_original(self, gap))

    _subscriber._SubscriberBase._gap_flow = _gap_flow  # type: ignore[method-assign]
    patched.append((_subscriber._SubscriberBase, "_gap_flow", gap_original))  # type: ignore[arg-type]
    notable_original = _cache_handle.Handle._notable

    def _notable(self: Any, outcome: str, key: str) -> None:
        inst.caches.add(self)  # a breaker only leaves "closed" after failures, which come here
        notable_original(self, outcome, key)

    _cache_handle.Handle._notable = _notable  # type: ignore[method-assign]
    patched.append((_cache_handle.Handle, "_notable", notable_original))  # type: ignore[arg-type]
    _state.update(patched=patched, instruments=inst)


def uninstrument() -> None:
    """Stop: put the runners back as they were."""
    for target, attr, original in reversed(_state.pop("patched", [])):
        setattr(target, attr, original)
    _state.pop("instruments", None)


def is_instrumented() -> bool:
    return "instruments" in _state
