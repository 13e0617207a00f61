"""The sans-I/O core of redispatterns.

Rule 1: nothing in ``_core`` does I/O. No sockets, no redis client, no ``asyncio``, no
``time.sleep``, no clock reads. A test walks these modules and fails on such an import.

Rule 2: every operation of a pattern is a *flow*: a generator that yields operation values
(:mod:`redispatterns._core.ops`) and receives their replies. The two runners in
``redispatterns._runner`` execute them, one for sync clients and one for asyncio clients, so
each pattern's logic exists once.

Rule 3: user code is never called from here. A flow that needs the user's function yields
:class:`~redispatterns._core.ops.Compute` and the runner calls (or awaits) it.

Rule 4: every key a multi-key command, script or transaction touches is declared, and all of
them share one hash slot; the op constructors check that before any I/O.
"""
