"""Cache-aside and write-through as flows: hit, stale-while-revalidate, XFetch, cold miss
under a lease, store with tags, invalidate, write-through.

Stored value (one string, so a hit is one GET)::

    \\x01 <soft-expiry ms since epoch> : <compute ms> : <version> | <codec payload>

The soft expiry is dated by the writer's wall clock (``CacheSpec.clock``): like the reader's
check against it, it decides freshness only, never correctness (the Redis TTL, the fill lease
and the invalidation tombstone are the server's), and it saves the store script a ``TIME``
call, a quarter of its server time. Before it the value is fresh; after it the value is *stale*
but still present (the Redis TTL is the soft TTL plus a stale window), so one caller refreshes
it under a short lease while the others keep getting the stale value. XFetch refreshes a fresh
value early, with a probability that grows as the expiry nears and with the measured compute
time (Vattani et al., VLDB 2015).

A cached ``None`` is a stored ``null``: present, unlike a miss.

A cold miss leases the value's own key with one ``SET key "\\x02<token>" NX PX <ms> GET``
(a bare command, not a script: half the server's work), which returns the value when there is
one, another caller's lease, or nil (the lease is ours), and the store replaces the lease with
the value (no second key to create and delete).
A stale value keeps being served while it is refreshed, so a refresh leases the ``#lock`` key
beside it; an invalidation deletes the value (and with it a cold fill's lease) and leaves a
tombstone there, so no fill that began before it stores its older result.

Keys (``b`` = crc32 bucket of the rest, so a value, its lease and its bucket's tag sets share one
Cluster slot and the store script can keep tags atomic with the write)::

    <prefix>cache:{b}:<function>:v<version>:<arguments>     the value (or a cold fill's lease)
    <prefix>cache:{b}:#lock:<function>:v<version>:<arguments>   its refresh lease / tombstone
    <prefix>cache:{b}:#tag:<tag>                              the bucket's members of a tag
    <prefix>cachetag:{<tag>}                                  the buckets a tag has members in

Flows return ``(value, outcome)``; the shell counts outcomes and calls hooks. User code (the
function, ``condition``, a TTL callable, ``version``) runs only through ``Compute``.
"""

from __future__ import annotations

import enum
import functools
import itertools
import math
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from redis.exceptions import MaxConnectionsError, ResponseError

from .breaker import CLOSED, CircuitBreaker, is_outage
from .cachekey import KeyPlan, bucket_of
from .codec import Codec, JsonCodec, as_bytes
from .keys import Keyspace
from .ops import (
    Batch,
    Coalesce,
    Command,
    Compute,
    Flow,
    Now,
    Script,
    Sleep,
    WallClock,
    trusted_command,
    trusted_script,
)
from .scripts import load

__all__ = [
    "BYPASS",
    "ERROR",
    "HIT",
    "LEASED",
    "MISS",
    "NOT_FOUND",
    "REFRESHED",
    "STALE",
    "STALE_ERROR",
    "UNCACHED",
    "UNDECODABLE",
    "UNENCODABLE",
    "CacheSpec",
    "CallKeys",
    "Entry",
    "NotCached",
    "StoreStatus",
    "call",
    "coalesced",
    "decode_entry",
    "encode_envelope",
    "fallback",
    "fill",
    "get",
    "invalidate",
    "invalidate_tags",
    "is_backpressure",
    "is_outage",
    "lease_op",
    "peek",
    "put",
    "new_token",
    "refresh",
    "release",
    "stale_ms_for",
    "write_back",
]

# outcomes
HIT = "hit"  # fresh value from Redis
MISS = "miss"  # not in Redis: the function ran (or, from get(), the shell must run fill())
STALE = "stale"  # stale value served while another caller refreshes
REFRESHED = "refreshed"  # stale (or early) value replaced by this caller
STALE_ERROR = "stale_error"  # the refresh raised: the stale value was served
BYPASS = "bypass"  # the breaker is open: Redis skipped, the function ran
ERROR = "error"  # Redis failed: the function ran, its result returned uncached
UNCACHED = "uncached"  # the function ran; its result was not stored (condition, lease lost, mount)
UNENCODABLE = "unencodable"  # the function ran; the codec could not encode its result
UNDECODABLE = "undecodable"  # from get(): the stored value no longer decodes (a miss)
LEASED = "leased"  # from get(): a miss, and this call now holds the fill lease (internal)


class NotCached(enum.Enum):
    """The type of ``NOT_CACHED``, what ``peek`` returns when nothing (decodable) is cached: a
    one-member enum, so ``value is NOT_CACHED`` narrows the type for a checker."""

    NOT_CACHED = "NOT_CACHED"

    def __repr__(self) -> str:
        return "NOT_CACHED"

    __str__ = __repr__


NOT_FOUND: Final = NotCached.NOT_CACHED


class StoreStatus(str, enum.Enum):
    """What a store did: written, skipped on purpose, not encodable, or Redis failed."""

    OK = "ok"  # written
    SKIP = "skip"  # not written: condition/TTL said no, lease lost, a newer version is stored
    CODEC = "codec"  # not written: the codec cannot encode the value
    ERROR = "error"  # not written: Redis failed
    INVALIDATED = "invalidated"  # write_through(mode="invalidate"): the entry was deleted

    def __str__(self) -> str:
        return str(self.value)


ENVELOPE = b"\x01"
_WAIT_FIRST = 0.005
_WAIT_MAX = 0.1


@dataclass(frozen=True, slots=True)
class Entry:
    value: Any
    soft_ms: int
    compute_ms: int
    version: int


class CallKeys:
    """The keys of one call, with ``pair``, ``(value, lock)`` as UTF-8 bytes (encoded once:
    redis-py sends bytes as they are and encodes a ``str`` per argument per call; a cold miss
    sends both twice), and its ``GET`` (built on first use and kept: a memoised hit builds it
    once, a cold miss, which reads with the lease script, never)."""

    __slots__ = ("_get", "bucket", "lock", "pair", "tags", "value")

    def __init__(self, value: str, lock: str, bucket: int, tags: tuple[str, ...] = ()) -> None:
        self.value = value
        self.lock = lock
        self.bucket = bucket
        self.tags = tags
        self.pair = (value.encode(), lock.encode())
        self._get: Command | None = None

    @property
    def get(self) -> Command:
        op = self._get
        if op is None:
            op = self._get = Command("GET", self.pair[0])
        return op

    def __repr__(self) -> str:
        return f"<CallKeys {self.value!r}>"


_MEMO_TYPES = frozenset({str, int})
_MEMO_MAX = 4096


@dataclass
class CacheSpec:
    """A decorated function's cache configuration, fixed at decoration time."""

    keyspace: Keyspace
    plan: KeyPlan
    codec: Codec
    ttl: float | Callable[[Any], float]
    version: str = "1"
    stale_ttl: float | None = None  # None: 10% of the TTL, at least 1 s
    jitter: float = 0.1
    lock_ttl: float = 10.0
    lock_wait: float | None = None  # None: the lock TTL
    beta: float = 1.0  # XFetch; 0 turns early refresh off
    stale_if_error: bool = True
    condition: Callable[[Any], bool] | None = None
    can_write: bool = True
    clock: Callable[[], float] | None = None
    """The wall clock (seconds) a store dates its soft expiry with; ``None``: a ``WallClock``
    op per store (the shell passes the runner's clock: one call, no runner step)."""
    _base: str = field(init=False, repr=False)
    _lock_base: str = field(init=False, repr=False)
    _key_start: str = field(init=False, repr=False)
    _memo: dict[tuple[Any, ...], CallKeys] = field(init=False, repr=False)
    present: dict[str, float] = field(init=False, repr=False)
    """Value key -> wall-clock second until which this process expects the value in Redis (its
    soft expiry, seen on a hit): a call reads such a key with a plain ``GET``, any other with the
    fill lease's ``SET … NX … GET``, which returns the value or grants the lease in one round trip."""
    heads: dict[str, Head] = field(init=False, repr=False)
    """Value key -> the header of the value last read under it (see :func:`_read`)."""
    held: dict[str, str] = field(init=False, repr=False)
    """Value key -> a fill lease token a call in this process holds: a single-flight leader
    waiting on a lease adopts it (its holder is a follower, waiting for that leader)."""
    corrupt: int = field(init=False, repr=False, default=0)
    """Values met that were not ours or no longer decode (treated as absent, then replaced)."""
    ttl_ms: float = field(init=False, repr=False, default=0.0)
    """A fixed TTL in ms, and its stale window (``stale_ms``): worked out once, not per store."""
    stale_ms: int = field(init=False, repr=False, default=0)
    lock_arg: bytes = field(init=False, repr=False, default=b"")
    """The lease length in ms as the script argument, encoded once."""

    def __post_init__(self) -> None:
        fn = self.plan.fn_id
        self._base = f"{fn}:v{self.version}:"
        self._lock_base = f"#lock:{fn}:v{self.version}:"
        self._key_start = f"{self.keyspace.prefix}cache:{{"
        self._memo = {}
        self.present = {}
        self.heads = {}
        self.held = {}
        if not callable(self.ttl):
            self.ttl_ms = float(self.ttl) * 1000.0
            self.stale_ms = stale_ms_for(float(self.ttl), self.stale_ttl)
        self.lock_arg = b"%d" % self.lock_ms

    @property
    def lock_ms(self) -> int:
        return max(1, round(self.lock_ttl * 1000))

    @property
    def wait_s(self) -> float:
        return self.lock_ttl if self.lock_wait is None else self.lock_wait

    def keys_for(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> CallKeys:
        """The call's keys. Calls with only positional ``str``/``int`` arguments are memoised
        (exact types, so ``1``, ``True``, ``1.0`` and ``"1"`` never share an entry)."""
        if not kwargs:
            memo = self._memo
            try:
                keys = memo.get(args)
            except TypeError:  # an unhashable argument: not memoised
                return self.keys_bound(self.plan.bind(args, kwargs))
            if keys is not None:
                if len(args) == 1:  # the common memoised call: one argument, no loop
                    t = type(args[0])
                    if t is int or t is str:
                        return keys
                else:
                    for a in args:
                        if type(a) not in _MEMO_TYPES:
                            break
                    else:
                        return keys
            text = self.plan.render_args(args)
            keys = self.keys_bound(self.plan.bind(args, kwargs)) if text is None else self._keys(text, ())
            for a in args:
                if type(a) not in _MEMO_TYPES:
                    return keys
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[args] = keys
            return keys
        return self.keys_bound(self.plan.bind(args, kwargs))

    def keys_bound(self, arguments: Mapping[str, Any]) -> CallKeys:
        tags = self.plan.tags_for(arguments) if self.plan.tag_templates else ()
        return self._keys(self.plan.render_bound(arguments), tags)

    def _keys(self, text: str, tags: tuple[str, ...]) -> CallKeys:
        """The keys of the argument part ``text``."""
        rest = self._base + text
        b = bucket_of(rest)
        head = f"{self._key_start}{b}}}:"
        return CallKeys(head + rest, head + self._lock_base + text, b, tags)


def tag_set_key(keyspace: Keyspace, bucket: int, tag: str) -> str:
    return f"{keyspace.prefix}cache:{{{bucket}}}:#tag:{tag}"


def tag_dir_key(keyspace: Keyspace, tag: str) -> str:
    return f"{keyspace.prefix}cachetag:{{{tag}}}"


def stale_ms_for(ttl_s: float, stale_ttl: float | None) -> int:
    if stale_ttl is None:
        return max(1000, round(ttl_s * 100))  # 10% of the TTL, at least 1 s
    return max(0, round(stale_ttl * 1000))


def encode_envelope(soft_ms: int, compute_ms: int, version: int, payload: bytes) -> bytes:
    """The stored format (what ``cache_store.lua`` writes); for tests and tools."""
    return ENVELOPE + f"{soft_ms}:{compute_ms}:{version}|".encode() + payload


def decode_entry(raw: Any, codec: Codec) -> Entry | None:
    """Parse a stored envelope; ``None`` when it is not ours or no longer decodes (a miss)."""
    data = raw if type(raw) is bytes else as_bytes(raw)
    if data[:1] != ENVELOPE:
        return None
    bar = data.find(b"|")
    if bar < 0:
        return None
    try:
        soft, comp, ver = data[1:bar].split(b":")
        return Entry(codec.decode(data[bar + 1 :]), int(soft), int(comp), int(ver))
    except Exception:  # a malformed header, or a value the codec no longer reads
        return None


Head = tuple[bytes, int, int, int, float]
"""A value's header as :func:`_read` keeps it: the bytes ``\\x01<soft>:<compute>:<version>|``,
where the payload starts, the soft expiry (ms), the compute time (ms), and until when (s) a read
under it may take :func:`call`'s inlined hit (fresh, no compute time to weigh, the JSON codec;
else 0)."""


def _read(
    raw: Any, codec: Codec, key: str = "", heads: dict[str, Head] | None = None
) -> tuple[Any, int, int] | None:
    """The hit path's parse: (value, soft expiry ms, compute ms), or None (a miss). ``heads``
    keeps each ``key``'s last header (a :data:`Head`): a value read again under the same header
    (the common hit) decodes its payload and parses nothing else."""
    data = raw if type(raw) is bytes else as_bytes(raw)
    if heads is not None:
        seen = heads.get(key)
        if seen is not None and data.startswith(seen[0]):
            start = seen[1]
            try:
                if type(codec) is JsonCodec and data[start] < 0xFE:  # plain JSON: no checks
                    body = data[start:] if len(data) < _COPY_BELOW else memoryview(data)[start:]
                    return orjson.loads(body), seen[2], seen[3]
                return codec.decode(data[start:]), seen[2], seen[3]
            except Exception:  # a value the codec no longer reads
                return None
    bar = data.find(b"|")
    if bar < 0 or data[:1] != ENVELOPE:
        return None
    try:
        soft, comp, _ = data[1:bar].split(b":")
        soft_ms, compute_ms = int(soft), (0 if comp == b"0" else int(comp))
        start = bar + 1
        json = type(codec) is JsonCodec
        if json and data[start] < 0xFE:  # plain JSON: no checks
            # below a few KB a slice (a copy) costs less than making a memoryview
            body = data[start:] if len(data) < _COPY_BELOW else memoryview(data)[start:]
            value = orjson.loads(body)
        else:
            value = codec.decode(data[start:])
    except Exception:  # a malformed header, or a value the codec no longer reads
        return None
    if heads is not None:
        if len(heads) >= _HEADS_MAX:
            heads.clear()
        inline = soft_ms / 1000.0 if json and compute_ms == 0 else 0.0
        heads[key] = (data[:start], start, soft_ms, compute_ms, inline)
    return value, soft_ms, compute_ms


_COPY_BELOW = 4096
_HEADS_MAX = 4096  # headers remembered per cached function (about 150 bytes each)


def is_backpressure(exc: BaseException) -> bool:
    """The client's pool is exhausted (a local queue, not an outage): wait and retry."""
    return isinstance(exc, MaxConnectionsError)


_BACKPRESSURE_TRIES = 60  # ~2 s of waiting in all


def _retry_backpressure(op: Any, exc: Exception, rand: Callable[[], float]) -> Flow[Any]:
    """Re-send ``op`` while the pool is exhausted (backoff with jitter); re-raise otherwise."""
    delay = 0.002
    for _ in range(_BACKPRESSURE_TRIES):
        if not is_backpressure(exc):
            raise exc
        yield Sleep(delay * (0.5 + rand()))
        delay = min(delay * 1.5, 0.05)
        try:
            return (yield op)
        except Exception as again:
            exc = again
    raise exc


def _send(op: Any, rand: Callable[[], float]) -> Flow[Any]:
    try:
        return (yield op)
    except Exception as exc:
        return (yield from _retry_backpressure(op, exc, rand))


def fallback(call: Compute, outcome: str) -> Flow[tuple[Any, str]]:
    """Redis failed or is skipped: just run the function (the shell coalesces callers)."""
    return (yield call), outcome


def _note_failure(breaker: CircuitBreaker, exc: BaseException) -> Flow[None]:
    breaker.last_error = exc
    if is_outage(exc):
        now = yield Now()
        breaker.failure(now)


def _compute(call: Compute) -> Flow[tuple[Any, int]]:
    """Run the user's function; the result and its compute time in integer ms."""
    t0 = yield Now()
    value = yield call
    t1 = yield Now()
    return value, max(0, round((t1 - t0) * 1000))


_token_prefix = secrets.token_hex(6)
_token_seq = itertools.count()


def _new_process() -> None:  # a forked child must never reuse its parent's tokens
    global _token_prefix, _token_seq
    _token_prefix, _token_seq = secrets.token_hex(6), itertools.count()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_process)


def new_token() -> str:
    """A cold fill's lease as stored in the value's key: ``"\\x02"`` and a token unique among
    processes (48 random bits per process, then a counter)."""
    return f"\x02{_token_prefix}{next(_token_seq):x}"


LEASE_MARK = b"\x02"
"""The first byte of a cold fill's lease in a value key (a value starts with ``ENVELOPE``)."""


def _is_lease(raw: Any) -> bool:
    """A read met another caller's cold-fill lease in the value's key."""
    if type(raw) is bytes:
        return raw[:1] == LEASE_MARK
    return isinstance(raw, (str, memoryview)) and as_bytes(raw)[:1] == LEASE_MARK


def release(keys: CallKeys, token: str) -> Flow[None]:
    """Drop our lease if we still hold it (quietly)."""
    return _release(keys, token)


def _release(keys: CallKeys, token: str) -> Flow[None]:
    lease = keys.pair[0] if token[:1] == "\x02" else keys.lock  # a cold fill's: the value's key
    try:
        yield trusted_script(_UNLOCK, (lease,), (token,))
    except Exception:  # best effort: the lease expires by itself
        return


# --------------------------------------------------------------------------- read path


COALESCED = "coalesced"


def coalesced(leader: str) -> str:
    """The outcome of a caller that waited for another's result: "coalesced", unless Redis was
    out (then the leader's ERROR / BYPASS)."""
    return leader if leader in (ERROR, BYPASS) else COALESCED


def call(
    spec: CacheSpec,
    keys: CallKeys,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    breaker: CircuitBreaker,
    rand: Callable[[], float],
    clock: Callable[[], float],
    flights: Any,
    leases: list[str] | None = None,
) -> Flow[tuple[Any, str]]:
    """One call of a cached function: ``(value, outcome)``.

    The read (:func:`get`, inlined here so a hit runs one generator): a ``GET`` when this
    process saw the value fresh, else the fill lease's ``SET … NX … GET``, which returns the value or
    grants the fill lease in the same round trip (so a cold miss is that script and one store).
    On a miss one :func:`fill` (``MISS`` / ``UNDECODABLE`` / ``LEASED``) or :func:`fallback`
    (``ERROR`` / ``BYPASS``) per key in this process, as a :class:`~._core.ops.Coalesce` op: the
    others wait for its result. ``leases``: where a call notes its lease token (the asyncio
    shell passes a list, so a cancelled call, which a flow cannot observe, can release it).
    """
    token = None
    now = clock()  # read once: it decides the read (GET or lease) and the value's freshness
    # the header of the value last read under this key, while that value is fresh with no
    # compute time for XFetch to weigh, in plain JSON (see _read): one lookup decides the read
    # (a GET: it is present) and lets the reply take the inlined hit below
    seen: Head | None = spec.heads.get(keys.value)
    if seen is None or now >= seen[4]:
        seen = None
        if spec.can_write:
            until = spec.present.get(keys.value)
            if until is None or now >= until:
                token = new_token()
    if breaker.state == CLOSED:
        op: Any = (keys._get or keys.get) if token is None else lease_op(spec, keys, token)
        failed: str | None
        try:
            raw = yield op
        except Exception as exc:
            raw, failed = yield from _read_failed(spec, op, exc, breaker, rand)
        else:
            failed = None
            if seen is not None and type(raw) is bytes and raw.startswith(seen[0]):
                # the common hit, inlined (no call, no parse): the value read again under the
                # header seen last time
                start = seen[1]
                try:
                    if raw[start] < 0xFE:  # not the codec's bytes marker
                        # below a few KB a slice (a copy) costs less than making a memoryview
                        return orjson.loads(
                            raw[start:] if len(raw) < _COPY_BELOW else memoryview(raw)[start:]
                        ), HIT
                except (ValueError, IndexError):  # no longer decodes: _classify counts it
                    pass
        if failed is None or failed is _RAW:
            value, outcome = _classify(spec, keys, raw, now, rand, token is not None)
            if outcome is STALE or outcome is _EARLY:
                value, outcome = yield from _stale(
                    spec, keys, fn, args, kwargs, breaker, rand, value, outcome
                )
        else:
            value, outcome = raw, failed
    else:
        value, outcome = yield from get(spec, keys, fn, args, kwargs, breaker, rand, clock, token)
    if value is not NOT_FOUND:
        return value, outcome
    user = Compute(fn, args, kwargs)
    if outcome is LEASED:
        assert token is not None
        held = spec.held
        held[keys.value] = token  # a leader polling for this lease in this process adopts it
        if leases is not None:
            leases.append(token)
        make = _leased_fill(spec, keys, user, breaker, rand, token, clock)
        try:
            (value, outcome), led = yield Coalesce(flights, keys.value, make)
        finally:
            if held.get(keys.value) == token:
                held.pop(keys.value, None)
        return value, (outcome if led else coalesced(outcome))
    if outcome is MISS or outcome is UNDECODABLE:
        token = new_token()
        if leases is not None:
            leases.append(token)
        make = functools.partial(
            fill, spec, keys, user, breaker, rand, replace=outcome is UNDECODABLE, token=token
        )
    else:  # Redis failed or the breaker is open: coalesce, then compute
        make = functools.partial(fallback, user, outcome)
    (value, outcome), led = yield Coalesce(flights, keys.value, make)
    return value, (outcome if led else coalesced(outcome))


_PRESENT_MAX = 65_536  # keys remembered per cached function (past it the table starts over)


def _leased_fill(
    spec: CacheSpec,
    keys: CallKeys,
    user: Compute,
    breaker: CircuitBreaker,
    rand: Callable[[], float],
    token: str,
    clock: Callable[[], float],
) -> Callable[[], Flow[tuple[Any, str]]]:
    """The ``Coalesce`` maker of a miss whose read took the lease (a closure here, not in
    :func:`call`, whose locals would all become cells; cheaper to call than a partial)."""
    return lambda: fill(spec, keys, user, breaker, rand, token=token, leased=True, clock=clock)


_STORE = load("cache_store")


def _store_args(
    envelope: bytes, hard: bytes, token: str, now_ms: int, mode: str, version: int
) -> tuple[Any, ...]:
    """``cache_store``'s ARGV: a put adds its mode and a version above 0."""
    args: tuple[Any, ...] = (envelope, hard, token, b"%d" % now_ms)
    if mode == "put":
        return (*args, b"put", b"%d" % version) if version > 0 else (*args, b"put")
    return args


_FILL = load("cache_fill")
_UNLOCK = load("cache_unlock")
_KEEP_REPLY = {"get": True}  # redis-py then returns SET ... GET's reply as it is, not a boolean


def lease_op(spec: CacheSpec, keys: CallKeys, token: str, replace: bool = False) -> Command:
    """The fill lease: ``SET key <lease> NX PX <lock_ms> GET``, whose reply is the value if
    present, another caller's lease, or nil (the lease is ours; a key of another type is its
    ``WRONGTYPE``). ``replace``: the present value is not ours or no longer decodes: a plain
    ``SET`` puts our lease over it (any type; it replies ``True``)."""
    if replace:
        return trusted_command(("SET", keys.pair[0], token, "PX", spec.lock_arg))
    return trusted_command(
        ("SET", keys.pair[0], token, "NX", "PX", spec.lock_arg, "GET"), options=_KEEP_REPLY
    )


def _is_lease_op(op: Any) -> bool:
    return type(op) is Command and op.options is _KEEP_REPLY


def _read_failed(
    spec: CacheSpec, op: Any, exc: Exception, breaker: CircuitBreaker, rand: Callable[[], float]
) -> Flow[tuple[Any, str]]:
    """The read raised: a planted value of another type is a miss to replace; an exhausted
    pool is waited out; anything else is an outage (the breaker counts it)."""
    if isinstance(exc, ResponseError):
        if "WRONGTYPE" not in str(exc):  # the lease script's SET passes it on
            if _is_lease_op(op):  # the lease refused (OOM, a read-only replica): run uncached
                yield from _note_failure(breaker, exc)
                return NOT_FOUND, ERROR
            raise exc
        spec.corrupt += 1
        return NOT_FOUND, UNDECODABLE  # another type planted under the key: replace it
    try:
        raw = yield from _retry_backpressure(op, exc, rand)
    except Exception as final:
        yield from _note_failure(breaker, final)
        return NOT_FOUND, ERROR
    return raw, _RAW


def _forget(spec: CacheSpec, keys: CallKeys) -> None:
    """The value is gone (or being filled): its next read takes the lease script again."""
    spec.present.pop(keys.value, None)
    spec.heads.pop(keys.value, None)


_RAW = "raw"  # internal: _read_failed got the reply after waiting out a full pool
_EARLY = "early"  # internal: a fresh value XFetch chose to refresh early


def _classify(
    spec: CacheSpec,
    keys: CallKeys,
    raw: Any,
    now: float,
    rand: Callable[[], float],
    leased: bool = False,
) -> tuple[Any, str]:
    """What a read's reply means: ``(value, HIT)``; ``(value, STALE)`` for a stale or
    early-refresh value (the caller decides, see :func:`_stale`); or ``NOT_FOUND`` with
    ``MISS`` / ``LEASED`` / ``UNDECODABLE``. ``leased``: the read was the lease script, whose
    nil means the lease is now ours."""
    if raw is None:
        if leased:
            return NOT_FOUND, LEASED
        _forget(spec, keys)
        return NOT_FOUND, MISS
    if _is_lease(raw):  # another caller is filling it: wait for its value (fill())
        _forget(spec, keys)
        return NOT_FOUND, MISS
    got = _read(raw, spec.codec, keys.value, spec.heads)
    if got is None:
        spec.corrupt += 1
        return NOT_FOUND, UNDECODABLE  # the shell fills, replacing it
    value, soft, compute_ms = got
    present = spec.present
    if len(present) >= _PRESENT_MAX:
        present.clear()
    present[keys.value] = soft / 1000.0
    now_ms = now * 1000.0
    if now_ms < soft:
        if spec.beta <= 0 or compute_ms <= 0:
            return value, HIT
        # XFetch: refresh early when now + compute * beta * -ln(U) reaches the expiry
        gap = compute_ms * spec.beta * -math.log(max(rand(), 1e-12))
        if now_ms + gap < soft:
            return value, HIT
        return Entry(value, soft, compute_ms, 0), _EARLY
    return Entry(value, soft, compute_ms, 0), STALE


def _stale(
    spec: CacheSpec,
    keys: CallKeys,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    breaker: CircuitBreaker,
    rand: Callable[[], float],
    entry: Entry,
    why: str,
) -> Flow[tuple[Any, str]]:
    """A stale value (or an early refresh): one caller refreshes it, the others are served it."""
    call = Compute(fn, args, kwargs)
    return (yield from _refresh(spec, keys, call, breaker, entry, why is _EARLY, rand))


def get(
    spec: CacheSpec,
    keys: CallKeys,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    breaker: CircuitBreaker,
    rand: Callable[[], float],
    clock: Callable[[], float],
    token: str | None = None,
) -> Flow[tuple[Any, str]]:
    """The read path: ``(value, outcome)``. ``NOT_FOUND`` asks :func:`call` to run, under the
    per-process single-flight, :func:`fill` (outcome ``MISS``/``UNDECODABLE``, or ``LEASED``:
    the lease is ours) or :func:`fallback` (``ERROR``/``BYPASS``: Redis failed or the breaker
    is open). With a ``token`` the read is the lease's ``SET … NX … GET`` (value or lease), else a
    ``GET``. ``fn(*args, **kwargs)`` is the user's function, called here only to refresh a
    stale value.

    ``clock()`` is the wall clock in seconds, passed in (not yielded as ``WallClock``) because
    a runner step on every hit costs more than the rest of the hit path; it only decides
    freshness, never correctness."""
    if breaker.state != CLOSED:
        now = yield Now()
        if not breaker.allow(now):
            return NOT_FOUND, BYPASS  # call() runs fallback() under the single-flight
    op = keys.get if token is None else lease_op(spec, keys, token)
    try:
        raw = yield op
    except Exception as exc:
        raw, outcome = yield from _read_failed(spec, op, exc, breaker, rand)
        if outcome is not _RAW:
            return raw, outcome
    if breaker.state != CLOSED:
        breaker.success()
    value, outcome = _classify(spec, keys, raw, clock(), rand, token is not None)
    if outcome is STALE or outcome is _EARLY:
        return (yield from _stale(spec, keys, fn, args, kwargs, breaker, rand, value, outcome))
    return value, outcome


def _refresh(
    spec: CacheSpec,
    keys: CallKeys,
    call: Compute,
    breaker: CircuitBreaker,
    entry: Entry,
    early: bool,
    rand: Callable[[], float],
) -> Flow[tuple[Any, str]]:
    """A stale (or early) value: one caller wins the lease and refreshes; others get it as is."""
    served = HIT if early else STALE
    if not spec.can_write:
        return entry.value, served
    token = secrets.token_hex(8)
    try:
        won = yield Command("SET", keys.lock, token, "NX", "PX", spec.lock_ms, keys=(keys.lock,))
    except Exception as exc:
        yield from _note_failure(breaker, exc)
        return entry.value, served
    if won is None:
        return entry.value, served
    try:
        value, compute_ms = yield from _compute(call)
    except Exception:
        yield from _release(keys, token)
        if early or spec.stale_if_error:
            return entry.value, STALE_ERROR
        raise
    status = yield from _store(spec, keys, value, compute_ms, "fill", token, 0, breaker, rand)
    return value, _outcome(status, REFRESHED)


def fill(
    spec: CacheSpec,
    keys: CallKeys,
    call: Compute,
    breaker: CircuitBreaker,
    rand: Callable[[], float],
    *,
    replace: bool = False,
    token: str | None = None,
    leased: bool = False,
    clock: Callable[[], float] | None = None,
) -> Flow[tuple[Any, str]]:
    """A cold miss: take the lease and compute, or wait (backoff with jitter) for the holder's
    value; after ``lock_wait`` compute anyway. ``replace``: the present value is undecodable.
    ``token``: the lease token (the shell passes one so it can :func:`release` the lease if the
    call is cancelled, which a flow cannot observe); ``leased``: the read already took the
    lease with it. A lease another call of this process holds (it follows this flow in the
    single-flight) is adopted rather than waited out. ``clock``: the wall clock that times the
    computation (for early refresh; default: the runner's monotonic clock, one op each read)."""
    if not spec.can_write:
        return (yield call), UNCACHED
    token = token or new_token()
    if not leased:
        lease = lease_op(spec, keys, token, replace)
        start = None
        delay = _WAIT_FIRST
        while True:
            try:
                got = yield from _send(lease, rand)
            except Exception as exc:
                yield from _note_failure(breaker, exc)
                return (yield call), ERROR
            if got is None or got is True:  # the lease is ours (True: put over a bad value)
                break
            if not _is_lease(got):  # the value arrived
                entry = decode_entry(got, spec.codec)
                if entry is not None:
                    return entry.value, HIT
                spec.corrupt += 1
                lease = lease_op(spec, keys, token, True)
                continue
            adopted = spec.held.pop(keys.value, None)
            if adopted is not None:  # the holder is a call of ours, waiting for this flow
                token = adopted
                break
            now = yield Now()
            if start is None:
                start = now
            if now - start >= spec.wait_s:  # the holder is slow or gone: compute ourselves
                value, compute_ms = yield from _compute(call)
                status = yield from _store(spec, keys, value, compute_ms, "fill", "", 0, breaker, rand)
                return value, _outcome(status, MISS)
            yield Sleep(delay * (0.5 + rand()))
            delay = min(delay * 1.6, _WAIT_MAX)
    try:
        if clock is None:
            value, compute_ms = yield from _compute(call)
        else:
            t0 = clock()
            value = yield call
            compute_ms = max(0, round((clock() - t0) * 1000))
    except Exception:
        yield from _release(keys, token)
        raise
    status = yield from _store(spec, keys, value, compute_ms, "fill", token, 0, breaker, rand)
    return value, _outcome(status, MISS)


def _outcome(status: str, ok: str) -> str:
    if status is StoreStatus.OK:
        return ok
    if status is StoreStatus.CODEC:
        return UNENCODABLE
    if status is StoreStatus.ERROR:
        return ERROR
    return UNCACHED


# --------------------------------------------------------------------------- write path


def _store(
    spec: CacheSpec,
    keys: CallKeys,
    value: Any,
    compute_ms: int,
    mode: str,
    token: str,
    version: int,
    breaker: CircuitBreaker,
    rand: Callable[[], float],
) -> Flow[StoreStatus]:
    """Encode and write ``value`` (``cache_store.lua``), in one round trip with its tags: a
    :class:`StoreStatus` (``SKIP``: condition, TTL, lease lost, newer version)."""
    if spec.condition is None and spec.ttl_ms:  # the common store: no condition, a fixed TTL
        try:
            payload = spec.codec.encode(value)
        except (TypeError, ValueError):  # not encodable (a type, or NaN/infinity)
            if token:
                yield from _release(keys, token)
            return StoreStatus.CODEC
        ttl_ms, stale_ms = spec.ttl_ms, spec.stale_ms
    else:
        ok = True
        if spec.condition is not None:
            ok = bool((yield Compute(spec.condition, (value,))))
        ttl: Any = spec.ttl
        if ok and callable(ttl):
            ttl = yield Compute(ttl, (value,))
            if ttl is None or isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
                ok = False  # a TTL callable says "don't cache" with None or 0
        payload = b""
        status = StoreStatus.SKIP
        if ok:
            try:
                payload = spec.codec.encode(value)
            except (TypeError, ValueError):  # not encodable (a type, or NaN/infinity)
                ok = False
                status = StoreStatus.CODEC
        if not ok:
            if token:
                yield from _release(keys, token)
            return status
        ttl_ms = spec.ttl_ms if ttl is spec.ttl else float(ttl) * 1000.0
        stale_ms = spec.stale_ms if ttl is spec.ttl else stale_ms_for(float(ttl), spec.stale_ttl)
    soft_ms = max(1, round(ttl_ms * (1.0 - spec.jitter * rand())))
    now = spec.clock() if spec.clock is not None else (yield WallClock())
    now_ms = int(now * 1000.0)
    # the whole envelope is built here: its soft expiry from the writer's clock, which decides
    # freshness only (readers compare it with their own clocks; the Redis TTL is the server's).
    # Integers go as bytes (redis-py sends bytes as they are).
    envelope = b"\x01%d:%d:%d|" % (now_ms + soft_ms, compute_ms, version) + payload
    hard = b"%d" % (soft_ms + stale_ms)
    try:
        if keys.tags:
            tag_keys = [tag_set_key(spec.keyspace, keys.bucket, t) for t in keys.tags]
            store_keys: tuple[str | bytes, ...] = (*keys.pair, *tag_keys)
            script = trusted_script(
                _STORE, store_keys, _store_args(envelope, hard, token, now_ms, mode, version)
            )
            written = yield from _store_tagged(spec, keys, script, rand)
        else:
            if token[:1] == "\x02" and mode == "fill":
                # the common store, a cold fill whose lease is still in the value's key:
                # cache_fill, one key and three arguments (each one is server time); -1: the
                # lease is gone, cache_store decides (one more round trip, only then)
                script = trusted_script(_FILL, (keys.pair[0],), (envelope, hard, token))
                try:  # _send, inlined: a cold miss passes through one generator less
                    written = yield script
                except Exception as exc:
                    written = yield from _retry_backpressure(script, exc, rand)
                if written != -1:
                    return StoreStatus.OK if written else StoreStatus.SKIP
            script = trusted_script(
                _STORE, keys.pair, _store_args(envelope, hard, token, now_ms, mode, version)
            )
            try:
                written = yield script
            except Exception as exc:
                written = yield from _retry_backpressure(script, exc, rand)
    except Exception as exc:
        yield from _note_failure(breaker, exc)
        return StoreStatus.ERROR
    return StoreStatus.OK if written else StoreStatus.SKIP


def _store_tagged(spec: CacheSpec, keys: CallKeys, script: Script, rand: Callable[[], float]) -> Flow[Any]:
    """The store and the registration of its bucket in each tag's directory, in one batch (one
    round trip; a directory lives in its tag's slot, on another node of a Cluster). A directory
    must never miss a bucket that holds members: when a registration failed and the value was
    written, the value is deleted again and the failure raised."""
    regs = tuple(Command("SADD", tag_dir_key(spec.keyspace, t), keys.bucket) for t in keys.tags)
    replies = yield from _send(Batch((*regs, script), transaction=False, raise_on_error=False), rand)
    written = replies[-1]
    if isinstance(written, Exception):
        raise written
    failed = next((r for r in replies[:-1] if isinstance(r, Exception)), None)
    if failed is not None:
        if written:
            try:
                yield Command("DEL", keys.value)
            except Exception:  # pragma: no cover - the value expires with its TTL
                pass
        raise failed
    return written


def put(
    spec: CacheSpec,
    keys: CallKeys,
    value: Any,
    version: int,
    breaker: CircuitBreaker,
    rand: Callable[[], float],
) -> Flow[StoreStatus]:
    """Write-through: replace the entry with ``value`` (unless a newer ``version`` is stored),
    cancelling any fill in flight (its lease is dropped, so its older result is not written)."""
    return (yield from _store(spec, keys, value, 0, "put", "", version, breaker, rand))


def write_back(
    spec: CacheSpec,
    keys: CallKeys,
    result: Any,
    value: Callable[[Any], Any] | None,
    version: Callable[[Any], int] | None,
    mode: str,
    breaker: CircuitBreaker,
    rand: Callable[[], float],
) -> Flow[StoreStatus]:
    """After a successful write: put the new value (``mode="update"``) or drop the entry
    (``"invalidate"``): a :class:`StoreStatus`."""
    if mode == "invalidate":
        try:
            yield from invalidate(spec, keys)
        except Exception as exc:
            yield from _note_failure(breaker, exc)
            return StoreStatus.ERROR
        return StoreStatus.INVALIDATED
    new = (yield Compute(value, (result,))) if value is not None else result
    ver = int((yield Compute(version, (new,)))) if version is not None else 0
    return (yield from put(spec, keys, new, ver, breaker, rand))


REPAIR_EVERY = 0.25  # seconds between attempts to drop entries a failed write-through left stale
MAX_REPAIRS = 10_000  # entries remembered per cached function; past it the oldest is forgotten


def repair(spec: CacheSpec, pending: dict[str, CallKeys]) -> Flow[int]:
    """A background loop: invalidate the entries whose write-through failed (the database has a
    newer value than the cache), every :data:`REPAIR_EVERY` seconds until none is left or
    Redis answers again; the number repaired. ``pending`` is shared with the shell, which adds."""
    done = 0
    while pending:
        yield Sleep(REPAIR_EVERY)
        for value_key, keys in list(pending.items()):
            try:
                yield from invalidate(spec, keys)
            except Exception:
                break  # still unreachable: the next round tries again
            pending.pop(value_key, None)
            done += 1
    return done


def invalidate(spec: CacheSpec, keys: CallKeys) -> Flow[int]:
    """Delete the entry; a tombstone on its lease stops a fill in flight from storing its
    (older) result, while a new fill may start at once."""
    _forget(spec, keys)
    script = Script(load("cache_invalidate"), keys=(keys.value, keys.lock), args=(spec.lock_ms,))
    return int((yield script))


def peek(spec: CacheSpec, keys: CallKeys) -> Flow[Any]:
    """The cached value without computing; ``NOT_FOUND`` on a miss or an undecodable value."""
    raw = yield Command("GET", keys.value)
    if raw is None:
        return NOT_FOUND
    entry = decode_entry(raw, spec.codec)
    return NOT_FOUND if entry is None else entry.value


def refresh(
    spec: CacheSpec, keys: CallKeys, call: Compute, breaker: CircuitBreaker, rand: Callable[[], float]
) -> Flow[Any]:
    """Run the function now and store its result (replacing the entry); the result."""
    value, compute_ms = yield from _compute(call)
    yield from _store(spec, keys, value, compute_ms, "put", "", 0, breaker, rand)
    return value


def invalidate_tags(keyspace: Keyspace, tags: Iterable[str], *, batch: int = 500) -> Flow[int]:
    """Delete every entry stored with any of ``tags``; the number of keys deleted.

    Each tag has one member set per bucket it was used in, and a directory of those buckets.
    Members are popped in batches (``SPOP``) and unlinked in their bucket's slot.
    """
    total = 0
    for tag in tags:
        raw = yield Command("SMEMBERS", tag_dir_key(keyspace, tag))
        for b in sorted(int(as_bytes(x)) for x in raw or ()):
            tset = tag_set_key(keyspace, b, tag)
            while True:
                members = yield Command("SPOP", tset, batch)
                if not members:
                    break
                names = [as_bytes(m) for m in members]
                total += int((yield Command("UNLINK", *names, keys=names)))
    return total
