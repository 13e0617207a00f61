"""Sliding sessions as pure flows: token hashing, the key layout, expiry math and hooks.

Layout (``ks`` is the store's keyspace; ``<id>`` is the hex SHA-256 of the token, or its
HMAC-SHA256 under the store's secret, so Redis never holds a usable token):

* ``ks:sess:{<id>}``          HASH: ``_s`` last seen, ``_`` the fixed times as JSON
                               ``[deadline, idle, created]`` (ms), ``_a`` the user and meta as
                               JSON ``[user, meta]``, ``_v`` version, and ``d:<field>`` per data
                               field (encoded by the codec); a hash of the previous layout (``_u``
                               user, ``_c`` created, ``_abs`` deadline, ``_i`` idle, ``_m`` meta)
                               is still read;
* ``ks:sess:{<id>}:ev``       LIST of events, newest first, trimmed on write;
* ``ks:sess:{<id>}:x``        the revocation marker (set before a session is deleted);
* ``ks:sess:{<id>}:tr``       ZSET of track events (``tracks=True``; see ``_core/session_tracks.py``),
                               moved by ``rotate`` and deleted by ``destroy`` like the event log;
* ``ks:sess-user:{<user>}``   ZSET of the user's session ids scored by absolute deadline;
* ``ks:sess-user:{<user>}:state`` and ``ks:sess-app:{<app>}:state``: state HASHes.

A session's keys share its id's hash tag; the user's keys share the user's tag. Work that spans
the two is split into single-slot scripts, ordered so that a logout wins: ids are indexed
*before* their session exists, and a session id is marked revoked *before* it is deleted, so a
create or rotation racing ``destroy_all`` ends up either indexed (and so revocable) or dead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union
from uuid import UUID

import orjson

from .breaker import CLOSED, CircuitBreaker, is_outage, open_error
from .codec import Codec, JsonCodec, as_bytes, as_str, json_dumps
from .keys import Keyspace
from .ops import Batch, Command, Compute, Flow, Now, Op, Script, trusted_script
from .scripts import load

__all__ = [
    "DEFAULT_EVENT_LIMIT",
    "DEFAULT_IDLE",
    "DEFAULT_LIFETIME",
    "Session",
    "SessionConfig",
    "SessionInfo",
    "UserId",
    "append_event",
    "check_token",
    "create",
    "destroy",
    "destroy_all",
    "decode_events",
    "event_blob",
    "events",
    "get",
    "new_token",
    "patch_state",
    "refresh_due",
    "rotate",
    "sessions",
    "guarded",
    "sliding_ttl_ms",
    "split_event",
    "state",
    "token_id",
    "update",
]

DEFAULT_IDLE = 1800.0
DEFAULT_LIFETIME = 43200.0
DEFAULT_EVENT_LIMIT = 100
TOKEN_BYTES = 32  # 256 random bits
TOKEN_LEN = 43  # len(secrets.token_urlsafe(32))
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_SID = re.compile(r"[0-9a-f]{64}")
_DATA = "d:"
_MAX_FIELD = 1024
_loads = orjson.loads
_GET = load("session_get")
_UPDATE = load("session_update")
_JSONDecodeError = orjson.JSONDecodeError
_sha256 = hashlib.sha256


# --------------------------------------------------------------------------- tokens


def new_token() -> str:
    """A fresh session token: 256 bits from :mod:`secrets`, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def check_token(token: object) -> str | None:
    """``token`` when it has the shape of one of ours; ``None`` for any other string.

    A non-string is a programming error (``TypeError``); a malformed string (empty, huge,
    non-ASCII, wrong alphabet) is just an unknown session and never reaches Redis.
    """
    if not isinstance(token, str):
        raise TypeError(f"a session token is a str, not {type(token).__name__}")
    if len(token) != TOKEN_LEN or not _TOKEN.fullmatch(token):
        return None
    return token


def token_id(token: str, secret: bytes | None = None) -> str:
    """The id Redis stores instead of the token: hex SHA-256, or HMAC-SHA256 under ``secret``."""
    raw = token.encode("ascii")
    if secret:
        return hmac.digest(secret, raw, "sha256").hex()  # one C call (hmac.new builds objects)
    return _sha256(raw).hexdigest()


# --------------------------------------------------------------------------- expiry math


def sliding_ttl_ms(now_ms: int, deadline_ms: int, idle_ms: int) -> int:
    """The TTL a touch at ``now_ms`` sets: the idle TTL, never past the absolute deadline.

    ``<= 0`` means the session is over. (``lua/session_get.lua`` computes the same.)
    """
    return min(idle_ms, deadline_ms - now_ms)


def refresh_due(pttl_ms: int, idle_ms: int, refresh_permille: int) -> bool:
    """Whether a read slides the TTL: when less than ``refresh_permille``/1000 of it is left."""
    return pttl_ms < 0 or pttl_ms * 1000 < idle_ms * refresh_permille


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything a flow needs besides its arguments (built once by the store)."""

    keyspace: Keyspace
    codec: Codec
    idle_ms: int
    lifetime_ms: int
    refresh_permille: int = 1000
    event_limit: int = DEFAULT_EVENT_LIMIT
    tombstone_ms: int = 60_000
    secret: bytes | None = None
    app_state_ms: int = 0
    user_state_ms: int = 0
    on_get: Callable[..., Any] | None = None
    on_append: Callable[..., Any] | None = None
    tracks: bool = False  # keep each session's track key in step on rotate / destroy
    breaker: CircuitBreaker | None = None  # guards the reads (see ``guarded``)
    fail_closed: bool = False  # reads during an outage find nothing instead of raising
    get_args: tuple[bytes] = field(init=False, repr=False, compare=False)  # built once: b"1000"

    def __post_init__(self) -> None:
        object.__setattr__(self, "get_args", (str(self.refresh_permille).encode(),))

    def id_of(self, token: str) -> str:
        return token_id(token, self.secret)

    def session_keys(self, sid: str) -> tuple[str, str, str]:
        # sid is always 64 hex digits (see ``check_sid``), so no key-part validation is needed here;
        # the result equals keyspace.tagged("sess", sid[, "ev" | "x"]).
        base = f"{self.keyspace.prefix}sess:{{{sid}}}"
        return base, base + ":ev", base + ":x"

    def hash_key(self, sid: str) -> str:
        """The session hash alone (``session_keys(sid)[0]``): the hot paths' one key."""
        return f"{self.keyspace.prefix}sess:{{{sid}}}"

    def track_key(self, sid: str) -> str:
        return f"{self.keyspace.prefix}sess:{{{sid}}}:tr"

    def index_key(self, user_id: str) -> str:
        return self.keyspace.tagged("sess-user", user_id)

    def state_key(self, scope: str, name: str) -> str:
        if scope == "user":
            return self.keyspace.tagged("sess-user", name, "state")
        if scope == "app":
            return self.keyspace.tagged("sess-app", name, "state")
        raise ValueError(
            f"state scope must be 'app' or 'user' (session state is the session's data), not {scope!r}"
        )


@dataclass(slots=True)
class Session:
    """A live session as ``get`` returns it. Times are seconds since the epoch (server clock)."""

    token: str
    id: str
    user_id: str
    data: dict[str, Any]
    created: float
    last_seen: float
    expires_at: float
    idle_ttl: float
    version: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One entry of ``sessions(user_id)``: metadata only, never the token or the data."""

    id: str
    user_id: str
    created: float
    last_seen: float
    expires_at: float
    meta: dict[str, Any]

    @property
    def ip(self) -> str | None:
        v = self.meta.get("ip")
        return v if isinstance(v, str) else None

    @property
    def user_agent(self) -> str | None:
        v = self.meta.get("user_agent")
        return v if isinstance(v, str) else None


UserId = Union[str, int, UUID]
"""A user id: a ``str``, or an ``int`` / ``UUID`` (a database key), stored as its ``str``."""


def check_user(user_id: object) -> str:
    """The user id as stored: ``str`` as is, ``int`` and ``UUID`` as their ``str`` (so ``7``
    and ``"7"`` name the same user)."""
    if user_id.__class__ is not str:
        if isinstance(user_id, bool) or not isinstance(user_id, (str, int, UUID)):
            raise TypeError(f"user_id must be a str, int or UUID, not {type(user_id).__name__}")
        user_id = str(user_id)
    assert isinstance(user_id, str)
    if not user_id:
        raise ValueError("user_id cannot be empty")
    if len(user_id) > _MAX_FIELD:
        raise ValueError(f"user_id is longer than {_MAX_FIELD} characters")
    return user_id


def _check_field(name: object, what: str = "session field") -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} names must be str, not {type(name).__name__}")
    if not name or len(name) > _MAX_FIELD:
        raise ValueError(f"{what} names must be 1..{_MAX_FIELD} characters, got {name!r:.60}")
    return name


def encode_fields(codec: Codec, data: Mapping[str, Any] | None, prefix: str = _DATA) -> list[bytes | str]:
    """Flat ``field, value`` arguments for HSET (data fields get the ``d:`` prefix)."""
    if data is None:
        return []
    if data.__class__ is not dict and not isinstance(data, Mapping):
        raise TypeError(f"session data must be a mapping of str to values, not {type(data).__name__}")
    encode = codec.encode  # JsonCodec sends short values straight to orjson itself
    out: list[bytes | str] = []
    for k, v in data.items():
        if k.__class__ is not str or not k or len(k) > _MAX_FIELD:
            _check_field(k)
        out.append(prefix + k)
        out.append(encode(v))
    return out


def _field_names(names: Iterable[str], prefix: str = _DATA) -> list[str]:
    if names == ():
        return []
    if isinstance(names, (str, bytes)):
        raise TypeError("remove= takes an iterable of field names, not a single string")
    return [prefix + _check_field(n) for n in names]


def _about(user_id: str, meta: Mapping[str, Any]) -> bytes:
    """A session's ``_a`` field: its user and meta as JSON ``[user, meta]``."""
    try:
        return json_dumps([user_id, dict(meta)])
    except TypeError as exc:
        raise TypeError(f"session metadata must be JSON (str keys, JSON values): {exc}") from None


_META = frozenset(("_s", "_", "_a", "_v", "_u", "_c", "_abs", "_i", "_m"))  # metadata, either layout


def _facts(fields: Mapping[str, Any]) -> list[Any]:
    """``[deadline, idle, created, user, meta]`` from a session's metadata fields, of either
    layout (``_`` and ``_a``, or a field per fact); missing facts read as 0, ``""`` and ``{}``."""
    times, about = fields.get("_"), fields.get("_a")
    if times is not None:
        return [*_loads(times), *(_loads(about) if about else ("", {}))]
    m = fields.get("_m")
    return [
        _ms(fields.get("_abs")),
        _ms(fields.get("_i")),
        _ms(fields.get("_c")),
        _text(fields.get("_u") or ""),
        _loads(m) if m else {},
    ]


def _pairs(flat: list[Any]) -> dict[str, bytes]:
    return {as_str(flat[i]): as_bytes(flat[i + 1]) for i in range(0, len(flat), 2)}


def _ms(raw: bytes | str | None) -> int:
    return int(raw) if raw else 0


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw


def _data_fields(names: list[Any], values: list[Any]) -> tuple[list[str], list[Any]]:
    """The data fields among a session hash's names / values: names without their ``d:``
    prefix, and their values; other fields (counters, summaries) are left out.

    One join, one UTF-8 decode and one split for the whole list when every name is a ``d:``
    name without a NUL (what redis-py wrote for our str names); per name otherwise (a name
    holding a NUL, a decoding client's str names, a foreign writer's non-UTF-8 bytes)."""
    if not names:
        return [], []
    try:
        joined = b"\0".join(names).decode()
    except (TypeError, UnicodeDecodeError):
        pass
    else:
        if joined[:2] == "d:" and joined.count("\0") == len(names) - 1:
            keys = joined[2:].split("\0d:")
            if len(keys) == len(names):  # so every name starts with 'd:'
                return keys, values
    keys, kept = [], []
    for name, value in zip(names, values, strict=True):
        text = _text(name)
        if text[:2] == "d:":
            keys.append(text[2:])
            kept.append(value)
    return keys, kept


def decode_data(codec: Codec, keys: list[str], values: list[Any]) -> dict[str, Any]:
    """Data fields from parallel key / value lists. With the default JSON codec the values go
    straight to orjson, and only when one is not JSON (a ``bytes`` value, a foreign writer) to
    the codec: the result is the codec's either way, without its per-value checks."""
    if codec.__class__ is JsonCodec:
        try:
            decoded = list(map(_loads, values))
        except _JSONDecodeError:
            decoded = list(map(codec.decode, values))
    else:
        decoded = list(map(codec.decode, values))
    return dict(zip(keys, decoded, strict=True))


# Data names seen -> a JSON template that decodes a session's fixed times, user and meta, and its
# data fields in one orjson call (see ``_json_plan``); bounded: an app's field sets are few.
_PLANS: dict[tuple[Any, ...], bytes | None] = {}
_PLAN_LIMIT = 512


def _json_plan(names: tuple[Any, ...]) -> bytes | None:
    """The template for one session reply's data names, in their order:
    ``[%b,%b,{"name":%b,...}]``, filled with the ``_`` and ``_a`` values and the data values,
    it is one JSON document whose ``loads`` gives the times, ``[user, meta]`` and the data dict.
    ``None`` when a name is not a UTF-8 ``d:`` bytes name (the per-field path reads those)."""
    plan = _PLANS.get(names, b"")
    if plan != b"":
        return plan
    parts: list[bytes] | None = []
    for name in names:
        if name.__class__ is not bytes or name[:2] != b"d:":
            parts = None
            break
        try:
            key = name[2:].decode()
        except UnicodeDecodeError:
            parts = None
            break
        assert parts is not None
        parts.append(orjson.dumps(key).replace(b"%", b"%%") + b":%b")
    plan = None if parts is None else b"[%b,%b,{" + b",".join(parts) + b"}]"
    if len(_PLANS) < _PLAN_LIMIT:
        _PLANS[names] = plan
    return plan


def _json_session(
    cfg: SessionConfig, token: str, sid: str, names: tuple[Any, ...], times: Any, about: Any,
    values: list[Any], seen: Any, version: Any,
) -> Session | None:  # fmt: skip
    """The default JSON codec's fast path: the fixed times, user, meta and every data value in
    one ``orjson.loads`` of a template filled with the raw values. ``None`` (the caller reads
    field by field) for another codec, names the template cannot hold, or a document orjson
    refuses or whose field count is off. What the codec writes is a JSON document of its own or
    starts with a mark byte that is never UTF-8 (so orjson refuses the whole document); only a
    foreign writer's text that is not JSON alone could, in contrived shapes, glue into a valid
    document with the same field count (then it is read as glued, not refused)."""
    if cfg.codec.__class__ is not JsonCodec:
        return None
    plan = _json_plan(names)
    if plan is None:
        return None
    try:
        (deadline, idle, created), (user, meta), data = _loads(plan % (times, about, *values))
    except (ValueError, TypeError):  # orjson's JSONDecodeError is a ValueError
        return None
    if len(data) != len(names):
        return None
    return Session(
        token, sid, user, data, created / 1000, int(seen) / 1000, deadline / 1000, idle / 1000,
        int(version), meta,
    )  # fmt: skip


def decode_session(cfg: SessionConfig, token: str, sid: str, reply: list[Any]) -> Session:
    """A :class:`Session` from ``lua/session_get.lua``'s reply (the hot path of ``get``): the
    hash's name / value pairs. A hash written by ``create`` starts with ``_s``, ``_``, ``_a``,
    ``_v`` (a small hash keeps insertion order): read by position; any other order by name
    (one dict built in C, the metadata popped off it; a decoding client's str names and the
    previous layout go through :func:`_scan`). With the JSON codec, one ``orjson.loads`` decodes it all
    (:func:`_json_session`)."""
    if reply[0] == b"_s" and reply[2] == b"_" and reply[4] == b"_a" and reply[6] == b"_v":
        seen, version = reply[1], reply[7]
        names = tuple(reply[8::2])
        fast = _json_session(cfg, token, sid, names, reply[3], reply[5], reply[9::2], seen, version)
        if fast is not None:
            return fast
        deadline, idle, created = _loads(reply[3])
        user, meta = _loads(reply[5])
        keys, values = _data_fields(reply[8::2], reply[9::2])
    else:
        pairs = dict(zip(reply[::2], reply[1::2], strict=True))
        seen, times = pairs.pop(b"_s", None), pairs.pop(b"_", None)
        about, version = pairs.pop(b"_a", None), pairs.pop(b"_v", None)
        if seen is None or times is None or about is None or version is None:
            seen, (deadline, idle, created, user, meta), version, keys, values = _scan(reply)
        else:  # a hash that keeps no insertion order (a big one, or a value over 64 bytes)
            names, values = tuple(pairs), list(pairs.values())
            fast = _json_session(cfg, token, sid, names, times, about, values, seen, version)
            if fast is not None:
                return fast
            deadline, idle, created = _loads(times)
            user, meta = _loads(about)
            keys, values = _data_fields(list(names), values)
    return Session(
        token,
        sid,
        user,
        decode_data(cfg.codec, keys, values),
        created / 1000,
        int(seen) / 1000,
        deadline / 1000,
        idle / 1000,
        int(version),
        meta,
    )


def _scan(reply: list[Any]) -> tuple[Any, list[Any], Any, list[str], list[Any]]:
    """Last seen, the facts (see :func:`_facts`), the version and the data fields of a session
    hash's flat name / value list, for str names or either layout: a name at a time."""
    meta: dict[str, Any] = {}
    names, values = [], []
    for i in range(0, len(reply), 2):
        name = _text(reply[i])
        if name[:2] == "d:":
            names.append(reply[i])
            values.append(reply[i + 1])
        elif name in _META:
            meta[name] = reply[i + 1]
    keys, values = _data_fields(names, values)
    return meta.get("_s") or 0, _facts(meta), meta.get("_v") or 0, keys, values


# --------------------------------------------------------------------------- reads behind the breaker

DOWN: Any = object()
"""What :func:`guarded` returns for a read skipped or failed during an outage (``fail_closed``)."""


def _gate(cfg: SessionConfig) -> Flow[Any]:
    """Only when the breaker is not closed: may this read try Redis? Raises when it may not and
    the store fails loudly; returns ``DOWN`` when it fails closed."""
    breaker = cfg.breaker
    assert breaker is not None
    now = yield Now()
    if breaker.allow(now):
        return None
    if cfg.fail_closed:
        return DOWN
    raise open_error(breaker)


def _tripped(cfg: SessionConfig, exc: Exception) -> Flow[None]:
    """Count an outage against the breaker; raise it unless the store fails closed."""
    breaker = cfg.breaker
    assert breaker is not None
    breaker.failure((yield Now()), exc)
    if not cfg.fail_closed:
        raise exc


def guarded(cfg: SessionConfig, op: Op) -> Flow[Any]:
    """``op``'s reply, behind the store's circuit breaker (issue D2): a hung or dead server
    costs one timeout per read until ``threshold`` of them open the breaker; then reads skip
    Redis (µs) until a probe gets through. Skipped or failed reads raise, or give ``DOWN``
    under ``fail_closed``. A closed breaker costs one attribute read."""
    breaker = cfg.breaker
    if breaker is None:
        return (yield op)
    if breaker.state != CLOSED and (yield from _gate(cfg)) is DOWN:
        return DOWN
    try:
        reply = yield op
    except Exception as exc:
        if not is_outage(exc):
            raise
        yield from _tripped(cfg, exc)
        return DOWN
    if breaker.failures:
        breaker.success()
    return reply


# --------------------------------------------------------------------------- flows


def create(
    cfg: SessionConfig,
    user_id: UserId,
    data: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
    *,
    idle_ms: int | None = None,
    lifetime_ms: int | None = None,
) -> Flow[str]:
    """Index the new id under the user, write the session, then confirm the index entry.

    Three single-slot steps. If ``destroy_all`` drains the index in between, the session is
    refused (revocation marker) or revoked at the confirmation: the token comes back dead.
    """
    user_id = check_user(user_id)
    fields = encode_fields(cfg.codec, data)
    about = _about(user_id, meta)
    token = new_token()
    sid = cfg.id_of(token)
    idle = idle_ms or cfg.idle_ms
    lifetime = lifetime_ms or cfg.lifetime_ms
    index = cfg.index_key(user_id)
    deadline = yield Script(load("session_index_add"), keys=(index,), args=(sid, lifetime, ""))
    deadline = int(deadline)
    made = yield Script(
        load("session_create"), keys=cfg.session_keys(sid), args=(deadline, idle, 1, "", about, 0, *fields)
    )
    yield from _confirm(cfg, user_id, sid, deadline, "", int(made) == 1)
    return token


def _confirm(cfg: SessionConfig, user_id: str, sid: str, deadline: int, old: str, made: bool) -> Flow[bool]:
    index = cfg.index_key(user_id)
    if not made:
        yield Command("ZREM", index, sid, keys=(index,))
        return False
    ok = yield Script(load("session_index_swap"), keys=(index,), args=(sid, deadline, old))
    if int(ok) == 1:
        return True
    yield from _revoke(cfg, sid, "")  # a logout-everywhere ran between our steps: it wins
    if cfg.tracks:
        yield Command("DEL", cfg.track_key(sid), keys=(cfg.track_key(sid),))
    return False


def _revoke(cfg: SessionConfig, sid: str, user_id: str, take: bool = False) -> Flow[Any]:
    return (
        yield Script(
            load("session_destroy"),
            keys=cfg.session_keys(sid),
            args=(cfg.tombstone_ms, user_id, "1" if take else ""),
        )
    )


def get(cfg: SessionConfig, token: object) -> Flow[Session | None]:
    """One round trip: read the session and slide its idle TTL (capped by the deadline).

    Behind the store's breaker (:func:`guarded`, inlined: this is the hottest read)."""
    tok = check_token(token)
    if tok is None:
        return None
    sid = cfg.id_of(tok)
    breaker = cfg.breaker
    if breaker is not None and breaker.state != CLOSED and (yield from _gate(cfg)) is DOWN:
        return None
    try:
        reply = yield trusted_script(_GET, (cfg.hash_key(sid),), cfg.get_args)  # one key: one slot
    except Exception as exc:
        if breaker is None or not is_outage(exc):
            raise
        yield from _tripped(cfg, exc)
        return None
    if breaker is not None and breaker.failures:
        breaker.success()
    if not isinstance(reply, list):
        return None
    session: Session | None = decode_session(cfg, tok, sid, reply)
    if cfg.on_get is not None:
        session = yield Compute(cfg.on_get, (session,))
    return session


def update(
    cfg: SessionConfig,
    token: object,
    changes: Mapping[str, Any] | None,
    remove: Iterable[str] = (),
    expect_version: int | None = None,
) -> Flow[int | None]:
    """Set and delete data fields atomically. The new version, ``None`` for no session,
    ``-1`` when ``expect_version`` did not match (the shell raises)."""
    fields = encode_fields(cfg.codec, changes)
    dels = [] if remove == () else _field_names(remove)
    if expect_version is not None and (
        isinstance(expect_version, bool) or not isinstance(expect_version, int)
    ):
        raise TypeError("expect_version must be an int")
    tok = check_token(token)
    if tok is None:
        return None
    sid = cfg.id_of(tok)
    if expect_version is None and not dels and fields:  # the common call: the pairs alone
        args: tuple[Any, ...] = tuple(fields)
    else:
        expect = "" if expect_version is None else str(expect_version)
        args = (expect, len(fields) // 2, *fields, *dels)
    v = int((yield trusted_script(_UPDATE, (cfg.hash_key(sid),), args)))  # one key: one slot
    return None if v == 0 else v


def destroy(cfg: SessionConfig, token: object) -> Flow[bool]:
    """Revoke the token (marker first, then delete) and drop it from its user's index."""
    tok = check_token(token)
    if tok is None:
        return False
    return (yield from destroy_id(cfg, cfg.id_of(tok), ""))


def destroy_id(cfg: SessionConfig, sid: str, user_id: str) -> Flow[bool]:
    """Revoke by session id (``SessionInfo.id``); with ``user_id``, only that user's session."""
    if not isinstance(sid, str) or not _SID.fullmatch(sid):
        return False
    user = yield from _revoke(cfg, sid, user_id)
    if isinstance(user, int):
        return False
    index = cfg.index_key(as_str(user))
    unindex = Command("ZREM", index, sid, keys=(index,))
    if cfg.tracks:
        tr = cfg.track_key(sid)
        yield Batch((unindex, Command("DEL", tr, keys=(tr,))))
    else:
        yield unindex
    return True


def destroy_all(cfg: SessionConfig, user_id: UserId, max_passes: int = 8) -> Flow[int]:
    """Log out everywhere: drain the index, revoke each id; repeat until the index stays empty.

    Creates and rotations index their new id *before* writing the session, so any of them still
    in flight either shows up in a later pass or finds its id revoked.
    """
    index = cfg.index_key(check_user(user_id))
    killed = 0
    for _ in range(max_passes):
        flat = yield Script(load("session_index_list"), keys=(index,), args=("1",))
        sids = [as_str(flat[i]) for i in range(0, len(flat), 2)]
        if not sids:
            break
        # Plain commands (cluster pipelines refuse scripts); per id the marker goes first, and
        # one id's keys share a slot, so its commands reach one node in this order.
        ops: list[Command] = []
        for sid in sids:
            h, ev, x = cfg.session_keys(sid)
            ops += [
                Command("SET", x, "1", "PX", cfg.tombstone_ms, keys=(x,)),
                Command("DEL", h, keys=(h,)),
                Command("DEL", ev, keys=(ev,)),
            ]
            if cfg.tracks:
                ops.append(Command("DEL", cfg.track_key(sid), keys=(cfg.track_key(sid),)))
        replies = yield Batch(tuple(ops))
        killed += sum(int(r) for r in replies[1 :: 4 if cfg.tracks else 3])
    return killed


_INFO_FIELDS = ("_", "_a", "_s", "_c", "_abs", "_m")  # either layout's


def sessions(cfg: SessionConfig, user_id: UserId) -> Flow[list[SessionInfo]]:
    """The user's live sessions (oldest first); index entries of dead sessions are removed."""
    user_id = check_user(user_id)
    index = cfg.index_key(user_id)
    flat = yield from guarded(cfg, Script(load("session_index_list"), keys=(index,), args=("",)))
    sids = [] if flat is DOWN else [as_str(flat[i]) for i in range(0, len(flat), 2)]
    if not sids:
        return []
    rows = yield from guarded(
        cfg, Batch(tuple(Command("HMGET", cfg.hash_key(s), *_INFO_FIELDS) for s in sids))
    )
    if rows is DOWN:
        return []
    live: list[SessionInfo] = []
    dead: list[str] = []
    for sid, row in zip(sids, rows, strict=True):
        if row[0] is None and row[3] is None:
            dead.append(sid)
            continue
        deadline, _, created, _, meta = _facts(dict(zip(_INFO_FIELDS, row, strict=True)))
        live.append(
            SessionInfo(
                id=sid,
                user_id=user_id,
                created=created / 1000,
                last_seen=_ms(row[2]) / 1000,
                expires_at=deadline / 1000,
                meta=meta,
            )
        )
    if dead:
        yield Command("ZREM", index, *dead, keys=(index,))
    live.sort(key=lambda i: (i.created, i.id))
    return live


def rotate(cfg: SessionConfig, token: object) -> Flow[str | None]:
    """A new token for the same session (data, events, created, deadline, version); the old dies.

    Order: index the new id (under a provisional deadline), take the old session (read and
    revoke it in one script), write the new one, then confirm the new index entry with its real
    deadline and drop the old entry. ``destroy_all`` drains until the index stays empty, so a
    rotation racing it is either reached through the new entry or finds the old id revoked.
    A crash midway loses the session (a logout), never leaves two live tokens.
    """
    tok = check_token(token)
    if tok is None:
        return None
    old = cfg.id_of(tok)
    new = new_token()
    sid = cfg.id_of(new)
    # the user is known only from the session; the index is the user's, so read it first
    h = cfg.hash_key(old)
    about, user = yield Command("HMGET", h, "_a", "_u", keys=(h,))
    if about is not None:
        user_id = _loads(about)[0]
    elif user is not None:
        user_id = as_str(user)
    else:
        return None
    index = cfg.index_key(user_id)
    yield Script(load("session_index_add"), keys=(index,), args=(sid, cfg.lifetime_ms, ""))
    taken = yield from _revoke(cfg, old, user_id, take=True)
    if isinstance(taken, int):
        yield Command("ZREM", index, sid, keys=(index,))
        return None
    fields = _pairs(taken[0])
    evs = [as_bytes(e) for e in reversed(taken[1])]  # oldest first
    deadline, idle, created, user_of, meta = _facts(fields)  # a hash of the previous layout too:
    about = fields.get("_a") or _about(user_of, meta)  # the new one is written in the current one
    keep = [x for k, v in fields.items() if k not in _META for x in (k, v)]
    made = yield Script(
        load("session_create"),
        keys=cfg.session_keys(sid),
        args=(deadline, idle, fields.get("_v", b"1"), created, about, len(evs), *evs, *keep),
    )
    if cfg.tracks and int(made) == 1:
        yield from _move_tracks(cfg, old, sid, deadline)
    ok = yield from _confirm(cfg, user_id, sid, deadline, old, int(made) == 1)
    return new if ok else None


def _move_tracks(cfg: SessionConfig, old: str, new: str, deadline: int) -> Flow[None]:
    """Carry the old id's track events over to the new id (nobody else knows the new id yet;
    the old session is revoked, so no track write can reach the old key any more)."""
    src, dst = cfg.track_key(old), cfg.track_key(new)
    members = yield Command("ZRANGE", src, 0, -1, keys=(src,))
    if members:
        yield Batch(
            (
                Command("ZADD", dst, *[x for m in members for x in (0, m)], keys=(dst,)),
                Command("PEXPIREAT", dst, deadline, keys=(dst,)),
                Command("DEL", src, keys=(src,)),
            )
        )


def append_event(cfg: SessionConfig, token: object, event: Any) -> Flow[int]:
    """Append to the session's event log (at most ``event_limit`` newest kept); 0: no session.

    ``on_append(session_id, event)`` may return a replacement event, or ``None`` to drop it.
    """
    prepared = yield from event_blob(cfg, token, event)
    if prepared is None:
        return 0
    sid, blob = prepared
    n = yield Script(load("session_event"), keys=cfg.session_keys(sid)[:2], args=(blob, cfg.event_limit))
    return int(n)


def event_blob(cfg: SessionConfig, token: object, event: Any) -> Flow[tuple[str, bytes] | None]:
    """The session id and encoded event to append, after ``on_append``; ``None``: nothing to do."""
    tok = check_token(token)
    if tok is None:
        return None
    sid = cfg.id_of(tok)
    if cfg.on_append is not None:
        event = yield Compute(cfg.on_append, (sid, event))
        if event is None:
            return None
    return sid, cfg.codec.encode(event)


def split_event(raw: bytes) -> tuple[float | None, bytes]:
    """``(server time in seconds, encoded event)`` of one stored log entry; the time is ``None``
    for an entry written before entries carried one."""
    if raw[16:17] == b"\x00" and raw[:16].isdigit():
        return int(raw[:16]) / 1_000_000, raw[17:]
    return None, raw


def decode_events(
    cfg: SessionConfig, raw: list[Any], since_us: int | None = None, until_us: int | None = None
) -> list[Any]:
    """The log's entries (newest first, as stored) decoded oldest first, kept when their time
    is in ``[since, until]`` (an entry without a time is kept only when no bound is given)."""
    decode = cfg.codec.decode
    bounded = since_us is not None or until_us is not None
    lo = -1.0 if since_us is None else since_us / 1_000_000
    hi = float("inf") if until_us is None else until_us / 1_000_000
    out = []
    for entry in reversed(raw):
        at, blob = split_event(as_bytes(entry))
        if bounded and (at is None or not lo <= at <= hi):
            continue
        out.append(decode(blob))
    return out


def events(
    cfg: SessionConfig,
    token: object,
    limit: int | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
) -> Flow[list[Any]]:
    """The newest ``limit`` events (default: all kept) appended in ``[since, until]`` (server
    time, microseconds; inclusive), oldest first."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise TypeError("limit must be an int or None")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    if since_us is not None and until_us is not None and until_us < since_us:
        raise ValueError("until must not be before since")
    tok = check_token(token)
    if tok is None:
        return []
    h, key, _ = cfg.session_keys(cfg.id_of(tok))
    bounded = since_us is not None or until_us is not None
    last = cfg.event_limit - 1 if bounded or limit is None else limit - 1  # a range reads the whole log
    # the log outlives an idle-expired session until the deadline: read it only if the hash lives
    read = Batch(
        (Command("EXISTS", h, keys=(h,)), Command("LRANGE", key, 0, last, keys=(key,))), transaction=True
    )
    reply = yield from guarded(cfg, read)
    if reply is DOWN or not reply[0]:
        return []
    raw = reply[1]
    out = decode_events(cfg, raw, since_us, until_us)
    return out[-limit:] if limit is not None else out


def patch_state(
    cfg: SessionConfig,
    scope: str,
    name: UserId,
    changes: Mapping[str, Any] | None,
    remove: Iterable[str] = (),
) -> Flow[int]:
    """Merge ``changes`` into the app or user state hash, delete ``remove``; refresh its TTL."""
    key = cfg.state_key(scope, check_user(name) if scope == "user" else _check_field(name, "app"))
    fields = encode_fields(cfg.codec, changes, "")
    dels = _field_names(remove, "")
    if not fields and not dels:
        raise ValueError("patch_state needs changes or remove=")
    ttl = cfg.user_state_ms if scope == "user" else cfg.app_state_ms
    n = yield Script(load("session_state_patch"), keys=(key,), args=(ttl, len(fields) // 2, *fields, *dels))
    return int(n)


def state(cfg: SessionConfig, scope: str, name: UserId) -> Flow[dict[str, Any]]:
    """The whole app or user state hash, decoded."""
    key = cfg.state_key(scope, check_user(name) if scope == "user" else _check_field(name, "app"))
    flat = yield from guarded(cfg, Command("HGETALL", key, keys=(key,)))
    if flat is DOWN:
        return {}
    if isinstance(flat, dict):
        items = list(flat.items())
    else:
        items = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    return {as_str(k): cfg.codec.decode(as_bytes(v)) for k, v in items}
