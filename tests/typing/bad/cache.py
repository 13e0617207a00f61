"""Wrong user code around ``@cached``: each marked line must be a mypy error."""

from __future__ import annotations

import redispatterns as rp


@rp.cached(ttl=60)
def get_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@rp.cached(ttl=60)
async def total(order_id: str) -> float:
    return 9.5


def plain(x: int) -> int:
    return x


get_user("42")  # E: Argument 1 to "__call__" of "Cached" has incompatible type "str"; expected "int"
get_user.invalidate(user="42")  # E: Unexpected keyword argument "user" for "invalidate" of "Cached"
get_user.set("not a dict", 42)  # E: Argument 1 to "set" of "Cached" has incompatible type "str"
n: str = get_user.invalidate(42)  # E: Incompatible types in assignment
v: float = total("A-1")  # E: Incompatible types in assignment


async def misuse() -> None:
    await get_user(1)  # E: Incompatible types in "await" (actual type "dict[str, int]"
    await total.peek(7)  # E: Argument 1 to "peek" of "AsyncCached" has incompatible type "int"


rp.write_through(plain)  # E: Argument 1 to "write_through" has incompatible type
rp.invalidate_tags("t", asynchronous=True)  # E: Unexpected keyword argument "asynchronous"
