"""Tour: a stream with a consumer group that survives crashes and poison messages."""

from __future__ import annotations

import logging
from collections.abc import Callable

ORDER = 60
TITLE = "Streams: consumer groups with reclaim, dead-letter and idempotent add"


def tour(url: str, say: Callable[[str], None]) -> None:
    from redispatterns.client import connect
    from redispatterns.streams import Consumer, Stream, StreamMessage

    client = connect(url)
    events = Stream("demo:events", client=client, maxlen=10_000)
    events.delete()
    first = events.add({"user": 7, "action": "signup"}, idempotency_key="signup-7")
    again = events.add({"user": 7, "action": "signup"}, idempotency_key="signup-7")
    say(f"add() with an idempotency key: the retry returned the first id ({first == again}), one entry")
    events.add_many([{"user": u, "action": "click"} for u in range(20)])
    say(f"keys share the stream's hash tag: {events.key} and {events.dead_letter_key}")

    crashed = Consumer(events, "mailer", "mailer-a", min_idle=0.3, block=0.1)
    taken = crashed.read(count=5)
    say(f"mailer-a takes {len(taken)} entries and 'crashes' without acking them")

    def send(msg: StreamMessage) -> None:
        if msg["user"] == 13:
            raise ValueError("no mailbox for user 13")

    failures: list[int] = []
    # failures also go to the "redispatterns.streams" logger; the tour reports them itself
    logging.getLogger("redispatterns.streams").addHandler(logging.NullHandler())
    survivor = Consumer(events, "mailer", "mailer-b", min_idle=0.3, reclaim_interval=0.1,
                        block=0.1, max_deliveries=3,
                        on_error=lambda exc, msg: failures.append(msg.delivery_count))  # fmt: skip
    stats = survivor.run(send, until_idle=0.8)
    say(f"on_error saw the handler fail on deliveries {failures} of user 13's entry")
    say(f"mailer-b reclaims mailer-a's entries on its timer, no new traffic needed ({stats.reclaimed} "
        f"reclaims with the retries), acked {stats.acked}, retried {stats.retried}, "
        f"dead-lettered {stats.dead_lettered}")  # fmt: skip
    (dead,) = events.dead_letters()
    say(f"the dead letter keeps id, deliveries and error: {dead.id}, {dead.deliveries}, {dead.error!r}")
    m = survivor.metrics()
    say(f"metrics: length {m.length}, lag {m.lag}, pending {m.pending}, dead letters {m.dead_letters}")
    events.delete()
