"""Django adapters (the ``django`` extra): a cache backend and a session engine.

.. code-block:: python

    CACHES = {"default": {"BACKEND": "redispatterns.http.django.cache.RedisPatternsCache",
                          "LOCATION": "redis://127.0.0.1:6379/0", "TIMEOUT": 300}}
    SESSION_ENGINE = "redispatterns.http.django.sessions"
    REDISPATTERNS_SESSIONS = {"url": "redis://127.0.0.1:6379/0", "prefix": "dj:"}

Importing this package imports no Django; its modules do.
"""
