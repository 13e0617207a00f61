"""In-memory stand-ins for redis-py clients, to test the runners without a server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Responder = Callable[[tuple[Any, ...]], Any]


class StubClient:
    """Answers ``execute_command`` from ``respond(args)``; an exception reply is raised."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.calls: list[tuple[Any, ...]] = []
        self.registered: list[bytes] = []
        self.pipelines: list[StubPipeline] = []

    def _answer(self, args: tuple[Any, ...]) -> Any:
        self.calls.append(args)
        reply = self.respond(args)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def execute_command(self, *args: Any, **_: Any) -> Any:
        return self._answer(args)

    def script_load(self, source: bytes) -> str:
        self.registered.append(source)
        return str(self._answer(("SCRIPT", "LOAD", source)))

    def pipeline(self, transaction: bool = True) -> StubPipeline:
        p = StubPipeline(self, transaction)
        self.pipelines.append(p)
        return p

    def info(self, section: str = "") -> Any:
        return self._answer(("INFO", section))


class StubPipeline:
    def __init__(self, client: StubClient, transaction: bool) -> None:
        self.client = client
        self.transaction = transaction
        self.stack: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> StubPipeline:
        self.stack.append(args)
        return self

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        out = []
        for args in self.stack:
            try:
                out.append(self.client._answer(args))
            except Exception as exc:
                if raise_on_error:
                    raise
                out.append(exc)
        return out


class AsyncStubClient(StubClient):
    async def execute_command(self, *args: Any, **_: Any) -> Any:
        return self._answer(args)

    def pipeline(self, transaction: bool = True) -> AsyncStubPipeline:
        p = AsyncStubPipeline(self, transaction)
        self.pipelines.append(p)
        return p

    async def script_load(self, source: bytes) -> str:  # type: ignore[override]
        self.registered.append(source)
        return str(self._answer(("SCRIPT", "LOAD", source)))

    async def info(self, section: str = "") -> Any:
        return self._answer(("INFO", section))


class AsyncStubPipeline(StubPipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:  # type: ignore[override]
        return StubPipeline.execute(self, raise_on_error)
