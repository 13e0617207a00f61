"""Prefix isolation under hostile keys (hypothesis) and ``rediss://`` against a local TLS server."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redispatterns import Mount
from redispatterns.kv import KV, AsyncKV
from redispatterns.testing.plugin import Harness, ServerPool
from redispatterns.testing.servers import ServerStartError, StandaloneServer, free_port

HOSTILE = st.text(alphabet="*?[]\\{}\n\r\x00:ab é", min_size=1, max_size=12)
OPS = st.lists(
    st.tuples(st.sampled_from(["set", "delete", "merge"]), HOSTILE, st.integers(0, 9)),
    min_size=1,
    max_size=12,
)
# "app:a*" and "app:a\\" would match "app:a:" keys if the prefix were used as a glob unescaped
MOUNTS = {"a": Mount(prefix="app:a:"), "star": Mount(prefix="app:a*"), "slash": Mount(prefix="app:a\\")}
BASES = (b"app:a:{kv}:", b"app:a*{kv}:", b"app:a\\{kv}:")


def _raw_keys(rp: Harness) -> set[bytes]:
    c = rp.sync_client
    return set(c.keys(target_nodes="primaries") if rp.backend.is_cluster else c.keys())


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
def test_hostile_keys_never_touch_another_mount(rp: Harness, ops: list[tuple[str, str, int]]) -> None:
    kv: Any = rp.pick(KV, AsyncKV)(rp.client, MOUNTS, write_policy="immediate")
    rp.call(kv.clear("a"))
    rp.call(kv.set("star", "sentinel*", [1]))
    rp.call(kv.set("slash", "\\", {"s": 2}))
    model: dict[str, Any] = {}
    for op, key, n in ops:
        if op == "set":
            rp.call(kv.set("a", key, n))
            model[key] = n
        elif op == "delete":
            assert rp.call(kv.delete("a", key)) is (key in model)
            model.pop(key, None)
        else:
            base = model.get(key, {})
            if not isinstance(base, dict):
                continue
            rp.call(kv.merge("a", key, {"n": n}))
            model[key] = {**base, "n": n}
    assert rp.call(kv.keys("a")) == sorted(model)
    assert rp.call(kv.get_all("a")) == model
    for key, value in model.items():
        assert rp.call(kv.get("a", key)) == value
        assert rp.call(kv.has("star", key)) is (key == "sentinel*")
    assert rp.call(kv.get_all("star")) == {"sentinel*": [1]}
    assert rp.call(kv.get_all("slash")) == {"\\": {"s": 2}}
    assert all(k.startswith(BASES) for k in _raw_keys(rp))
    rp.call(kv.clear("a"))
    assert rp.call(kv.keys("star")) == ["sentinel*"] and rp.call(kv.keys("slash")) == ["\\"]


# --------------------------------------------------------------------------- TLS


def _cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_rediss_url_with_a_self_signed_certificate(
    server_pool: ServerPool, tmp_path: Path, flavour: str
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make a self-signed certificate")
    cert, key = _cert(tmp_path)
    ran = []
    for kind in server_pool.kinds.values():
        port = free_port()
        args = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]  # fmt: skip
        try:
            server = StandaloneServer(kind, args=args)
        except ServerStartError:
            continue  # this binary was built without TLS
        with server:
            url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
            mounts = {"user": Mount(prefix="app:user:", ttl=60)}
            if flavour == "sync":
                kv = KV(url, mounts, write_policy="immediate")
                assert kv.set("user", "k", {"tls": True}) is True
                assert kv.get("user", "k") == {"tls": True}
                assert kv.keys("user") == ["k"]
                untrusted = KV(f"rediss://127.0.0.1:{port}/0", mounts, write_policy="immediate")
                with pytest.raises(Exception, match=r"(?i)certificate|ssl"):
                    untrusted.get("user", "k")
            else:
                asyncio.run(_async_body(url, mounts))
            ran.append(kind.name)
    if not ran:
        pytest.skip("no server binary here supports TLS (--tls-port)")
    print("TLS checked on", ", ".join(ran))


async def _async_body(url: str, mounts: dict[str, Mount]) -> None:
    akv = AsyncKV(url, mounts, write_policy="immediate")
    assert await akv.set("user", "k", {"tls": True}) is True
    assert await akv.get("user", "k") == {"tls": True}
    assert await akv.keys("user") == ["k"]
    await akv.client.aclose()
