"""Everything that depends on the installed redis-py release (8.0 to 8.2), in one place.

* Retry policies: asyncio clients need ``redis.asyncio.retry.Retry`` (redis-py 8.2 warns and
  converts a sync ``redis.retry.Retry``), sync clients ``redis.retry.Retry``.
* Constructors whose type hints changed between releases (``Sentinel`` and ``ClusterNode`` were
  untyped before 8.2): called through ``Any`` so one source type-checks against every release.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["CLUSTER_PIPELINE_ASKS_KEYS", "REDIS_PY_VERSION", "cluster_node", "no_retry", "sentinel"]

REDIS_PY_VERSION: tuple[int, ...] = tuple(int(p) for p in redis.__version__.split(".")[:2] if p.isdigit())

# redis-py 8.0's sync ClusterPipeline routes a command its policy table lacks (EVAL among them) by
# asking the server: COMMAND GETKEYS with the whole script, one round trip per queued script. The
# runner passes the target node itself there; 8.1 reads EVAL's keys locally again.
CLUSTER_PIPELINE_ASKS_KEYS: bool = REDIS_PY_VERSION < (8, 1)

_SENTINEL: dict[bool, Any] = {False: redis.sentinel.Sentinel, True: redis.asyncio.sentinel.Sentinel}
_CLUSTER_NODE: dict[bool, Any] = {False: redis.cluster.ClusterNode, True: redis.asyncio.cluster.ClusterNode}


def no_retry(*, asyncio_: bool) -> Retry | AsyncRetry:
    """A policy that never retries (the runners decide what is safe to repeat), of the right flavour."""
    return AsyncRetry(NoBackoff(), 0) if asyncio_ else Retry(NoBackoff(), 0)


def sentinel(
    hosts: list[tuple[str, int]], sentinel_kwargs: dict[str, Any], *, asyncio_: bool, **kw: Any
) -> Any:
    """A ``Sentinel`` (sync or asyncio) over ``hosts``; ``master_for`` gives the client."""
    return _SENTINEL[asyncio_](hosts, sentinel_kwargs=sentinel_kwargs, **kw)


def cluster_node(host: str, port: int, *, asyncio_: bool) -> Any:
    """A startup ``ClusterNode`` (sync or asyncio)."""
    return _CLUSTER_NODE[asyncio_](host, port)
