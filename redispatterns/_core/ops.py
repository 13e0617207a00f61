"""Operation values that flows yield, and the ``Flow`` type.

A flow is ``Generator[Op, Any, T]``: it yields an operation, receives its reply (or has the
error raised at the ``yield``), and finally returns ``T``. Replies are what redis-py returns
for the same command sent with ``execute_command`` (bytes unless the client decodes).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union, cast

from .keys import check_same_slot
from .scripts import LuaScript

__all__ = [
    "MAX_BLOCK",
    "MIN_BLOCK",
    "Arg",
    "Batch",
    "BlockingPop",
    "Coalesce",
    "Command",
    "Compute",
    "ComputeEach",
    "FanOut",
    "NOT_RUN",
    "Flow",
    "Now",
    "Op",
    "Probe",
    "Script",
    "Sleep",
    "WallClock",
    "is_read_only",
]

T = TypeVar("T")
MAX_BLOCK = 10.0
"""Longest single blocking wait a flow asks for; the runner may shorten it to what the client's
connections allow (a longer wait is several blocks)."""
MIN_BLOCK = 0.005
"""Shortest block (``BLPOP 0`` would block forever)."""
Arg = Union[str, bytes, int, float]
KeyT = Union[str, bytes]

# Commands that are safe to send twice: their reply is lost only at the cost of a repeat.
# The runners retry these (with backoff) on a connection error; every other command is sent once.
_READ_ONLY = frozenset(
    {
        "BITCOUNT", "BITPOS", "DBSIZE", "DUMP", "ECHO", "EXISTS", "EXPIRETIME", "GET", "GETBIT",
        "GETRANGE", "HEXISTS", "HGET", "HGETALL", "HKEYS", "HLEN", "HMGET", "HSCAN", "HSTRLEN",
        "HVALS", "INFO", "LINDEX", "LLEN", "LPOS", "LRANGE", "MEMORY", "MGET", "OBJECT", "PEXPIRETIME",
        "PFCOUNT", "PING", "PTTL", "SCAN", "SCARD", "SISMEMBER", "SMEMBERS", "SMISMEMBER",
        "SRANDMEMBER", "SSCAN", "STRLEN", "TIME", "TTL", "TYPE", "XINFO", "XLEN", "XPENDING",
        "XRANGE", "XREVRANGE", "ZCARD", "ZCOUNT", "ZLEXCOUNT", "ZMSCORE", "ZRANDMEMBER", "ZRANGE",
        "ZRANGEBYLEX", "ZRANGEBYSCORE", "ZRANK", "ZREVRANGE", "ZREVRANGEBYLEX",
        "ZREVRANGEBYSCORE", "ZREVRANK", "ZSCAN", "ZSCORE",
    }
)  # fmt: skip


def is_read_only(name: str | bytes) -> bool:
    """True for commands that only read, and so may be retried after a lost reply."""
    if name in _READ_ONLY:
        return True
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.upper() in _READ_ONLY


# Ops are values: treat them as immutable. They are not frozen dataclasses only because a frozen
# __init__ costs about a microsecond per op on the hot path (object.__setattr__ per field).


@dataclass(slots=True, init=False)
class Command:
    """One Redis command. ``keys`` names every key it touches (checked to share a slot).

    ``Command("GET", key)`` ; ``Command("MGET", a, b, keys=(a, b))``. ``options``: keyword
    arguments for redis-py's reply parsing, e.g. ``{"get": True}``, without which redis-py turns
    ``SET … GET``'s reply into a boolean.
    """

    args: tuple[Arg, ...]
    keys: tuple[KeyT, ...]
    retryable: bool
    options: Mapping[str, Any] | None

    def __init__(
        self,
        *args: Arg,
        keys: Sequence[KeyT] = (),
        retryable: bool | None = None,
        options: Mapping[str, Any] | None = None,
    ):
        if not args:
            raise ValueError("Command needs at least a command name")
        if keys:
            keys = tuple(keys)
            if len(keys) > 1:
                check_same_slot(keys)
        self.args = args
        self.keys = keys or ()  # type: ignore[assignment]
        if retryable is None:
            name = args[0]
            retryable = is_read_only(name if isinstance(name, (str, bytes)) else str(name))
        self.retryable = retryable
        self.options = options

    def __hash__(self) -> int:
        return hash((self.args, self.keys))

    @property
    def name(self) -> str:
        n = self.args[0]
        return (n.decode() if isinstance(n, bytes) else str(n)).upper()


@dataclass(slots=True)
class Script:
    """Run a registered Lua script (``lua/<name>.lua``): alone with EVALSHA (loaded on NOSCRIPT),
    inside a ``Batch`` as EVAL (so a pipeline, on one node or a Cluster, never meets NOSCRIPT)."""

    script: LuaScript
    keys: tuple[KeyT, ...] = ()
    args: tuple[Arg, ...] = ()

    def __hash__(self) -> int:
        return hash((self.script.name, self.keys, self.args))

    def __post_init__(self) -> None:
        n = self.script.num_keys
        if n >= 0 and len(self.keys) != n:
            raise ValueError(f"script {self.script.name} takes {n} keys, got {len(self.keys)}")
        if len(self.keys) > 1:
            check_same_slot(self.keys)

    @property
    def retryable(self) -> bool:
        return self.script.read_only


def trusted_script(script: LuaScript, keys: tuple[KeyT, ...], args: tuple[Arg, ...]) -> Script:
    """A ``Script`` op over keys built to share a slot (one key, or keys in one hash-tag bucket),
    made without ``__post_init__``'s check (two CRC16s a key): for ops built on every call of a
    hot path. ``Script(...)`` wherever keys come from callers."""
    op = _new(Script)
    op.script, op.keys, op.args = script, keys, args
    return op


def trusted_command(
    args: tuple[Arg, ...], *, retryable: bool = False, options: Mapping[str, Any] | None = None
) -> Command:
    """A ``Command`` op with no declared keys (redis-py routes it by its key on a Cluster), made
    without ``__init__``'s checks: for ops built on every call of a hot path."""
    op = _new(Command)
    op.args, op.keys, op.retryable, op.options = args, (), retryable, options
    return op


def trusted_batch(ops: tuple[Command | Script, ...]) -> Batch:
    """A non-transactional ``Batch`` of ``ops`` (at least one), made without its checks: for ops
    built on every call of a hot path."""
    op = _new(Batch)
    op.ops, op.transaction, op.raise_on_error = ops, False, True
    return op


_new = object.__new__


@dataclass(slots=True)
class Batch:
    """Several commands/scripts in one round trip (a pipeline).

    With ``transaction=True`` they run in MULTI/EXEC, and every key must share one slot.
    The reply is the list of replies; with ``raise_on_error=False`` a failed command's
    reply is the exception instance instead of raising.
    """

    ops: tuple[Command | Script, ...]
    transaction: bool = False
    raise_on_error: bool = True

    def __post_init__(self) -> None:
        if not self.ops:
            raise ValueError("Batch needs at least one operation")
        if self.transaction:
            keys = [k for op in self.ops for k in _touched(op)]
            if len(keys) > 1:
                check_same_slot(keys)

    @property
    def retryable(self) -> bool:
        return not self.transaction and all(op.retryable for op in self.ops)


# commands whose second argument is not a key (for the transaction slot check)
_KEYLESS = frozenset(
    {"PING", "TIME", "INFO", "ECHO", "SCRIPT", "CLIENT", "CONFIG", "PUBLISH", "SPUBLISH", "XINFO",
     "MEMORY", "OBJECT", "CLUSTER", "ACL", "DBSIZE", "FLUSHALL", "FLUSHDB", "FUNCTION", "COMMAND"}
)  # fmt: skip


def _touched(op: Command | Script) -> tuple[KeyT, ...]:
    """Declared keys, else the conventional key (second argument) of a single-key command."""
    if op.keys or type(op) is Script:
        return op.keys
    cmd = cast(Command, op)
    if len(cmd.args) > 1 and cmd.name not in _KEYLESS and isinstance(cmd.args[1], (str, bytes)):
        return (cmd.args[1],)
    return ()


@dataclass(frozen=True, slots=True)
class Sleep:
    """Sleep ``seconds``; the reply is the monotonic clock afterwards."""

    seconds: float

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError("cannot sleep a negative time")


@dataclass(frozen=True, slots=True)
class Now:
    """Reply: the process's monotonic clock in seconds (for budgets and timeouts)."""


@dataclass(frozen=True, slots=True)
class WallClock:
    """Reply: the local wall clock in seconds since the epoch (never for correctness)."""


@dataclass(slots=True)  # not frozen: one per cache miss (frozen setters cost ~0.2 µs a build)
class Compute:
    """Call user code: the runner calls ``fn(*args, **kwargs)`` and awaits it if async.

    With ``timeout`` (seconds) the runner stops waiting after that long and throws
    ``TimeoutError`` into the flow: the asyncio runner cancels a coroutine (a plain function runs
    in a worker thread), the sync runner leaves the call running in a daemon thread.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None


class _NotRun:
    """The type of :data:`NOT_RUN` (one instance)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_RUN"


NOT_RUN = _NotRun()
"""A :class:`ComputeEach` outcome: the call was never started (the op's ``stop()`` said so)."""


@dataclass(slots=True)  # not frozen: one per batch of a stream consumer (see above)
class ComputeEach:
    """Call user code once per item, ``fn(item)``, at most ``concurrency`` calls at a time
    (the sync runner's worker threads, the asyncio runner's tasks; ``1``: in order, in place).

    ``key`` (user code, called by the runner first): items with equal keys run one at a time, in
    their order. ``stop`` is a flag read before each call: a container that is non-empty once the
    calls must stop (read by truthiness: no call per item). Reply: one outcome per item, in
    order: ``None`` when the call returned, the exception it raised, or :data:`NOT_RUN`.
    """

    fn: Callable[[Any], Any]
    items: Sequence[Any]
    concurrency: int = 1
    key: Callable[[Any], Hashable] | None = None
    stop: Sized | None = None


@dataclass(frozen=True, slots=True)
class BlockingPop:
    """Wait up to ``seconds`` for an element of the list ``key`` (BLPOP).

    Reply: ``[key, element]``, or ``None`` when the block ended empty. The runner sends it on a
    connection whose socket timeout outlives the block, and may block for less than ``seconds``
    (never below :data:`MIN_BLOCK`) where the client's connections would time out first. Never
    retried: a lost reply may have consumed the element.
    """

    key: str
    seconds: float


@dataclass(frozen=True, slots=True)
class FanOut:
    """Run ``make()`` (a fresh flow) on each of ``clients`` in parallel, each bounded by ``timeout``.

    Reply: one result per client, in order; a node that failed or ran out of time gives its
    exception instance (a ``TimeoutError`` when it did not answer in time). The flows keep
    running on their own clients; the flow that yields this never sees a client.
    """

    clients: tuple[Any, ...]
    make: Callable[[], Generator[Any, Any, Any]]
    timeout: float


@dataclass(slots=True)  # not frozen: it is built on the miss and breaker-open paths (see above)
class Coalesce:
    """Single-flight: run the flow ``make()`` unless a call in this process is already running
    one for ``key`` in ``flights`` (a table the runner made, see ``_runner.flights``); then
    wait for that one instead.

    Reply: ``(result, led)``; ``led`` is False for a caller that got another's result. A
    follower gets the leader's exception raised at the ``yield``.
    """

    flights: Any
    key: str
    make: Callable[[], Generator[Any, Any, Any]]


@dataclass(frozen=True, slots=True)
class Probe:
    """Reply: the server's :class:`~redispatterns._core.server.ServerInfo`, cached per client."""


Op = Union[
    Command, Script, Batch, Sleep, Now, WallClock, Compute, ComputeEach, Probe, BlockingPop, FanOut, Coalesce
]
Flow = Generator[Op, Any, T]
