"""Test configuration: the public plugin gives backends, flavours and real servers."""

pytest_plugins = ["redispatterns.testing.plugin"]
