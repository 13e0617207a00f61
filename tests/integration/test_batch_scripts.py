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
