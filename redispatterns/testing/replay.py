"""Drive a flow with canned replies, no server: the core's unit-test tool.

>>> from redispatterns._core.ops import Command
>>> def flow():
...     v = yield Command("GET", "k")
...     return v
>>> replay(flow(), [(Command("GET", "k"), b"1")])
b'1'

Each step is ``(expected, reply)``: ``expected`` is an op (compared for equality), a type of op,
``ANY``, or a predicate; ``reply`` is the value sent back, or an exception instance to raise at
the ``yield``. The flow must ask for exactly the listed steps, then finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .._core.ops import Flow, Op

__all__ = ["ANY", "ReplayMismatch", "replay", "trace"]

T = TypeVar("T")


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


class ReplayMismatch(AssertionError):
    """The flow asked for a different operation than the script expected."""


def _matches(expected: Any, op: Op) -> bool:
    if expected is ANY:
        return True
    if isinstance(expected, type):
        return isinstance(op, expected)
    if callable(expected) and not hasattr(expected, "__dataclass_fields__"):
        return bool(expected(op))
    return bool(expected == op)


def replay(flow: Flow[T], steps: Iterable[tuple[Any, Any]]) -> T:
    """Run ``flow`` against ``steps``; return its result (or raise what it raises)."""
    steps = list(steps)
    i = 0
    try:
        op = next(flow)
        while True:
            if i >= len(steps):
                raise ReplayMismatch(f"flow asked for step {i + 1} ({op!r}) beyond the script")
            expected, reply = steps[i]
            if not _matches(expected, op):
                raise ReplayMismatch(f"step {i + 1}: expected {expected!r}, flow yielded {op!r}")
            i += 1
            op = flow.throw(reply) if isinstance(reply, BaseException) else flow.send(reply)
    except StopIteration as stop:
        if i != len(steps):
            raise ReplayMismatch(f"flow finished after {i} of {len(steps)} steps") from None
        result: T = stop.value
        return result


def trace(flow: Flow[T], respond: Callable[[Op], Any]) -> tuple[list[Op], T]:
    """Run ``flow`` answering each op with ``respond(op)``; return the ops seen and the result."""
    seen: list[Op] = []
    try:
        op = next(flow)
        while True:
            seen.append(op)
            reply = respond(op)
            op = flow.throw(reply) if isinstance(reply, BaseException) else flow.send(reply)
    except StopIteration as stop:
        return seen, stop.value
