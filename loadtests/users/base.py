"""The Locust base user: each pattern call is reported as one request event."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from locust import User

__all__ = ["PatternUser"]

T = TypeVar("T")


class PatternUser(User):
    """Abstract: subclasses call ``self.timed("name", fn, *args)`` inside their ``@task`` methods.

    ``self.host`` is the Redis URL (``--host``). Sync redis-py runs cooperatively under gevent.
    """

    abstract = True
    pattern = "pattern"

    def timed(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        start = time.perf_counter()
        exc: BaseException | None = None
        result: T | None = None
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # reported as a failure, the user goes on
            exc = e
        self.environment.events.request.fire(
            request_type=self.pattern,
            name=name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=0,
            exception=exc,
            context={},
        )
        return result
