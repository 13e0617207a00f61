"""The session store on every backend and flavour, cluster included."""

from __future__ import annotations

import asyncio
import base64
import datetime
import itertools
import json
import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import redispatterns as rp_pkg
from redispatterns._core.scripts import load
from redispatterns.session import AsyncSessionStore, Session, SessionConflict, SessionStore
from redispatterns.testing.plugin import Harness

PREFIX = "t:"
GET_SCRIPT = load("session_get").source


def store(rp: Harness, **opts: Any) -> Any:
    opts.setdefault("mount", rp_pkg.Mount(prefix=PREFIX))
    return rp.pick(SessionStore, AsyncSessionStore)(rp.client, **opts)


def all_keys(rp: Harness) -> list[bytes]:
    c = rp.sync_client
    if rp.backend.is_cluster:
        return list(c.scan_iter(match="*", target_nodes="primaries"))
    return list(c.scan_iter(match="*"))


def sess_key(rp: Harness, s: Session) -> str:
    return f"{PREFIX}sess:{{{s.id}}}"


def pttl(rp: Harness, key: str) -> int:
    return int(rp.sync_client.pttl(key))


def test_create_get_update_destroy(rp: Harness) -> None:
    st = store(rp)
    tok = rp.call(st.create("u1", {"cart": [1, 2], "name": "Ann"}, ip="10.0.0.1", user_agent="curl/8"))
    assert isinstance(tok, str) and len(tok) == 43
    s = rp.call(st.get(tok))
    assert isinstance(s, Session)
    assert s.data == {"cart": [1, 2], "name": "Ann"} and s["name"] == "Ann"
    assert s.user_id == "u1" and s.token == tok and s.version == 1
    assert s.meta == {"ip": "10.0.0.1", "user_agent": "curl/8"}
    assert s.created <= s.last_seen < s.expires_at
    assert rp.call(st.update(tok, {"name": "Bo", "n": 3}, remove=["cart"])) == 2
    s = rp.call(st.get(tok))
    assert s.data == {"name": "Bo", "n": 3} and s.version == 2
    (info,) = rp.call(st.sessions("u1"))
    assert info.id == s.id and info.ip == "10.0.0.1" and info.user_agent == "curl/8"
    assert info.expires_at == s.expires_at
    assert rp.call(st.destroy(tok)) is True
    assert rp.call(st.get(tok)) is None
    assert rp.call(st.update(tok, {"x": 1})) is None  # an in-flight request can't bring it back
    assert rp.call(st.append_event(tok, "late")) == 0
    assert rp.call(st.destroy(tok)) is False
    assert rp.call(st.sessions("u1")) == []
    # only the revocation marker is left
    assert [k.decode() for k in all_keys(rp)] == [f"{PREFIX}sess:{{{s.id}}}:x"]


def test_bad_tokens_never_reach_redis(rp: Harness) -> None:
    st = store(rp)
    rp.call(st.create("u", {"a": 1}))
    for bad in ("", "x" * 100_000, "é" * 43, "a" * 42 + "\n", "{a}" * 14 + "b", "a" * 44):
        assert rp.call(st.get(bad)) is None
        assert rp.call(st.update(bad, {"a": 2})) is None
        assert rp.call(st.destroy(bad)) is False
        assert rp.call(st.rotate(bad)) is None
        assert rp.call(st.append_event(bad, 1)) == 0
        assert rp.call(st.events(bad)) == []
    unknown = "A" * 43
    assert rp.call(st.get(unknown)) is None
    for wrong in (None, 12, b"A" * 43, ["x"]):
        with pytest.raises(TypeError, match="token is a str"):
            rp.call(st.get(wrong))
        with pytest.raises(TypeError, match="token is a str"):
            rp.call(st.destroy(wrong))


def test_argument_errors(rp: Harness) -> None:
    st = store(rp)
    with pytest.raises(TypeError, match="user_id must be a str, int or UUID, not float"):
        rp.call(st.create(7.5))
    with pytest.raises(TypeError, match="not bool"):
        rp.call(st.sessions(True))
    with pytest.raises(ValueError, match="user_id cannot be empty"):
        rp.call(st.create(""))
    with pytest.raises(TypeError, match="mapping"):
        rp.call(st.create("u", [("a", 1)]))
    with pytest.raises(TypeError, match="cannot encode"):
        rp.call(st.create("u", {"a": object()}))
    with pytest.raises(TypeError, match="metadata must be JSON"):
        rp.call(st.create("u", ip=object()))
    with pytest.raises(ValueError, match="scope must be"):
        rp.call(st.state("session", "x"))
    with pytest.raises(ValueError, match="refresh_below"):
        store(rp, refresh_below=0)
    with pytest.raises(ValueError, match="secret"):
        store(rp, secret="short")
    assert all_keys(rp) == []


def test_int_and_uuid_user_ids_are_stored_as_their_str(rp: Harness) -> None:
    st = store(rp)
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    by_int = rp.call(st.create(1234, {"n": 1}))
    by_str = rp.call(st.create("1234", {"n": 2}))
    by_uuid = rp.call(st.create(uid))
    assert rp.call(st.get(by_int)).user_id == "1234"
    assert rp.call(st.get(by_uuid)).user_id == str(uid)
    listed = rp.call(st.sessions(1234))
    assert {i.user_id for i in listed} == {"1234"} and len(listed) == 2
    assert [i.id for i in rp.call(st.sessions(uid))] == [rp.call(st.get(by_uuid)).id]
    assert rp.call(st.revoke(1234, listed[0].id)) is True
    assert rp.call(st.patch_state("user", uid, {"theme": "dark"})) == 1
    assert rp.call(st.state("user", str(uid))) == {"theme": "dark"}
    assert rp.call(st.destroy_all(1234)) == 1
    assert rp.call(st.get(by_int)) is None and rp.call(st.get(by_str)) is None
    assert rp.call(st.destroy_all(uid)) == 1


def test_sliding_and_absolute_expiry_with_real_ttls(rp: Harness) -> None:
    st = store(rp)
    lazy = store(rp, refresh_below=0.5)
    capped = rp.call(st.create("u", {"k": "capped"}, ttl=5, lifetime=1.0))
    idle = rp.call(st.create("u", {"k": "idle"}, ttl=0.5))
    slides = rp.call(st.create("u", {"k": "slides"}, ttl=5))
    throttled = rp.call(st.create("u", {"k": "throttled"}, ttl=5))
    half = rp.call(st.create("u", {"k": "half"}, ttl=2))
    cap_s = rp.call(st.get(capped))
    assert pttl(rp, sess_key(rp, cap_s)) <= 1000  # the idle TTL is capped by the deadline
    time.sleep(0.3)
    s = rp.call(st.get(slides))
    assert pttl(rp, sess_key(rp, s)) > 4_900  # slid back to the full idle TTL
    t = rp.call(lazy.get(throttled))
    assert t is not None and pttl(rp, sess_key(rp, t)) < 4_800  # >50% left: no write
    s2 = rp.call(st.get(capped))
    assert s2 is not None and pttl(rp, sess_key(rp, s2)) <= 700  # sliding never passes the deadline
    time.sleep(0.8)
    assert rp.call(st.get(capped)) is None  # past its absolute lifetime though idle TTL is 5 s
    assert rp.call(st.get(idle)) is None  # idle for longer than its 0.5 s TTL
    assert rp.call(st.get(slides)) is not None
    h = rp.call(lazy.get(half))  # 1.1 of its 2 s gone: <50% left, so even the lazy store slides
    assert h is not None and pttl(rp, sess_key(rp, h)) > 1_900
    assert {i.id for i in rp.call(st.sessions("u"))} == {s.id, t.id, h.id}


def test_sixteen_concurrent_updaters_lose_nothing(rp: Harness) -> None:
    st = store(rp)
    tok = rp.call(st.create("u", {"base": True}))
    rounds = 15

    if rp.is_async:

        async def writer(i: int) -> None:
            for n in range(rounds):
                await st.update(tok, {f"f{i}": n})

        async def all_writers() -> None:
            await asyncio.gather(*(writer(i) for i in range(16)))

        rp.call(all_writers())
    else:

        def sync_writer(i: int) -> None:
            for n in range(rounds):
                st.update(tok, {f"f{i}": n})

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(sync_writer, range(16)))
    s = rp.call(st.get(tok))
    assert s.data == {"base": True, **{f"f{i}": rounds - 1 for i in range(16)}}
    assert s.version == 1 + 16 * rounds


def test_optimistic_version_check(rp: Harness) -> None:
    st = store(rp)
    tok = rp.call(st.create("u", {"n": 1}))
    s = rp.call(st.get(tok))
    assert rp.call(st.update(tok, {"n": 2}, expect_version=s.version)) == s.version + 1
    with pytest.raises(SessionConflict, match="changed since version"):
        rp.call(st.update(tok, {"n": 3}, expect_version=s.version))
    assert rp.call(st.get(tok)).data == {"n": 2}


def test_destroy_all_racing_concurrent_creates(rp: Harness) -> None:
    st = store(rp)
    before = [rp.call(st.create("victim", {"i": i})) for i in range(12)]
    other = rp.call(st.create("bystander"))
    created: list[str] = []
    killed: list[int] = []

    if rp.is_async:

        async def creator() -> None:
            for _ in range(6):
                created.append(await st.create("victim"))

        async def race() -> None:
            tasks = [asyncio.create_task(creator()) for _ in range(4)]
            await asyncio.sleep(0)
            killed.append(await st.destroy_all("victim"))
            await asyncio.gather(*tasks)

        rp.call(race())
    else:
        go = threading.Barrier(5)

        def sync_creator() -> None:
            go.wait()
            for _ in range(6):
                created.append(st.create("victim"))

        threads = [threading.Thread(target=sync_creator) for _ in range(4)]
        for th in threads:
            th.start()
        go.wait()
        killed.append(st.destroy_all("victim"))
        for th in threads:
            th.join()
    assert killed[0] >= len(before)
    for tok in before:
        assert rp.call(st.get(tok)) is None
    assert rp.call(st.get(other)) is not None
    live = {s.id for tok in created if (s := rp.call(st.get(tok))) is not None}
    # every surviving session is indexed, so a second logout-everywhere reaches it
    assert {i.id for i in rp.call(st.sessions("victim"))} == live
    assert rp.call(st.destroy_all("victim")) == len(live)
    assert all(rp.call(st.get(tok)) is None for tok in created)
    assert [i.user_id for i in rp.call(st.sessions("bystander"))] == ["bystander"]


def test_rotate(rp: Harness) -> None:
    st = store(rp)
    old = rp.call(st.create("u", {"cart": ["a"]}, ip="1.2.3.4"))
    rp.call(st.append_event(old, {"e": 1}))
    rp.call(st.append_event(old, {"e": 2}))
    before = rp.call(st.get(old))
    new = rp.call(st.rotate(old))
    assert new and new != old
    assert rp.call(st.get(old)) is None
    assert rp.call(st.update(old, {"x": 1})) is None
    assert rp.call(st.rotate(old)) is None
    s = rp.call(st.get(new))
    assert s.data == {"cart": ["a"]} and s.meta == {"ip": "1.2.3.4"}
    assert s.created == before.created and s.expires_at == before.expires_at  # lifetime not extended
    assert rp.call(st.events(new)) == [{"e": 1}, {"e": 2}]
    assert [i.id for i in rp.call(st.sessions("u"))] == [s.id]


def to_previous_layout(rp: Harness, key: str) -> None:
    """Rewrite a session hash as the previous release wrote it (a field per fact, in its order)."""
    c = rp.sync_client
    h = {k.decode(): v for k, v in c.hgetall(key).items()}
    deadline, idle, created = json.loads(h.pop("_"))
    user, meta = json.loads(h.pop("_a"))
    ttl = c.pttl(key)
    first = {"_s": h.pop("_s"), "_abs": deadline, "_i": idle, "_u": user, "_m": json.dumps(meta)}
    last = {"_c": created, "_v": h.pop("_v")}
    c.delete(key)
    c.hset(key, mapping={**first, **h, **last})
    c.pexpire(key, ttl)


def test_sessions_of_the_previous_layout_keep_working(rp: Harness) -> None:
    st = store(rp)
    tok = rp.call(st.create("u", {"cart": [1], "name": "Ann"}, ip="10.0.0.1"))
    rp.call(st.append_event(tok, {"e": 1}))
    want = rp.call(st.get(tok))
    key = sess_key(rp, want)
    to_previous_layout(rp, key)
    assert rp.sync_client.hexists(key, "_abs") and not rp.sync_client.hexists(key, "_")
    s = rp.call(st.get(tok))
    assert (s.user_id, s.data, s.meta, s.version) == ("u", want.data, want.meta, want.version)
    assert (s.created, s.expires_at, s.idle_ttl) == (want.created, want.expires_at, want.idle_ttl)
    assert s.last_seen >= want.last_seen and 0 < pttl(rp, key) <= 1800_000
    lazy = store(rp, refresh_below=0.5)  # the time left comes from the previous layout's fields too
    rp.sync_client.pexpire(key, 600_000)  # as if 20 of its 30 idle minutes had passed since
    rp.sync_client.hset(key, "_s", int(s.last_seen * 1000) - 1200_000)
    assert rp.call(lazy.get(tok)).data == want.data and pttl(rp, key) > 1700_000  # slid
    assert rp.call(lazy.get(tok)).data == want.data
    assert rp.call(st.update(tok, {"name": "Bo"}, expect_version=s.version)) == s.version + 1
    assert rp.call(st.update(tok, {"n": 2})) == s.version + 2
    assert rp.call(st.get(tok)).data == {"cart": [1], "name": "Bo", "n": 2}
    (info,) = rp.call(st.sessions("u"))
    assert (info.id, info.ip, info.created, info.expires_at) == (s.id, "10.0.0.1", s.created, s.expires_at)
    assert rp.call(st.append_event(tok, {"e": 2})) == 2
    assert rp.call(st.events(tok)) == [{"e": 1}, {"e": 2}]
    assert rp.call(st.append_track(tok, "t", "x")) == 1  # the deadline from '_abs'
    assert 0 < pttl(rp, key + ":tr") <= int(s.expires_at * 1000 - time.time() * 1000) + 50
    new = rp.call(st.rotate(tok))  # the rotated hash is written in the current layout
    moved = rp.call(st.get(new))
    assert moved.data == {"cart": [1], "name": "Bo", "n": 2} and moved.version == s.version + 2
    assert (moved.created, moved.expires_at, moved.meta) == (s.created, s.expires_at, s.meta)
    assert rp.sync_client.hexists(sess_key(rp, moved), "_")
    assert not rp.sync_client.hexists(sess_key(rp, moved), "_abs")
    to_previous_layout(rp, sess_key(rp, moved))
    assert rp.call(st.revoke("someone-else", moved.id)) is False
    assert rp.call(st.revoke("u", moved.id)) is True
    assert rp.call(st.get(new)) is None and rp.call(st.sessions("u")) == []


def test_get_reads_the_metadata_whatever_the_field_order(rp: Harness) -> None:
    """A big hash keeps no insertion order (the client finds the metadata by name then); small
    hashes keep the order they are written in, so many orders are tried here."""
    st = store(rp)
    tok = rp.call(st.create("u", {"a": 1, "b": [2]}, ip="10.0.0.1"))
    want = rp.call(st.get(tok))
    key = sess_key(rp, want)
    c = rp.sync_client
    pairs = list(c.hgetall(key).items())
    ttl = c.pttl(key)
    rng = random.Random(7)
    for order in itertools.permutations(range(len(pairs))):
        if rng.random() > 0.1:  # 72 of the 720 orders
            continue
        c.delete(key)
        for i in order:
            c.hset(key, *pairs[i])
        c.pexpire(key, ttl)
        reply = c.eval(GET_SCRIPT, 1, key, "1000")
        assert reply[::2] == [pairs[i][0] for i in order]  # as written: HGETALL's own table
        s = rp.call(st.get(tok))
        assert (s.data, s.user_id, s.version, s.meta) == (want.data, "u", want.version, want.meta)
        assert (s.created, s.expires_at, s.idle_ttl) == (want.created, want.expires_at, want.idle_ttl)
    big = {f"f{i}": "x" * (70 + i) for i in range(40)}  # past the listpack limits: a real hashtable
    tok = rp.call(st.create("u", big, user_agent="Mozilla/5.0 " * 12))
    key = f"{PREFIX}sess:{{{rp.call(st.get(tok)).id}}}"
    if not rp.backend.is_fake:  # (fakeredis has no OBJECT)
        assert c.object("encoding", key) == b"hashtable"
    for _ in range(3):
        s = rp.call(st.get(tok))
        assert s.data == big and s.user_id == "u" and s.version == 1
    assert rp.call(st.update(tok, {"f0": 0})) == 2
    assert rp.call(st.get(tok)).data == {**big, "f0": 0}


def test_any_user_id_round_trips_through_the_fixed_facts(rp: Harness) -> None:
    st = store(rp)
    user = 'Zoë "q" \\ \n:,[]{}\x00'
    tok = rp.call(st.create(user, {"a": 1}, note='{"x": "ü"}'))
    s = rp.call(st.get(tok))
    assert s.user_id == user and s.meta == {"note": '{"x": "ü"}'}
    assert [i.id for i in rp.call(st.sessions(user))] == [s.id]
    new = rp.call(st.rotate(tok))
    assert rp.call(st.get(new)).user_id == user
    sid = rp.call(st.get(new)).id
    assert rp.call(st.revoke(user + "x", sid)) is False
    assert rp.call(st.revoke(user, sid)) is True
    assert rp.call(st.sessions(user)) == []


def test_a_foreign_write_to_the_user_field_never_blocks_a_logout(rp: Harness) -> None:
    st = store(rp)
    tok = rp.call(st.create("u", {"a": 1}))
    key = sess_key(rp, rp.call(st.get(tok)))
    rp.sync_client.hset(key, "_a", b"not json")
    sid = key.split("{")[1][:-1]
    assert rp.call(st.revoke("u", sid)) is False  # the owner can't be checked: refused
    assert rp.sync_client.exists(key)
    rp.call(st.destroy(tok))  # the token's holder logs out all the same
    assert not rp.sync_client.exists(key) and rp.call(st.get(tok)) is None


def test_no_token_in_plaintext_anywhere(rp: Harness) -> None:
    st = store(rp)
    tokens = [rp.call(st.create(f"user{i}", {"n": i}, ip="9.9.9.9")) for i in range(5)]
    for tok in tokens:
        rp.call(st.append_event(tok, {"tok": "event"}))
        rp.call(st.update(tok, {"m": 1}))
    tokens.append(rp.call(st.rotate(tokens[0])))
    rp.call(st.destroy(tokens[1]))
    rp.call(st.patch_state("user", "user2", {"theme": "dark"}))
    c = rp.sync_client
    blobs: list[bytes] = []
    for k in all_keys(rp):
        blobs.append(k)
        kind = c.type(k)
        if kind == b"hash":
            blobs += [x for kv in c.hgetall(k).items() for x in kv]
        elif kind == b"list":
            blobs += c.lrange(k, 0, -1)
        elif kind == b"zset":
            blobs += c.zrange(k, 0, -1)
        elif kind == b"string":
            blobs.append(c.get(k))
    assert len(blobs) > 20
    for tok in tokens:
        raw = base64.urlsafe_b64decode(tok + "=")
        for b in blobs:
            assert tok.encode() not in b and raw not in b


def test_event_log_is_capped_on_write(rp: Harness) -> None:
    st = store(rp, event_limit=5)
    tok = rp.call(st.create("u"))
    counts = [rp.call(st.append_event(tok, {"n": i})) for i in range(12)]
    assert counts == [1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5]
    assert rp.call(st.events(tok)) == [{"n": i} for i in range(7, 12)]
    assert rp.call(st.events(tok, 2)) == [{"n": 10}, {"n": 11}]
    s = rp.call(st.get(tok))
    ev_key = sess_key(rp, s) + ":ev"
    assert rp.sync_client.llen(ev_key) == 5
    left_ms = (s.expires_at - rp.call(st.get(tok)).last_seen) * 1000
    assert pttl(rp, sess_key(rp, s)) < pttl(rp, ev_key) <= left_ms + 50  # the log ends at the deadline
    with pytest.raises(ValueError, match="limit must be positive"):
        rp.call(st.events(tok, 0))
    rp.sync_client.delete(sess_key(rp, s))  # the session expires from idleness
    assert rp.call(st.events(tok)) == []  # its log is not readable any more


def test_revoke_one_session_of_a_user(rp: Harness) -> None:
    st = store(rp)
    a = rp.call(st.create("u", device="phone"))
    b = rp.call(st.create("u", device="laptop"))
    infos = {i.meta["device"]: i for i in rp.call(st.sessions("u"))}
    assert set(infos) == {"phone", "laptop"}
    assert rp.call(st.revoke("someone-else", infos["phone"].id)) is False
    assert rp.call(st.get(a)) is not None
    assert rp.call(st.revoke("u", infos["phone"].id)) is True
    assert rp.call(st.get(a)) is None and rp.call(st.get(b)) is not None
    assert [i.meta["device"] for i in rp.call(st.sessions("u"))] == ["laptop"]


def test_index_prunes_dead_sessions(rp: Harness) -> None:
    st = store(rp)
    a = rp.call(st.create("u", ttl=5))
    rp.call(st.create("u", ttl=5))
    gone = rp.call(st.get(a))
    rp.sync_client.delete(sess_key(rp, gone))  # e.g. evicted or expired by idleness
    assert len(rp.call(st.sessions("u"))) == 1
    index = f"{PREFIX}sess-user:{{u}}"
    assert rp.sync_client.zcard(index) == 1
    assert pttl(rp, index) > 0  # the index expires with its last session's deadline


def test_state_scopes(rp: Harness) -> None:
    st = store(rp, user_state_ttl=30)
    assert rp.call(st.patch_state("user", "u1", {"theme": "dark", "lang": "en"})) == 2
    assert rp.call(st.patch_state("user", "u1", {"lang": "fr"}, remove=["theme"])) == 1
    assert rp.call(st.patch_state("app", "shop", {"banner": {"on": True}})) == 1
    assert rp.call(st.state("user", "u1")) == {"lang": "fr"}
    assert rp.call(st.state("app", "shop")) == {"banner": {"on": True}}
    assert rp.call(st.state("user", "nobody")) == {}
    assert 0 < pttl(rp, f"{PREFIX}sess-user:{{u1}}:state") <= 30_000
    assert pttl(rp, f"{PREFIX}sess-app:{{shop}}:state") == -1
    with pytest.raises(ValueError, match="needs changes"):
        rp.call(st.patch_state("app", "shop"))


def test_hooks_filter_enrich_and_observe(rp: Harness) -> None:
    seen: list[Any] = []

    def on_get(s: Session) -> Session | None:
        if s.data.get("banned"):
            return None
        s.data["enriched"] = True
        return s

    async def aon_get(s: Session) -> Session | None:
        await asyncio.sleep(0)
        return on_get(s)

    def on_append(sid: str, event: Any) -> Any:
        seen.append((sid, event))
        return None if event.get("secret") else {**event, "checked": True}

    st = store(rp, on_get=rp.pick(on_get, aon_get), on_append=on_append)
    ok = rp.call(st.create("u", {"n": 1}))
    bad = rp.call(st.create("u", {"banned": True}))
    assert rp.call(st.get(ok)).data == {"n": 1, "enriched": True}
    assert rp.call(st.get(bad)) is None
    assert rp.call(st.append_event(ok, {"a": 1})) == 1
    assert rp.call(st.append_event(ok, {"secret": 1})) == 0
    assert rp.call(st.events(ok)) == [{"a": 1, "checked": True}]
    assert len(seen) == 2 and seen[0][0] != ok  # hooks see the session id, never the token


def test_mount_prefix_and_read_only(rp: Harness) -> None:
    st = store(rp, mount=rp_pkg.Mount(prefix="app:s:"))
    tok = rp.call(st.create("u", {"a": 1}))
    rp.call(st.append_event(tok, 1))
    assert all_keys(rp) and all(k.startswith(b"app:s:") for k in all_keys(rp))
    ro = store(rp, mount=rp_pkg.Mount(prefix="app:s:", mode="read"))
    assert rp.call(ro.get(tok)).data == {"a": 1}
    with pytest.raises(PermissionError):
        rp.call(ro.create("u"))
    with pytest.raises(PermissionError):
        rp.call(ro.destroy(tok))


def test_write_behind_keeps_each_sessions_order(rp: Harness) -> None:
    st = store(rp, write_behind=3, queue_size=4, event_limit=50)
    toks = [rp.call(st.create("u")) for _ in range(4)]

    async def run_async_writes() -> None:
        for n in range(20):
            for tok in toks:
                assert await st.append_event(tok, n) is None
        await st.patch_state("user", "u", {"seen": 20})
        await st.close()

    if rp.is_async:
        rp.call(run_async_writes())
    else:
        for n in range(20):
            for tok in toks:
                assert st.append_event(tok, n) is None
        st.patch_state("user", "u", {"seen": 20})
        st.close()
    for tok in toks:
        assert rp.call(st.events(tok)) == list(range(20))
    assert rp.call(st.state("user", "u")) == {"seen": 20}
    with pytest.raises(TypeError, match="token is a str"):
        rp.call(st.append_event(5, "x"))  # argument errors still raise in the caller


def test_rotations_racing_logout_everywhere_leave_no_orphans(rp: Harness) -> None:
    st = store(rp)
    toks = [rp.call(st.create("victim", {"i": i})) for i in range(8)]
    results: list[str | None] = []

    if rp.is_async:

        async def rotator(tok: str) -> None:
            for _ in range(4):
                new = await st.rotate(tok)
                results.append(new)
                if new is None:
                    return
                tok = new

        async def race() -> None:
            tasks = [asyncio.create_task(rotator(t)) for t in toks]
            await asyncio.sleep(0)
            await st.destroy_all("victim")
            await asyncio.gather(*tasks)

        rp.call(race())
    else:
        go = threading.Barrier(len(toks) + 1)

        def sync_rotator(tok: str) -> None:
            go.wait()
            for _ in range(4):
                new = st.rotate(tok)
                results.append(new)
                if new is None:
                    return
                tok = new

        threads = [threading.Thread(target=sync_rotator, args=(t,)) for t in toks]
        for th in threads:
            th.start()
        go.wait()
        st.destroy_all("victim")
        for th in threads:
            th.join()
    assert all(rp.call(st.get(t)) is None for t in toks)
    live = {s.id for t in results if t and (s := rp.call(st.get(t))) is not None}
    assert {i.id for i in rp.call(st.sessions("victim"))} == live  # every survivor is revocable
    rp.call(st.destroy_all("victim"))
    assert all(rp.call(st.get(t)) is None for t in results if t)


def test_works_over_a_client_that_decodes_responses(rp: Harness) -> None:
    if rp.is_async:
        client = rp.call_in_loop(lambda: rp.backend.async_client(decode_responses=True))
    else:
        client = rp.backend.sync_client(decode_responses=True)
    st: Any = rp.pick(SessionStore, AsyncSessionStore)(client, mount=rp_pkg.Mount(prefix=PREFIX))
    tok = rp.call(st.create("u", {"a": [1, "é"]}, ip="::1"))
    rp.call(st.append_event(tok, {"e": 1}))
    s = rp.call(st.get(tok))
    assert s.data == {"a": [1, "é"]} and s.meta == {"ip": "::1"} and s.user_id == "u"
    assert rp.call(st.update(tok, {"b": 2})) == 2
    new = rp.call(st.rotate(tok))
    assert rp.call(st.get(new)).data == {"a": [1, "é"], "b": 2}
    assert rp.call(st.events(new)) == [{"e": 1}]
    assert [i.ip for i in rp.call(st.sessions("u"))] == ["::1"]
    rp.call(st.patch_state("user", "u", {"x": 1}))
    assert rp.call(st.state("user", "u")) == {"x": 1}
    assert rp.call(st.destroy_all("u")) == 1


def test_write_behind_failure_is_logged_and_dropped(rp: Harness, caplog: pytest.LogCaptureFixture) -> None:
    def on_append(sid: str, event: Any) -> Any:
        if event == "bad":
            raise RuntimeError("hook failed")
        return event

    st = store(rp, write_behind=2, on_append=on_append)
    tok = rp.call(st.create("u"))

    async def writes() -> None:
        async with st:
            for e in ("a", "bad", "b"):
                await st.append_event(tok, e)

    if rp.is_async:
        rp.call(writes())
    else:
        with st:
            for e in ("a", "bad", "b"):
                st.append_event(tok, e)
    assert rp.call(st.events(tok)) == ["a", "b"]
    assert "write-behind session write failed" in caplog.text and "hook failed" in caplog.text


# --------------------------------------------------------------------------- event log queries


def test_events_by_time_range_and_count(rp: Harness) -> None:
    st = store(rp)
    token = rp.call(st.create("u"))
    for i in range(3):
        rp.call(st.append_event(token, {"i": i}))
    server_now = rp.sync_client.time()
    middle = server_now[0] + server_now[1] / 1e6
    time.sleep(0.02)
    for i in range(3, 6):
        rp.call(st.append_event(token, {"i": i}))
    every = [{"i": i} for i in range(6)]
    assert rp.call(st.events(token)) == every
    assert rp.call(st.events(token, 2)) == every[-2:]
    assert rp.call(st.events(token, since=middle)) == every[3:]
    assert rp.call(st.events(token, until=middle)) == every[:3]
    assert rp.call(st.events(token, 2, until=middle)) == every[1:3]
    aware = datetime.datetime.fromtimestamp(middle, tz=datetime.timezone.utc)
    assert rp.call(st.events(token, since=aware, until=aware.timestamp() + 3600)) == every[3:]
    assert rp.call(st.events(token, since=middle + 3600)) == []
    with pytest.raises(ValueError, match="until must not be before since"):
        rp.call(st.events(token, since=middle, until=middle - 1))
    with pytest.raises(ValueError, match="aware datetime"):
        rp.call(st.events(token, since=datetime.datetime(2020, 1, 1)))
    rotated = rp.call(st.rotate(token))  # the times travel with the events
    assert rp.call(st.events(rotated, since=middle)) == every[3:]


# --------------------------------------------------------------------------- outages (D2)


@pytest.mark.usefixtures("no_gc_pauses")
@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("on_error", ["raise", "closed"])
def test_a_hung_server_costs_reads_one_timeout_then_the_breaker_skips_it(
    server_pool: Any, flavour: str, on_error: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP: each read waits one socket timeout until five of them open the breaker; then
    reads skip Redis (no round trip): they raise ServerUnavailable, or find nothing under
    on_error="closed". After SIGCONT a probe gets through and reads work again."""

    import redis.exceptions

    from loadtests.harness import count_round_trips
    from redispatterns.testing.servers import StandaloneServer

    kind = next(iter(server_pool.kinds.values()))
    server = StandaloneServer(kind)
    caplog.set_level(logging.INFO, logger="redispatterns")
    try:
        breaker = rp_pkg.CircuitBreaker(threshold=5, reset_after=0.5, name="session reads")

        async def scenario_async() -> None:
            c = rp_pkg.connect_async(server.url, socket_timeout=0.2)
            await scenario(AsyncSessionStore(c, on_error=on_error, breaker=breaker), True)

        async def scenario(st: Any, is_async: bool) -> None:
            async def call(aw: Any) -> Any:
                return await aw if is_async else aw

            token = await call(st.create("u", {"k": 1}))
            events_token = token
            server.node.pause()
            try:
                for _ in range(5):
                    t0 = time.monotonic()
                    if on_error == "raise":
                        with pytest.raises((redis.exceptions.TimeoutError, rp_pkg.ServerUnavailable)):
                            await call(st.get(token))
                    else:
                        assert await call(st.get(token)) is None
                    assert time.monotonic() - t0 < 2.0  # one timeout (0.2 s), never several
                assert breaker.state == "open"
                with count_round_trips() as sent:
                    for _ in range(20):
                        if on_error == "raise":
                            with pytest.raises(rp_pkg.ServerUnavailable, match="circuit breaker is open"):
                                await call(st.get(token))
                        else:
                            assert await call(st.get(token)) is None
                            assert await call(st.events(events_token)) == []
                            assert await call(st.sessions("u")) == []
                assert sent.n == 0
            finally:
                server.node.resume()
            await asyncio.sleep(0.6)  # past reset_after: the next read is the probe
            assert (await call(st.get(token))).data == {"k": 1}
            assert breaker.state == "closed"

        if flavour == "sync":
            c = rp_pkg.connect(server.url, socket_timeout=0.2)
            st = SessionStore(c, on_error=on_error, breaker=breaker)
            asyncio.run(scenario(st, False))
        else:
            asyncio.run(scenario_async())
        opened = [r for r in caplog.records if "session reads opened" in r.getMessage()]
        closed = [r for r in caplog.records if "session reads closed" in r.getMessage()]
        assert len(opened) == 1 and len(closed) == 1  # logged once each
    finally:
        server.stop()


def test_the_default_read_breaker_logs_on_the_session_logger(caplog: pytest.LogCaptureFixture) -> None:
    from redispatterns.testing.servers import free_port

    caplog.set_level(logging.INFO, logger="redispatterns")
    nowhere = rp_pkg.connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    st = SessionStore(nowhere, on_error="closed")
    token = "A" * 43
    assert [st.get(token) for _ in range(8)] == [None] * 8
    assert st.breaker.state == "open"
    opened = [r for r in caplog.records if "opened after" in r.getMessage()]
    assert [(r.name, r.levelname) for r in opened] == [("redispatterns.session", "WARNING")]
    assert "session reads" in opened[0].getMessage()
