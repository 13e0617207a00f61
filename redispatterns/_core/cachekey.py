"""Cache keys from a function's arguments: a stable, typed, injective encoding.

``KeyPlan.for_function(fn, ...)`` is built once, at decoration time: it reads the signature,
checks key and tag templates against it, and precomputes everything a call needs. Per call,
``plan.render(args, kwargs)`` binds the arguments (defaults applied, keyword order irrelevant)
and encodes them so that

* the same arguments give the same key in every process (no ``id()``, ``hash()`` or ``repr``
  of arbitrary objects);
* distinct calls never share one: every value carries its type (``f(1)`` and ``f("1")``
  differ), strings are JSON-quoted (``f("a b")`` and ``f("a", "b")`` differ), and the key names
  the function by module and qualified name (two ``get`` functions in different modules or
  classes differ).

Values: ``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes``, ``UUID``, ``datetime`` /
``date`` / ``time``, ``Decimal``, ``Enum``, dataclasses, tuples/lists, sets, dicts (sorted), and
any object with a ``__cache_key__()`` method returning one of those. Anything else is a
``TypeError`` naming the argument, never a silent ``str()``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import inspect
import string
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["BUCKETS", "MAX_ARGS_LEN", "KeyPlan", "bucket_of", "encode_arg", "function_id"]

BUCKETS = 1024  # hash-tag buckets: a value, its lease and its tag sets share one bucket's slot
MAX_ARGS_LEN = 120  # longer encodings are hashed (blake2b, 128 bits)


def function_id(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of ``fn`` (``<locals>`` kept: nested functions stay distinct)."""
    module = getattr(fn, "__module__", None) or "?"
    qual = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{qual}"


def _enc_str(s: str) -> str:
    return orjson.dumps(s).decode()


def encode_arg(value: Any, _depth: int = 0) -> str:
    """The canonical text of one argument value (typed, so no two types share an encoding)."""
    if _depth > 32:
        raise TypeError("argument nests too deeply (or refers to itself) to build a cache key")
    t = type(value)
    if t is str:
        return _enc_str(value)
    if t is int:
        return f"i{value}"
    if value is None:
        return "N"
    if t is bool:
        return "T" if value else "F"
    if t is float:
        return f"f{value!r}"
    if t is bytes or t is bytearray or t is memoryview:
        return "b" + base64.b64encode(bytes(value)).decode()
    d = _depth + 1
    if t is tuple or t is list:
        return "[" + ",".join(encode_arg(v, d) for v in value) + "]"
    if t is dict:
        items = sorted((encode_arg(k, d), encode_arg(v, d)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    custom = getattr(value, "__cache_key__", None)
    if custom is not None and callable(custom):
        return f"o{_qual(t)}({encode_arg(custom(), d)})"
    if isinstance(value, enum.Enum):
        return f"e{_qual(t)}.{value.name}"
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int):
        return f"i{int(value)}"
    if isinstance(value, str):
        return _enc_str(str(value))
    if isinstance(value, float):
        return f"f{float(value)!r}"
    if isinstance(value, uuid.UUID):
        return f"u{value.hex}"
    if isinstance(value, dt.datetime):
        return f"d{value.isoformat()}"
    if isinstance(value, dt.date):
        return f"D{value.isoformat()}"
    if isinstance(value, dt.time):
        return f"t{value.isoformat()}"
    if isinstance(value, dt.timedelta):
        return f"p{value.days}:{value.seconds}:{value.microseconds}"
    if isinstance(value, decimal.Decimal):
        return f"m{value}"
    if isinstance(value, (bytes, bytearray)):
        return "b" + base64.b64encode(bytes(value)).decode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ",".join(
            f"{f.name}={encode_arg(getattr(value, f.name), d)}" for f in dataclasses.fields(value)
        )
        return f"c{_qual(t)}({fields})"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(encode_arg(v, d) for v in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "<" + ",".join(sorted(encode_arg(v, d) for v in value)) + ">"
    if isinstance(value, Mapping):
        items = sorted((encode_arg(k, d), encode_arg(v, d)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    raise TypeError(
        f"cannot build a stable cache key from a {_qual(t)}: give it a __cache_key__() method, "
        "leave the argument out with ignore=(...), or pass key='template'"
    )


def _qual(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def bucket_of(text: str) -> int:
    """The hash-tag bucket (0..BUCKETS-1) of a key's argument part."""
    return zlib.crc32(text.encode("utf-8", "surrogateescape")) % BUCKETS


def _hashed(text: str) -> str:
    if len(text) <= MAX_ARGS_LEN:
        return text
    digest = hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
    return "#" + digest


def _template_fields(template: str) -> list[str]:
    """The root names a ``str.format`` template refers to (``"{user.id}"`` -> ``user``)."""
    roots = []
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise ValueError(
                f"template {template!r}: use argument names in braces, not positions ({{{field}}})"
            )
        root = field.split(".", 1)[0].split("[", 1)[0]
        roots.append(root)
    return roots


@dataclass(frozen=True)
class KeyPlan:
    """How to turn one function's arguments into the argument part of its cache keys."""

    fn_id: str
    signature: inspect.Signature
    names: tuple[str, ...]  # parameters in the key, in signature order
    positional: tuple[str, ...]  # every parameter that can be passed by position
    template: str | None
    tag_templates: tuple[str, ...]
    simple: bool  # only plain positional-or-keyword params without defaults
    direct: bool = False  # simple, every parameter in the key, no key template, no tags

    @classmethod
    def for_function(
        cls,
        fn: Callable[..., Any],
        *,
        template: str | None = None,
        ignore: Iterable[str] = (),
        tags: Iterable[str] = (),
        name: str | None = None,
    ) -> KeyPlan:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise TypeError("name= must be a non-empty str")
            if name.startswith("#"):
                raise ValueError("name= cannot start with '#' (reserved for tag sets)")
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        pnames = [p.name for p in params]
        ignored = set(ignore if not isinstance(ignore, str) else (ignore,))
        unknown = ignored - set(pnames)
        if unknown:
            raise ValueError(
                f"ignore={sorted(unknown)!r}: {function_id(fn)} has no such parameter "
                f"(it has {', '.join(pnames) or 'none'})"
            )
        if params and params[0].name in ("self", "cls") and "self" not in ignored:
            ignored.add(params[0].name)  # methods: the instance is not part of the key
        if template is not None:
            if not isinstance(template, str) or not template:
                raise TypeError("key= must be a non-empty str template, e.g. 'user:{user_id}'")
            _check_fields("key", template, pnames)
        tag_list = tuple(tags) if not isinstance(tags, str) else (tags,)
        for t in tag_list:
            if not isinstance(t, str) or not t:
                raise TypeError("tags= must be non-empty str templates, e.g. ['user:{user_id}']")
            _check_fields("tag", t, pnames)
        names = tuple(n for n in pnames if n not in ignored)
        positional = tuple(
            p.name
            for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        )
        simple = all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is inspect.Parameter.empty
            for p in params
        )
        return cls(
            fn_id=name or function_id(fn),
            signature=sig,
            names=names,
            positional=positional,
            template=template,
            tag_templates=tag_list,
            simple=simple,
            direct=simple and template is None and not tag_list and names == positional,
        )

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments by name, defaults applied (``TypeError`` as a call would)."""
        if self.simple and not kwargs and len(args) == len(self.positional):
            return dict(zip(self.positional, args, strict=True))
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    def render(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The argument part of the key for one call (hashed when long)."""
        arguments = self.bind(args, kwargs)
        return self.render_bound(arguments)

    def render_args(self, args: tuple[Any, ...]) -> str | None:
        """The argument part straight from a call's positional arguments (what :meth:`render`
        gives, with no binding), or ``None`` when the call needs binding."""
        if self.direct and len(args) == len(self.positional):
            return _hashed(",".join(map(encode_arg, args)))
        return None

    def render_bound(self, arguments: Mapping[str, Any]) -> str:
        if self.template is not None:
            text = "k:" + self.template.format(**arguments)
        else:
            text = ",".join(encode_arg(arguments[n]) for n in self.names)
        return _hashed(text)

    def tags_for(self, arguments: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(t.format(**arguments) for t in self.tag_templates)


def _check_fields(what: str, template: str, pnames: list[str]) -> None:
    try:
        fields = _template_fields(template)
    except ValueError as exc:
        raise ValueError(f"{what} template {template!r} is malformed: {exc}") from None
    missing = [f for f in fields if f not in pnames]
    if missing:
        raise ValueError(
            f"{what} template {template!r} names {', '.join(missing)}, which the function "
            f"does not take (parameters: {', '.join(pnames) or 'none'})"
        )
