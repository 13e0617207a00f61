"""Scripts inside batches: one round trip, plain pipelines and transactions, on every backend."""

from __future__ import annotations

from typing import Any

from redispatterns._core.ops import Batch, Command, Flow, Script
from redispatterns._core.scripts import load
from redispatterns.testing.plugin import Backend, Harness


def _flow(transaction: bool) -> Flow[Any]:
    metrics = Script(load("stream_metrics"), ("{s}:stream", "{s}:dlq"), ("g",))
    return (
        yield Batch(
            (Command("XADD", "{s}:stream", "*", "f", "v"), metrics, Command("XLEN", "{s}:stream")),
            transaction=transaction,
        )
    )


def test_script_in_plain_pipeline_and_transaction(rp: Harness, backend: Backend) -> None:
    for tx in (False, True):
        added, metrics, length = rp.run(_flow(tx))
        assert isinstance(added, bytes)
        assert metrics[0] == length  # the script saw the XADD of the same batch
        assert metrics[1] == 0  # no such group yet
    assert backend.sync_client().xlen("{s}:stream") == 2


def test_script_in_batch_after_script_flush(rp: Harness, backend: Backend) -> None:
    rp.run(_flow(False))
    backend.sync_client().script_flush()
    _, metrics, length = rp.run(_flow(True))
    assert metrics[0] == length == 2


def test_a_known_script_goes_by_sha_in_a_plain_batch_and_survives_a_flush(
    rp: Harness, backend: Backend
) -> None:
    """The runner sends a script it already sent to a plain client as EVALSHA inside a plain
    pipeline; after a SCRIPT FLUSH that one NOSCRIPT is re-sent alone and the batch still answers."""
    rp.run(_flow(False))  # EVAL: the server caches the script
    _, metrics, length = rp.run(_flow(False))  # EVALSHA on a plain client
    assert metrics[0] == length == 2
    backend.sync_client().script_flush()
    _, metrics, length = rp.run(_flow(False))
    assert metrics[0] == length == 3


def _swap(key: str, value: str, options: dict[str, Any] | None) -> Flow[Any]:
    return (yield Command("SET", key, value, "GET", keys=(key,), retryable=False, options=options))


def test_command_options_reach_the_reply_parser(rp: Harness, backend: Backend) -> None:
    """``options`` go to redis-py's reply parsing: ``get=True`` keeps ``SET ... GET``'s old value,
    which redis-py otherwise turns into a boolean, alone and inside a batch (both flavours)."""
    assert rp.run(_swap("{o}:k", "v1", {"get": True})) is None  # no old value
    assert rp.run(_swap("{o}:k", "v2", {"get": True})) == b"v1"
    assert rp.run(_swap("{o}:k", "v3", None)) is False  # redis-py's boolean: what options avoid

    def batch() -> Flow[Any]:
        return (
            yield Batch(
                (
                    Command("SET", "{o}:k", "v4", "GET", keys=("{o}:k",), options={"get": True}),
                    Command("SET", "{o}:k", "v5", "GET", keys=("{o}:k",)),
                )
            )
        )

    assert rp.run(batch()) == [b"v3", False]
    assert backend.sync_client().get("{o}:k") == b"v5"
