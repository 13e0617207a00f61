"""Tour: key-value stores with identity, metadata kept by each write, content types."""

from __future__ import annotations

from collections.abc import Callable

ORDER = 85
TITLE = "Key-value stores: open by name once, metadata in the write's script"


def tour(url: str, say: Callable[[str], None]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import redispatterns as rp

    client, mount = rp.connect(url), rp.Mount(prefix="demo:")
    with ThreadPoolExecutor(8) as pool:
        opened = list(
            pool.map(lambda _: rp.KeyValueStore.open(name="results", client=client, mount=mount), range(8))
        )
    store = opened[0]
    store.purge()
    made = sum(s.created for s in opened)
    say(f"8 threads open name='results' at once: one id ({store.id}), created by {made} of them")
    store.set_value("page", {"title": "Home"})
    store.set_value("note", "plain text")
    store.set_value("logo", b"\x89PNG", content_type="image/png")
    for meta in store.iterate_keys():
        say(f"  {meta.key:5} {meta.content_type:32} {meta.size} B")
    m = store.get_metadata()
    say(f"  metadata kept by each write's script: {m.item_count} records, {m.size} B")
    say(f"  get_value('page') -> {store.get_value('page')!r} (one HGET)")
    store.drop()
    try:
        store.set_value("late", 1)
    except rp.StoreNotFound:
        say("  after drop(), a write raises StoreNotFound and changes nothing")
