"""Locust: one User class per pattern, found in ``loadtests/users/``.

locust -f loadtests/locustfile.py --host redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import importlib
import pkgutil

from locust import User

import loadtests.users as _users
from loadtests.users.base import PatternUser

__all__: list[str] = []

for _info in pkgutil.iter_modules(_users.__path__):
    if _info.name == "base":
        continue
    _mod = importlib.import_module(f"loadtests.users.{_info.name}")
    for _name, _obj in vars(_mod).items():
        if (
            isinstance(_obj, type)
            and issubclass(_obj, User)
            and _obj is not PatternUser
            and not getattr(_obj, "abstract", False)
        ):
            globals()[_name] = _obj
            __all__.append(_name)

del _info, _mod, _name, _obj
