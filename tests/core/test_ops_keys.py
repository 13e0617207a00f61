"""Operation values and key building: validation and slot checks before any I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redispatterns import CrossSlotError
from redispatterns._core.keys import Keyspace, check_same_slot, glob_escape, hash_tag, slot
from redispatterns._core.ops import Batch, Command, Compute, Script, Sleep
from redispatterns._core.scripts import load


def test_command_needs_a_name() -> None:
    with pytest.raises(ValueError, match="command name"):
        Command()


def test_command_name_normalised() -> None:
    assert Command(b"get", "k").name == "GET"
    assert Command("zadd", "k", 1, "m").name == "ZADD"


def test_multi_key_command_across_slots_fails_before_io() -> None:
    with pytest.raises(CrossSlotError) as info:
        Command("MGET", "a", "b", keys=("a", "b"))
    assert info.value.keys == ("a", "b")
    assert len(set(info.value.slots)) == 2
    Command("MGET", "{u}a", "{u}b", keys=("{u}a", "{u}b"))  # same tag: fine


def test_script_key_count_checked() -> None:
    with pytest.raises(ValueError, match="takes 0 keys"):
        Script(load("core_time"), keys=("k",))


def test_transaction_keys_checked_plain_pipeline_not() -> None:
    ops = (Command("INCR", "a"), Command("INCR", "b"))
    Batch(ops)  # a plain pipeline may span slots
    with pytest.raises(CrossSlotError):
        Batch(ops, transaction=True)
    with pytest.raises(ValueError, match="at least one"):
        Batch(())


def test_sleep_and_compute() -> None:
    with pytest.raises(ValueError, match="negative"):
        Sleep(-1)
    assert Compute(len, ([1],)).kwargs == {}


def test_slot_and_hash_tags() -> None:
    assert slot("{user:42}:a") == slot("{user:42}:b") == slot("user:42")
    assert hash_tag("app:{x}:y") == b"x"
    assert hash_tag("app:{}:y") is None
    assert hash_tag("plain") is None
    assert hash_tag("open{only") is None
    assert check_same_slot([]) == 0
    assert check_same_slot(["{a}1", "{a}2"]) == slot("a")


def test_keyspace_builds_tagged_keys() -> None:
    ks = Keyspace("app:")
    assert ks.key("cache", "v1", "x") == "app:cache:v1:x"
    assert ks.tagged("lock", "invoice:7") == "app:lock:{invoice:7}"
    assert ks.tagged("lock", "invoice:7", "fence") == "app:lock:{invoice:7}:fence"
    a, b = ks.family("rl", "user:1", ["", "seq"])
    assert slot(a) == slot(b)
    assert ks.child("cache").prefix == "app:cache:"
    assert ks.contains("app:x") and not ks.contains(b"other:x")
    assert ks.strip(b"app:x") == "x"
    with pytest.raises(ValueError, match="outside prefix"):
        ks.strip("zzz")  # noqa: B005


def test_keyspace_validation() -> None:
    with pytest.raises(ValueError, match="cannot be empty"):
        Keyspace("app:").tagged("lock", "")
    with pytest.raises(TypeError, match="must be a str"):
        Keyspace("app:").tagged("lock", 7)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Keyspace("app:").key(b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Keyspace("app:").tagged("lock", "x", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="newlines"):
        Keyspace("a\nb")
    with pytest.raises(TypeError):
        Keyspace(b"x")  # type: ignore[arg-type]


def test_braces_in_subjects_are_tagged_by_digest() -> None:
    ks = Keyspace("p:")
    a, b = ks.tagged("x", "}a{"), ks.tagged("x", "}a{", "n")
    assert slot(a) == slot(b)
    assert "}a{" not in a
    assert ks.tagged("x", "}a{") != ks.tagged("x", "}a{{")
    with pytest.raises(ValueError, match="does not close"):
        Keyspace("a{b:")


def test_a_literal_subject_cannot_forge_the_digest_form_of_another() -> None:
    ks = Keyspace("p:")
    victim = ks.tagged("rl", "{user:42}")
    forged = hash_tag(victim)
    assert forged is not None and forged.startswith(b"#")
    # the attacker submits the victim's digest form as a plain subject
    assert ks.tagged("rl", forged.decode()) != victim
    assert ks.tagged("rl", forged.decode(), "n") != ks.tagged("rl", "{user:42}", "n")
    # plain subjects without braces or a leading "#" keep their readable keys
    assert ks.tagged("rl", "user:42") == "p:rl:{user:42}"
    assert ks.tagged("rl", "a#b") == "p:rl:{a#b}"


def test_prefix_with_tag_puts_everything_in_one_slot() -> None:
    ks = Keyspace("{tenant1}:")
    assert slot(ks.tagged("lock", "a")) == slot(ks.tagged("rl", "b")) == slot("tenant1")


@given(st.text(min_size=1, max_size=20))
def test_subject_keys_share_a_slot_whatever_the_subject(subject: str) -> None:
    ks = Keyspace("p:")
    keys = [ks.tagged("x", subject), ks.tagged("x", subject, "a"), ks.tagged("x", subject, "b", "c")]
    check_same_slot(keys)


def _glob_match(pattern: str, text: str) -> bool:
    """Redis glob semantics for the subset we emit: escapes, and a trailing *."""
    i = 0
    out: list[str] = []
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i + 1])
            i += 2
            continue
        if c == "*" and i == len(pattern) - 1:
            return text.startswith("".join(out))
        assert c not in "*?[]", f"unescaped {c!r} in {pattern!r}"
        out.append(c)
        i += 1
    return text == "".join(out)


@given(st.text(alphabet="ab*?[]\\{}:", max_size=12), st.text(alphabet="ab*?[]\\{}:", max_size=12))
def test_glob_escape_matches_only_itself(prefix: str, other: str) -> None:
    pattern = glob_escape(prefix) + "*"
    assert _glob_match(pattern, prefix + "tail")
    if not other.startswith(prefix):
        assert not _glob_match(pattern, other)


def test_match_pattern_of_keyspace() -> None:
    assert Keyspace("a*b:").match("x") == "a\\*b:x*"
    assert glob_escape("plain") == "plain"


def test_variadic_script_keys_are_slot_checked() -> None:
    from redispatterns._core.scripts import parse

    many = parse("v", b"-- name: v\n-- summary: s\n-- KEYS[*]: keys\n-- returns: r\nreturn 1\n")
    Script(many, keys=("{a}1", "{a}2", "{a}3"))
    with pytest.raises(CrossSlotError):
        Script(many, keys=("a", "b"))


def test_transaction_slot_check_uses_conventional_keys() -> None:
    Batch((Command("PING"), Command("INFO", "server"), Command("INCR", "{a}x")), transaction=True)
    Batch((Command("SET", "{a}1", 1), Script(load("core_time"))), transaction=True)
    with pytest.raises(CrossSlotError):
        Batch((Command("SET", "a", 1), Command("SET", "b", 1)), transaction=True)


def test_server_time_flow() -> None:
    from redispatterns._core.clock import server_time_us
    from redispatterns.testing import replay

    assert (
        replay(server_time_us(), [(Script(load("core_time")), 1_700_000_000_000_001)])
        == 1_700_000_000_000_001
    )
