"""The kv core without a server: schemas, layout, flows (replayed) and the write buffer."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar, Optional, TypedDict, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from redispatterns import Mount, QuotaExceeded, SchemaError
from redispatterns._core import kv as core
from redispatterns._core.codec import JsonCodec, PickleCodec
from redispatterns._core.keys import check_same_slot, slot
from redispatterns._core.ops import Batch, Command, Script, Sleep
from redispatterns.testing.replay import ANY, ReplayMismatch, replay, trace


def store(policy: str = "immediate", max_store: int | None = 1000, **mounts: Mount) -> core.KVStore:
    return core.KVStore(
        mounts or {"u": Mount(prefix="app:u:")}, max_store_size=max_store, write_policy=policy
    )


def book_bytes(spec: core.MountSpec) -> tuple[bytes, ...]:
    """A mount's bookkeeping keys as the prebuilt bytes writes send (ASCII prefixes)."""
    names: tuple[str, ...] = spec.book.keys()
    return tuple(k.encode() for k in names)


def is_script(name: str) -> Any:
    return lambda op: isinstance(op, Script) and op.script.name == name


# --------------------------------------------------------------------------- schema


def test_schema_from_a_mapping() -> None:
    fields = core.parse_schema({"a": "string", "b": {"type": "number", "default": 3}, "c": {"type": "dict"}})
    assert fields is not None
    assert [f.as_dict() for f in fields.values()] == [
        {"key": "a", "type": "string", "default": None},
        {"key": "b", "type": "number", "default": 3},
        {"key": "c", "type": "dict", "default": None},
    ]
    assert core.parse_schema(None) is None
    for bad, exc in (
        ({"a": "text"}, ValueError),
        ({"": "string"}, ValueError),
        ({"a": 3}, TypeError),
        ({"a": {"type": "string", "min": 1}}, ValueError),
        ({"a": {"type": "number", "default": "1"}}, TypeError),
        (42, TypeError),
    ):
        with pytest.raises(exc):
            core.parse_schema(bad)


def test_field_checks_kinds() -> None:
    cases = {
        "string": ("x", 1),
        "number": (1.5, True),
        "bool": (False, 0),
        "list": ([1], {"a": 1}),
        "dict": ({"a": 1}, [1]),
    }
    for kind, (good, bad) in cases.items():
        f = core.Field("k", kind)
        f.check(good)
        with pytest.raises(core.SchemaTypeError) as err:
            f.check(bad)
        assert isinstance(err.value, TypeError) and isinstance(err.value, SchemaError)
    core.Field("k", "any").check(object())
    core.Field("k", "string", nullable=True).check(None)
    with pytest.raises(TypeError):
        core.Field("k", "string").check(None)


@dataclasses.dataclass
class Prefs:
    theme: str = "light"
    size: int = 12
    tags: list[str] = dataclasses.field(default_factory=list)
    note: Optional[str] = None  # noqa: UP045
    either: Union[int, str] = 0
    anything: Any = None
    required: float = dataclasses.field(default=0.0)
    flag: bool = False
    other: bytes = b""


class PrefsDict(TypedDict):
    theme: str
    extra: dict[str, int]


def test_schema_from_a_dataclass_and_a_typeddict() -> None:
    fields = core.parse_schema(Prefs)
    assert fields is not None
    got = {k: (f.type, f.default, f.nullable) for k, f in fields.items()}
    assert got == {
        "theme": ("string", "light", False),
        "size": ("number", 12, False),
        "tags": ("list", [], False),
        "note": ("string", None, True),
        "either": ("any", 0, False),
        "anything": ("any", None, True),
        "required": ("number", 0.0, False),
        "flag": ("bool", False, False),
        "other": ("any", b"", False),
    }
    td = core.parse_schema(PrefsDict)
    assert td is not None and {k: f.type for k, f in td.items()} == {"theme": "string", "extra": "dict"}


def test_schema_from_a_pydantic_style_model() -> None:
    class Undefined:
        pass

    Undefined.__name__ = "PydanticUndefinedType"

    class Info:
        def __init__(self, annotation: Any, default: Any) -> None:
            self.annotation, self.default = annotation, default

        def get_default(self, *, call_default_factory: bool) -> Any:
            return self.default

    class Model:
        model_fields: ClassVar[dict[str, Any]] = {"name": Info(str, Undefined()), "age": Info(int, 3)}

    fields = core.parse_schema(Model)
    assert fields is not None
    assert {k: (f.type, f.default) for k, f in fields.items()} == {
        "name": ("string", None),
        "age": ("number", 3),
    }


def test_dataclass_without_default() -> None:
    @dataclasses.dataclass
    class D:
        x: int

    fields = core.parse_schema(D)
    assert fields is not None and fields["x"].default is None


# --------------------------------------------------------------------------- layout and configuration


def test_mount_base_and_slots() -> None:
    assert core.mount_base("app:user:", "kv") == "app:user:{kv}:"
    assert core.mount_base("{app}:user:", "kv") == "{app}:user:kv:"
    for bad in ("app:{x:", "app:{}:"):
        with pytest.raises(ValueError, match="hash tag"):
            core.mount_base(bad, "kv")
    s = store(a=Mount(prefix="app:a:"), b=Mount(prefix="app:b:"), c=Mount(prefix="{c}:"))
    a = s.spec("a")
    assert a.record("x*") == "app:a:{kv}:k:x*" and a.book.keys() == (
        "app:a:{kv}:i",
        "app:a:{kv}:m",
        "app:a:{kv}:x",
        "app:a:{kv}:u",
    )
    assert slot(a.record("{other}")) == a.slot
    same, other = s.peers(a)
    assert [m.name for m in same] == ["b"] and [m.name for m in other] == ["c"]
    assert s.mounts() == [
        {"name": "a", "mode": "read-write", "prefix": "app:a:"},
        {"name": "b", "mode": "read-write", "prefix": "app:b:"},
        {"name": "c", "mode": "read-write", "prefix": "{c}:"},
    ]


def test_store_validation() -> None:
    m = {"a": Mount(prefix="app:")}
    for kwargs in ({"write_policy": "x"}, {"max_store_size": 0}, {"max_store_size": True}, {"tag": "{x}"}):
        with pytest.raises(ValueError):
            core.KVStore(m, **kwargs)
    with pytest.raises(ValueError):
        core.KVStore({})
    with pytest.raises(ValueError):
        core.KVStore({"": Mount()})
    with pytest.raises(TypeError):
        core.KVStore({"a": "app:"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="overlap"):
        core.KVStore({"a": Mount(prefix="app:"), "b": Mount(prefix="app:x:")})
    s = core.KVStore(m)
    assert s.write_policy == "immediate" and s.max_store_size == 10485760
    assert s.schema("a") == []
    typed = core.KVStore({"a": Mount(prefix="app:", schema={"t": {"type": "list", "default": [1]}})})
    assert typed.schema("a") == [{"key": "t", "type": "list", "default": [1]}]
    with pytest.raises(KeyError):
        s.spec("b")
    with pytest.raises(TypeError):
        s.spec(1)


def test_keys_are_checked() -> None:
    spec = store(u=Mount(prefix="app:u:", schema={"a": "string"})).spec("u")
    with pytest.raises(TypeError):
        spec.check_key(b"a")
    with pytest.raises(ValueError):
        spec.check_key("")
    with pytest.raises(SchemaError):
        spec.check_key("b")
    assert spec.check_key("a") == "a"


def test_encode_gives_content_types_and_checks_size() -> None:
    spec = store(u=Mount(prefix="app:u:", max_value_size=8)).spec("u")
    assert spec.encode("k", {"a": 1}) == (b'{"a":1}', "application/json")
    assert spec.encode("k", b"raw") == (b"\xffraw", "application/octet-stream")
    with pytest.raises(QuotaExceeded) as err:
        spec.encode("k", "x" * 10)
    assert (err.value.quota, err.value.limit, err.value.mount) == ("max_value_size", 8, "u")
    pickled = store(u=Mount(prefix="app:u:", codec=PickleCodec(secret=b"s" * 16), max_value_size=None))
    assert pickled.spec("u").encode("k", 1)[1] == "application/x-picklecodec"
    assert isinstance(spec.mount.codec, JsonCodec)


# --------------------------------------------------------------------------- flows


def test_set_sends_one_script_with_quotas_and_ttl() -> None:
    s = store(u=Mount(prefix="app:u:", ttl=2, max_entries=5), v=Mount(prefix="app:v:"))
    ops, ok = trace(core.op_set(s, core.WriteBuffer(), "u", "k", [1], None), lambda op: 1)
    (op,) = ops
    assert isinstance(op, Script) and op.script.name == "kv_set"
    # the bookkeeping keys go as prebuilt bytes (ASCII here), the record as the str it is
    assert op.keys[:5] == (
        "app:u:{kv}:k:k",
        b"app:u:{kv}:i",
        b"app:u:{kv}:m",
        b"app:u:{kv}:x",
        b"app:u:{kv}:u",
    )
    assert op.keys[5:] == (b"app:v:{kv}:i", b"app:v:{kv}:m", b"app:v:{kv}:x", b"app:v:{kv}:u")
    # with a TTL the metadata goes whole, size first (the script stores it as sent)
    assert op.args == (b"[1]", b"2000", b"3;2000;application/json", b"5 1000 0")
    assert ok is True
    check_same_slot(op.keys)  # built without the check: the keys share the slot by construction
    # without a store limit the other mounts are not touched
    s2 = store(max_store=None, u=Mount(prefix="app:u:"), v=Mount(prefix="app:v:"))
    ops, _ = trace(core.op_set(s2, core.WriteBuffer(), "u", "k", 1, 3), lambda op: 1)
    assert (
        isinstance(ops[0], Script)
        and len(ops[0].keys) == 5
        and ops[0].args[1:] == (b"3000", b"1;3000;application/json", b"10000 0 0")
    )
    # without a TTL the script writes the size and its time in front of the content type
    ops, _ = trace(core.op_set(s2, core.WriteBuffer(), "u", "k", "abc", None), lambda op: 1)
    assert ops[0].args == (b'"abc"', b"0", b":application/json", b"10000 0 0")  # type: ignore[union-attr]
    ops, _ = trace(core.op_set(s2, core.WriteBuffer(), "u", "k", b"raw", 3), lambda op: 1)
    assert ops[0].args == (b"\xffraw", b"3000", b"4;3000;application/octet-stream", b"10000 0 0")  # type: ignore[union-attr]


@settings(max_examples=200)
@given(st.text(min_size=1), st.sampled_from(["app:u:", "{t}:u:", "é:", "{a}b{c}:"]))
def test_the_keys_of_a_write_share_a_slot_whatever_the_key(key: str, prefix: str) -> None:
    s = store(u=Mount(prefix=prefix), v=Mount(prefix="other:"))
    ops, _ = trace(
        core.op_set(s, core.WriteBuffer(), "u", key, 1, None),
        lambda op: [b"0"] * 2 if isinstance(op, Batch) else 1,
    )
    op = ops[-1]  # after the other slot's usage, when the prefix has its own tag
    assert isinstance(op, Script)
    check_same_slot(op.keys)
    # the script reads the key name from the record: what follows the metadata key's length + 1
    enc = [k.encode("utf-8", "surrogatepass") if isinstance(k, str) else k for k in op.keys]
    assert enc[0][len(enc[2]) + 1 :] == key.encode("utf-8", "surrogatepass")


def test_set_reads_mounts_in_other_slots_first() -> None:
    s = store(u=Mount(prefix="{u}:"), v=Mount(prefix="{v}:"), w=Mount(prefix="{w}:"))
    batch = Batch((Command("GET", "{v}:kv:u"), Command("GET", "{w}:kv:u")))
    result = replay(
        core.op_set(s, core.WriteBuffer(), "u", "k", 1, None),
        [
            (batch, [b"10", None]),
            (
                lambda op: (
                    isinstance(op, Script) and op.args[1:] == (b"0", b":application/json", b"10000 1000 10")
                ),
                1,
            ),
        ],
    )
    assert result is True


@pytest.mark.parametrize(("code", "quota"), [(-1, "max_entries"), (-3, "max_store_size")])
def test_script_refusals_become_quota_errors(code: int, quota: str) -> None:
    with pytest.raises(QuotaExceeded) as err:
        replay(core.op_set(store(), core.WriteBuffer(), "u", "k", 1, None), [(ANY, code)])
    limit = 10000 if code == -1 else 1000  # the mount's max_entries, the store's max_store_size
    assert err.value.quota == quota and err.value.limit == limit and err.value.mount == "u"


def test_argument_caches_stay_bounded() -> None:
    s = store()
    spec = s.spec("u")
    for i in range(300):
        assert s.terms(spec, i, "t", 0) == (str(i).encode(), core.meta_tail(i, "t").encode(), b"10000 1000 0")
        assert s.head(1, i, "t") == f"s1 {i} t".encode()
    assert len(s._terms) <= 256 and len(s._heads) <= 256
    assert s.terms(spec, 1, "t", 5) == (b"1", b";1;t", b"10000 1000 5")
    assert (spec.name, 1, "t") not in s._terms
    assert core.meta_tail(0, "t") == ":t"
    assert s.head(2, None, "") == b"d2"


def test_get_has_get_or() -> None:
    s = store(
        u=Mount(prefix="app:u:"), p=Mount(prefix="app:p:", schema={"t": {"type": "string", "default": "x"}})
    )
    buf = core.WriteBuffer()
    assert replay(core.op_get(s, buf, "u", "k"), [(Command("GET", "app:u:{kv}:k:k"), b'{"a":1}')]) == {"a": 1}
    assert replay(core.op_get(s, buf, "u", "k"), [(ANY, None)]) is None
    assert replay(core.op_get_or(s, buf, "u", "k", 5), [(ANY, None)]) == 5
    assert replay(core.op_get_or(s, buf, "u", "k", 5), [(ANY, b"1")]) == 1
    assert replay(core.op_get(s, buf, "p", "t"), [(ANY, None)]) == "x"
    assert replay(core.op_has(s, buf, "u", "k"), [(Command("EXISTS", "app:u:{kv}:k:k"), 1)]) is True
    with pytest.raises(SchemaError):
        replay(core.op_get(s, buf, "p", "other"), [])


def test_modes_are_checked_before_any_io() -> None:
    s = store(r=Mount("read", "app:r:"), w=Mount("write", "app:w:"))
    buf = core.WriteBuffer()
    for flow in (
        core.op_set(s, buf, "r", "k", 1, None),
        core.op_merge(s, buf, "r", "k", {}, None),
        core.op_delete(s, buf, "r", "k"),
        core.op_clear(s, buf, "r"),
        core.op_get(s, buf, "w", "k"),
        core.op_get_or(s, buf, "w", "k", 1),
        core.op_has(s, buf, "w", "k"),
        core.op_keys(s, buf, "w", None, None),
        core.op_get_all(s, buf, "w"),
        core.op_info(s, buf, "w", "k"),
    ):
        with pytest.raises(PermissionError):
            replay(flow, [])


def test_merge_is_a_retried_compare_and_set() -> None:
    s = store()
    buf = core.WriteBuffer()
    steps = [
        (Command("GET", "app:u:{kv}:k:d"), b'{"a":1}'),
        (lambda op: op.args[4:] == (2, b'{"a":1}') and op.args[0] == b'{"a":1,"b":2}', 0),
        (Sleep(0.0), None),
        (Command("GET", "app:u:{kv}:k:d"), None),
        (lambda op: op.args[4:] == (1, b"") and op.args[0] == b'{"b":2}', 1),
    ]
    assert replay(core.op_merge(s, buf, "u", "d", {"b": 2}, None), steps) is True
    with pytest.raises(TypeError):
        replay(core.op_merge(s, buf, "u", "d", [1], None), [])
    with pytest.raises(TypeError):
        replay(core.op_merge(s, buf, "u", "d", {1: 2}, None), [])
    with pytest.raises(core.SchemaTypeError):
        replay(core.op_merge(s, buf, "u", "d", {"b": 2}, None), [(ANY, b"3")])


def test_merge_gives_up_after_many_conflicts() -> None:
    ops, _ = [], None

    def respond(op: Any) -> Any:
        ops.append(op)
        if isinstance(op, Command):
            return b"{}"
        return 0 if isinstance(op, Script) else None

    with pytest.raises(core.MergeConflict):
        trace(core.op_merge(store(), core.WriteBuffer(), "u", "d", {"b": 2}, None), respond)
    assert sum(isinstance(op, Script) for op in ops) == core.MERGE_RETRIES


def test_delete_keys_clear_info_get_all() -> None:
    s = store(u=Mount(prefix="app:u:", schema={"a": "number", "b": {"type": "string", "default": "d"}}))
    buf = core.WriteBuffer()
    assert replay(core.op_delete(s, buf, "u", "a"), [(is_script("kv_delete"), 1)]) is True
    # keys: pages of PAGE until a short page
    page = [f"k{i}".encode() for i in range(core.PAGE)]
    got = replay(
        core.op_keys(s, buf, "u", None, None),
        [
            (lambda op: op.script.name == "kv_keys" and op.args == ("", core.PAGE), page),
            (lambda op: op.args == (f"k{core.PAGE - 1}", core.PAGE), [b"z"]),
        ],
    )
    assert len(got) == core.PAGE + 1 and got[-1] == "z"
    assert replay(core.op_keys(s, buf, "u", "a", 2), [(lambda op: op.args == ("a", 2), [b"b", b"c"])]) == [
        "b",
        "c",
    ]
    for bad in (0, True, "2"):
        with pytest.raises(ValueError):
            replay(core.op_keys(s, buf, "u", None, bad), [])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        replay(core.op_keys(s, buf, "u", 1, None), [])  # type: ignore[arg-type]
    # get_all: one SORT ... GET, defaults for unset schema fields, expired records left out
    sort = Command(
        "SORT_RO", "app:u:{kv}:i", "BY", "nosort", "LIMIT", 0, core.SORT_PAGE,
        "GET", "#", "GET", "app:u:{kv}:k:*", keys=["app:u:{kv}:i"], retryable=True,
    )  # fmt: skip
    assert replay(core.op_get_all(s, buf, "u"), [(sort, [b"a", b"5"])]) == {"a": 5, "b": "d"}
    got_all = replay(core.op_get_all(s, buf, "u"), [(sort, [b"a", b"5", b"b", None, b"c", b'"x"'])])
    assert got_all == {"a": 5, "c": "x", "b": "d"}
    # refused (an ACL, an old server): index pages + one MGET per batch, and never SORT again
    steps: list[tuple[Any, Any]] = [
        (sort, ResponseError("NOPERM this user has no permissions to access one of the keys")),
        (is_script("kv_keys"), [b"a"]),
        (Command("MGET", "app:u:{kv}:k:a", keys=["app:u:{kv}:k:a"]), [b"5"]),
    ]
    assert replay(core.op_get_all(s, buf, "u"), steps) == {"a": 5, "b": "d"}
    assert s.sort_refused == {"u"}
    assert replay(core.op_get_all(s, buf, "u"), [(ANY, [b"a"]), (ANY, [None])]) == {"a": None, "b": "d"}
    # a mount larger than one SORT page: the rest pages by name, after the last one SORT gave
    big = store(v=Mount(prefix="app:v:"))
    first = [x for i in range(core.SORT_PAGE) for x in (f"k{i:05}".encode(), b"1")]
    after = f"k{core.SORT_PAGE - 1:05}"
    steps = [
        (ANY, first),
        (lambda op: op.script.name == "kv_keys" and op.args == (after, core.PAGE), [b"z"]),
        (Command("MGET", "app:v:{kv}:k:z", keys=["app:v:{kv}:k:z"]), [b"2"]),
    ]
    got_all = replay(core.op_get_all(big, buf, "v"), steps)
    assert len(got_all) == core.SORT_PAGE + 1 and got_all["z"] == 2 and got_all["k00000"] == 1
    # a prefix holding '*' cannot be a SORT pattern: pages from the start
    star = store(w=Mount(prefix="app:*:"))
    assert star.spec("w").sort_pattern is None
    assert replay(core.op_get_all(star, buf, "w"), [(is_script("kv_keys"), [])]) == {}
    # clear: batches until the script names none
    assert replay(
        core.op_clear(s, buf, "u"),
        [
            (lambda op: op.keys == s.spec("u").book.keys() and op.args == (core.PAGE,), [b"a"]),
            (lambda op: op.keys[4:] == ("app:u:{kv}:k:a",) and op.args == ("a", core.PAGE), []),
        ],
    )
    # info: metadata, PTTL and deadline in one batch; a record with a TTL keeps its TTL in the
    # metadata, and its time is its deadline minus its TTL
    assert replay(
        core.op_info(s, buf, "u", "a"), [(Batch, [b"7:1500:application/json", 2500, None])]
    ) == core.KVInfo("a", 7, "application/json", 1.5, 2.5)
    assert replay(
        core.op_info(s, buf, "u", "a"), [(Batch, [b"7;3000;application/json", 2500, b"4500"])]
    ) == core.KVInfo("a", 7, "application/json", 1.5, 2.5)
    persistent = replay(core.op_info(s, buf, "u", "a"), [(Batch, [b"7:1500:t", -1, None])])
    assert persistent is not None and persistent.ttl is None
    assert replay(core.op_info(s, buf, "u", "a"), [(Batch, [None, -2, None])]) is None


# --------------------------------------------------------------------------- dispose


def test_dispose_buffers_and_reads_see_it() -> None:
    s = store(policy="dispose", p=Mount(prefix="app:p:", schema={"d": {"type": "dict", "default": {"z": 0}}}))
    buf = core.WriteBuffer()
    assert replay(core.op_set(s, buf, "p", "d", {"a": 1}, None), []) is True
    assert replay(core.op_merge(s, buf, "p", "d", {"b": 2}, None), []) is True
    assert replay(core.op_get(s, buf, "p", "d"), []) == {"a": 1, "b": 2}
    assert replay(core.op_has(s, buf, "p", "d"), []) is True
    assert replay(core.op_delete(s, buf, "p", "d"), []) is True
    assert replay(core.op_delete(s, buf, "p", "d"), []) is False
    assert replay(core.op_get(s, buf, "p", "d"), []) == {"z": 0}
    assert replay(core.op_has(s, buf, "p", "d"), []) is False
    assert replay(core.op_merge(s, buf, "p", "d", {"c": 3}, None), []) is True  # onto a delete
    assert replay(core.op_get(s, buf, "p", "d"), []) == {"z": 0, "c": 3}
    assert len(buf) == 1
    # a merge with nothing buffered stays a merge, applied over the stored value on read
    buf2 = core.WriteBuffer()
    replay(core.op_merge(s, buf2, "p", "d", {"c": 3}, None), [])
    replay(core.op_merge(s, buf2, "p", "d", {"e": 4}, None), [])
    assert replay(core.op_get(s, buf2, "p", "d"), [(ANY, b'{"a":1}')]) == {"a": 1, "c": 3, "e": 4}
    assert replay(core.op_get(s, buf2, "p", "d"), [(ANY, None)]) == {"z": 0, "c": 3, "e": 4}
    # an unbuffered delete asks Redis whether the key existed
    buf3 = core.WriteBuffer()
    assert replay(core.op_delete(s, buf3, "p", "d"), [(Command("EXISTS", "app:p:{kv}:k:d"), 1)]) is True
    replay(core.op_merge(s, buf3, "p", "d", {"x": 1}, None), [])  # onto the buffered delete
    assert replay(core.op_get(s, buf3, "p", "d"), []) == {"z": 0, "x": 1}
    buf3.drop("p")
    assert len(buf3) == 0


def test_flush_sends_one_script_per_slot_then_the_merges() -> None:
    s = store(policy="dispose", u=Mount(prefix="app:u:", ttl=5, max_entries=9), v=Mount(prefix="app:v:"))
    buf = core.WriteBuffer()
    replay(core.op_set(s, buf, "u", "a", 1, None), [])
    replay(core.op_delete(s, buf, "v", "b"), [(ANY, 0)])
    replay(core.op_set(s, buf, "v", "c", b"x", 2), [])
    replay(core.op_merge(s, buf, "u", "m", {"x": 1}, None), [])
    replay(core.op_set(s, buf, "u", "a", 2, None), [])  # the last write per key, in first-write order
    replies: Iterator[Any] = iter([[], None, 1])  # kv_flush, GET of the merged key, its kv_set
    ops, n = trace(core.flush_buffer(s, buf), lambda op: next(replies))
    assert n == 4 and len(buf) == 0
    flush_op, get_m, merge_op = ops
    assert isinstance(flush_op, Script) and flush_op.script.name == "kv_flush"
    book = (*book_bytes(s.spec("u")), *book_bytes(s.spec("v")))  # prebuilt bytes (ASCII)
    assert flush_op.keys == ("app:u:{kv}:k:a", "app:v:{kv}:k:b", "app:v:{kv}:k:c", *book)
    heads = (b"s1 5000 application/json", b"2", b"d2", b"s2 2000 application/octet-stream", b"\xffx")
    assert flush_op.args == (3, 2, 1000, 0, 9, 10000, *heads)
    check_same_slot(flush_op.keys)
    # a mount of the slot with no write is counted for the store limit (its keys come last)
    s3 = store(policy="dispose", u=Mount(prefix="app:u:"), v=Mount(prefix="app:v:"), w=Mount(prefix="{w}:"))
    replay(core.op_set(s3, buf, "u", "a", 1, None), [])
    ops, _ = trace(core.flush_buffer(s3, buf), lambda op: [b"0"] if isinstance(op, Batch) else [])
    assert ops[-1].keys[5:] == book_bytes(s3.spec("v"))  # type: ignore[union-attr]
    assert get_m == Command("GET", "app:u:{kv}:k:m") and isinstance(merge_op, Script)
    assert replay(core.flush_buffer(s, buf), []) == 0
    # without a store limit, the slot's other mounts are left out
    s2 = store(policy="dispose", max_store=None, u=Mount(prefix="app:u:"), v=Mount(prefix="app:v:"))
    replay(core.op_set(s2, buf, "u", "a", 1, None), [])
    ops, _ = trace(core.flush_buffer(s2, buf), lambda op: [])
    assert isinstance(ops[0], Script) and len(ops[0].keys) == 5 and ops[0].args[:5] == (1, 1, 0, 0, 10000)


def test_flush_reports_refusals_and_failed_slots_and_keeps_going() -> None:
    s = store(policy="dispose", u=Mount(prefix="app:u:", max_entries=2))
    buf = core.WriteBuffer()
    for k in ("a", "b", "c", "d"):
        replay(core.op_set(s, buf, "u", k, 1, None), [])
    replay(core.op_merge(s, buf, "u", "m", {"x": 1}, None), [])
    steps = [
        (is_script("kv_flush"), [3, -1, 4, -3]),  # the refused writes: position, code
        (Command("GET", "app:u:{kv}:k:m"), None),
        (is_script("kv_set"), -3),
    ]
    errors = replay(core.flush(s, buf.drain()), steps)
    assert [(type(e), e.quota, e.limit) for e in errors] == [  # type: ignore[attr-defined]
        (QuotaExceeded, "max_entries", 2),
        (QuotaExceeded, "max_store_size", 1000),
        (QuotaExceeded, "max_store_size", 1000),
    ]
    replay(core.op_set(s, buf, "u", "a", 1, None), [])
    with pytest.raises(ResponseError, match="boom"):
        replay(core.flush_buffer(s, buf), [(ANY, ResponseError("boom"))])
    replay(core.op_set(s, buf, "u", "a", 1, None), [])
    with pytest.raises(QuotaExceeded, match="full"):  # flush() raises the first refusal
        replay(core.flush_buffer(s, buf), [(ANY, [1, -1])])
    # only merges: no kv_flush at all
    replay(core.op_merge(s, buf, "u", "m", {"x": 1}, None), [])
    assert replay(core.flush_buffer(s, buf), [(Command, None), (is_script("kv_set"), 1)]) == 1


def test_flush_across_slots_reads_the_other_slots_then_pipelines_the_slots() -> None:
    """Mounts with their own tags: one read of the others' usage, one pipeline of one script per slot."""
    s = store(policy="dispose", a=Mount(prefix="{a}:"), b=Mount(prefix="{b}:"), c=Mount(prefix="{c}:"))
    buf = core.WriteBuffer()
    replay(core.op_set(s, buf, "a", "k", 1, None), [])
    replay(core.op_set(s, buf, "b", "k", 1, None), [])
    read = Batch(tuple(Command("GET", f"{{{m}}}:kv:u") for m in "abc"))

    def pipeline(op: Any) -> bool:
        return (
            isinstance(op, Batch)
            and not op.raise_on_error
            and [(o.keys[0], o.args[3]) for o in op.ops] == [("{a}:kv:k:k", 15), ("{b}:kv:k:k", 12)]
        )

    errors = replay(
        core.flush(s, buf.drain()), [(read, [b"2", b"5", b"10"]), (pipeline, [[], RuntimeError("x")])]
    )
    assert [str(e) for e in errors] == ["x"]
    # no size limit: nothing to read first
    s2 = store(policy="dispose", max_store=None, a=Mount(prefix="{a}:"), b=Mount(prefix="{b}:"))
    replay(core.op_set(s2, buf, "a", "k", 1, None), [])
    replay(core.op_set(s2, buf, "b", "k", 1, None), [])
    assert replay(core.flush(s2, buf.drain()), [(Batch, [[], []])]) == []


def test_listing_flushes_the_buffer_first() -> None:
    s = store(policy="dispose")
    buf = core.WriteBuffer()
    replay(core.op_set(s, buf, "u", "a", 1, None), [])
    steps: list[tuple[Any, Any]] = [(is_script("kv_flush"), []), (is_script("kv_keys"), [b"a"])]
    assert replay(core.op_keys(s, buf, "u", None, None), steps) == ["a"]
    replay(core.op_set(s, buf, "u", "a", 1, None), [])
    steps = [(is_script("kv_flush"), []), (Command, [b"a", b"1"])]
    assert replay(core.op_get_all(s, buf, "u"), steps) == {"a": 1}
    replay(core.op_set(s, buf, "u", "a", 1, None), [])
    steps = [(is_script("kv_flush"), []), (Batch, [b"1:1000:t", -1, None])]
    assert replay(core.op_info(s, buf, "u", "a"), steps) is not None
    replay(core.op_set(s, buf, "u", "a", 1, None), [])
    assert replay(core.op_clear(s, buf, "u"), [(is_script("kv_clear"), [])]) is True
    assert len(buf) == 0


def test_replay_catches_a_wrong_flow() -> None:
    with pytest.raises(ReplayMismatch):
        replay(core.op_get(store(), core.WriteBuffer(), "u", "k"), [(Command("GET", "other"), None)])
