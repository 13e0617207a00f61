"""The Django cache backend and session engine, with Django's own test client, on real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("django")

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        SECRET_KEY="test-" + "x" * 50,
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        INSTALLED_APPS=[],
        SESSION_ENGINE="redispatterns.http.django.sessions",
        SESSION_COOKIE_AGE=600,
        USE_TZ=True,
    )
    django.setup()

from django.http import HttpRequest, JsonResponse
from django.test import Client, override_settings
from django.urls import path
from django.utils.module_loading import import_string

import redispatterns as rp
from redispatterns.http.django import sessions as engine
from redispatterns.http.django.cache import RedisPatternsCache
from redispatterns.testing.plugin import Backend

# --------------------------------------------------------------------------- cache


def make_cache(backend: Backend, **options: Any) -> RedisPatternsCache:
    cls = import_string("redispatterns.http.django.cache.RedisPatternsCache")  # the CACHES path
    params = {"TIMEOUT": 60, "KEY_PREFIX": "site", "OPTIONS": {"client": backend.sync_client(), **options}}
    cache: RedisPatternsCache = cls("", params)
    return cache


def test_cache_backend_api(backend: Backend) -> None:
    cache = make_cache(backend)
    assert cache.get("missing") is None and cache.get("missing", "dflt") == "dflt"
    cache.set("a", {"n": 1, "tags": ["x"]})
    assert cache.get("a") == {"n": 1, "tags": ["x"]} and cache.has_key("a")
    assert cache.add("a", 2) is False and cache.add("b", 2) is True and cache.get("b") == 2
    assert cache.incr("b", 5) == 7 and cache.decr("b") == 6
    cache.set_many({"c": "C", "d": None})
    assert cache.get_many(["a", "c", "d", "zz"]) == {"a": {"n": 1, "tags": ["x"]}, "c": "C", "d": None}
    assert cache.get("a", version=2) is None  # versions are part of the key
    assert cache.delete("a") is True and cache.delete("a") is False and cache.get("a") is None
    cache.set("short", 1, timeout=1)
    cache.set("gone", 1, timeout=0)  # Django: 0 expires at once
    assert cache.get("gone") is None
    assert cache.touch("short", timeout=60) is True and cache.touch("nope") is False
    cache.set("forever", "f", timeout=None)
    ttl = backend.sync_client().pttl(cache._entry.key(cache.make_key("forever"), None))
    assert ttl > 300 * 24 * 3600 * 1000
    cache.clear()
    assert cache.get_many(["b", "c", "short", "forever"]) == {}
    with pytest.raises(ValueError, match="unknown OPTIONS"):
        make_cache(backend, nonsense=1)


def test_cache_pickle_option_and_json_default(backend: Backend) -> None:
    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    json_cache = make_cache(backend)
    with pytest.raises(TypeError, match="pickle_secret"):
        json_cache.set("p", Point(1))
    pickled = make_cache(backend, pickle_secret="s" * 32, prefix="djp:")
    pickled.set("n", {1, 2})
    assert pickled.get("n") == {1, 2}


def test_get_or_set_computes_once_under_concurrent_misses(backend: Backend) -> None:
    cache = make_cache(backend)
    calls: list[int] = []
    start = threading.Barrier(8)
    results: list[Any] = []

    def slow() -> str:
        calls.append(1)
        time.sleep(0.3)
        return "value"

    def worker() -> None:
        start.wait()
        results.append(cache.get_or_set("hot", slow, timeout=30))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["value"] * 8 and len(calls) == 1
    assert cache.get_or_set("hot", slow) == "value" and len(calls) == 1
    assert cache.get_or_set("plain", 5) == 5 and cache.get("plain") == 5


# --------------------------------------------------------------------------- sessions


def add_to_cart(request: HttpRequest) -> JsonResponse:
    request.session["cart"] = [*request.session.get("cart", []), request.GET["sku"]]
    return JsonResponse({"cart": request.session["cart"]})


def login(request: HttpRequest) -> JsonResponse:
    request.session.cycle_key()  # what django.contrib.auth.login does (without a database)
    request.session["_auth_user_id"] = request.GET["user"]
    return JsonResponse({})


def show(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"cart": request.session.get("cart", []), "user": request.session.get("_auth_user_id")}
    )


def logout(request: HttpRequest) -> JsonResponse:
    request.session.flush()
    return JsonResponse({})


def drop(request: HttpRequest) -> JsonResponse:
    request.session.pop("cart", None)
    return JsonResponse({})


urlpatterns = [
    path("cart/add", add_to_cart),
    path("login", login),
    path("show", show),
    path("logout", logout),
    path("drop", drop),
]


@pytest.fixture
def store(backend: Backend) -> Iterator[rp.SessionStore]:
    conf = {"client": backend.sync_client(), "prefix": "djs:"}
    with override_settings(REDISPATTERNS_SESSIONS=conf):
        engine.store.cache_clear()
        yield engine.store()
    engine.store.cache_clear()


def test_session_engine_anonymous_then_login(store: rp.SessionStore) -> None:
    c = Client()
    assert c.get("/show").json() == {"cart": [], "user": None} and "sessionid" not in c.cookies
    assert c.get("/cart/add", {"sku": "tea"}).json() == {"cart": ["tea"]}
    anon = c.cookies["sessionid"].value
    anon_session = store.get(anon)
    assert anon_session is not None and anon_session.user_id.startswith(rp.http.ANONYMOUS_PREFIX)
    assert c.get("/cart/add", {"sku": "jam"}).json() == {"cart": ["tea", "jam"]}
    c.get("/login", {"user": "42"})
    auth = c.cookies["sessionid"].value
    assert auth != anon and store.get(anon) is None
    assert c.get("/show").json() == {"cart": ["tea", "jam"], "user": "42"}
    (info,) = store.sessions("42")
    assert store.get(auth) is not None and info.id == store.get(auth).id  # type: ignore[union-attr]
    c.get("/drop")
    assert c.get("/show").json() == {"cart": [], "user": "42"}
    got = store.get(auth)
    assert got is not None and "cart" not in got.data
    c.get("/logout")
    assert store.get(auth) is None and store.sessions("42") == []
    assert c.get("/show").json() == {"cart": [], "user": None}


def test_session_engine_revoked_elsewhere(store: rp.SessionStore) -> None:
    c = Client()
    c.get("/cart/add", {"sku": "tea"})
    c.get("/login", {"user": "7"})
    assert store.destroy_all("7") == 1  # "log out everywhere"
    assert c.get("/show").json() == {"cart": [], "user": None}
