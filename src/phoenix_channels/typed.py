"""Typed event payloads: one handler per event, its payload validated against its annotation.

::

    @dataclass
    class NewMsg:
        body: str
        mentions: list[str] = field(default_factory=list)

    class RoomChannel(Channel):
        @on("new_msg")
        async def new_msg(self, payload: NewMsg) -> ChannelReply:
            return reply("ok", {"length": len(payload.body)})    # payload is a NewMsg here

A push of ``new_msg`` calls ``new_msg`` with the payload turned into the
annotated type; events without an ``@on`` handler go to ``handle_in`` as
before. A payload that does not fit gets the error reply
``{"reason": "invalid_payload", "errors": [{"loc": [...], "msg": ..., "type": ...}]}``
and the channel carries on: the handler is not called, nothing crashes.

Supported annotations:

* a pydantic model (the ``pydantic`` extra), or any type pydantic validates
  when pydantic is installed and the type is not a dataclass; its errors are
  pydantic's (``loc``, ``msg``, ``type``);
* a dataclass, without pydantic: fields checked against JSON types (``str``,
  ``int``, ``float`` (ints accepted), ``bool``, ``None``, ``Any``, ``X | None``,
  ``list[X]``, ``dict[str, X]``, ``Literal[...]``, nested dataclasses);
  missing required fields and wrong types are reported, unknown keys are
  ignored; other annotations are not checked;
* ``dict``, ``bytes`` (binary pushes of V2 clients), ``Any`` or no
  annotation: the payload is passed as it came, after a check of its kind.

Alternatively ``payloads = {"new_msg": NewMsg}`` on the class validates the
payload of those events and passes the typed value to ``handle_in``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from .errors import UsageError

__all__ = ["InvalidPayload", "on"]

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])
_EVENT_ATTR = "__phoenix_event__"


def on(event: str) -> Callable[[_F], _F]:
    """Make the decorated ``async def method(self, payload: T)`` the handler of ``event``."""
    if type(event) is not str or not event:
        raise UsageError(f"@on needs an event name, got {event!r}")

    def mark(method: _F) -> _F:
        function: Any = method
        if not inspect.iscoroutinefunction(function):
            raise UsageError(f"@on({event!r}) handler {method.__qualname__} must be `async def`")
        setattr(method, _EVENT_ATTR, event)
        return method

    return mark


class InvalidPayload(Exception):
    """A payload that does not fit its declared type; ``errors`` lists what is wrong."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


# -- collecting the handlers of a Channel subclass ---------------------------------------------

# event -> (method name or None for handle_in, validator or None)
Handlers = dict[str, tuple[str | None, Callable[[Any], Any] | None]]


def handlers_of(cls: type) -> Handlers | None:
    """The typed handlers of a Channel subclass (``None`` if it declares none)."""
    found: Handlers = {}
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            event = getattr(member, _EVENT_ATTR, None)
            if event is None:
                continue
            if event in found and found[event][0] != name:
                raise UsageError(
                    f"{cls.__name__} has two @on({event!r}) handlers: {found[event][0]} and {name}"
                )
            found[event] = (name, _validator(_payload_type(cls, member, name)))
    payloads: Mapping[str, Any] = getattr(cls, "payloads", None) or {}
    if not isinstance(payloads, Mapping):
        raise UsageError(f"{cls.__name__}.payloads must map event names to payload types")
    for event, tp in payloads.items():
        if event in found:
            raise UsageError(f"{cls.__name__}: {event!r} is in payloads and has an @on handler")
        found[event] = (None, _validator(tp))
    return found or None


def _payload_type(cls: type, method: Any, name: str) -> Any:
    params = list(inspect.signature(method).parameters.values())
    if len(params) != 2:
        raise UsageError(
            f"{cls.__name__}.{name} must take (self, payload), got {len(params)} parameter(s)"
        )
    try:
        hints = typing.get_type_hints(method)
    except Exception as exc:
        raise UsageError(
            f"cannot resolve the annotations of {cls.__name__}.{name} ({exc}); define the "
            "payload type at module level"
        ) from exc
    return hints.get(params[1].name, Any)


# -- validation ----------------------------------------------------------------------------


def _validator(tp: Any) -> Callable[[Any], Any] | None:
    if tp is Any:
        return None
    if tp is dict or typing.get_origin(tp) is dict:
        return _kind_check(dict, "an object", "dict_type")
    if tp is bytes:
        return _kind_check(bytes, "a binary payload", "bytes_type")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return lambda payload: _dataclass(tp, payload, ())
    pydantic = _pydantic_adapter(tp)
    if pydantic is not None:
        return pydantic
    raise UsageError(
        f"payload type {tp!r} is not supported: use a dataclass, a pydantic model "
        "(pip install 'phoenix-channels[pydantic]'), dict, bytes or Any"
    )


def _kind_check(kind: type, what: str, code: str) -> Callable[[Any], Any]:
    def check(payload: Any) -> Any:
        if not isinstance(payload, kind):
            raise InvalidPayload([_error((), f"expected {what}", code)])
        return payload

    return check


def _pydantic_adapter(tp: Any) -> Callable[[Any], Any] | None:
    try:
        import pydantic
    except ImportError:
        return None
    adapter: Any = pydantic.TypeAdapter(tp)

    def validate(payload: Any) -> Any:
        try:
            return adapter.validate_python(payload)
        except pydantic.ValidationError as exc:
            raise InvalidPayload(
                [
                    _error(tuple(e["loc"]), e["msg"], e["type"])
                    for e in exc.errors(include_url=False, include_context=False)
                ]
            ) from None

    return validate


def _error(loc: tuple[Any, ...], msg: str, code: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": code}


def _dataclass(tp: type, payload: Any, loc: tuple[Any, ...]) -> Any:
    if not isinstance(payload, dict):
        raise InvalidPayload([_error(loc, "expected an object", "dict_type")])
    errors: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        if not f.init:
            continue
        if f.name not in payload:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.append(_error((*loc, f.name), "field required", "missing"))
            continue
        try:
            values[f.name] = _value(hints.get(f.name, Any), payload[f.name], (*loc, f.name))
        except InvalidPayload as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidPayload(errors)
    return tp(**values)


_SCALARS: dict[Any, tuple[tuple[type, ...], str, str]] = {
    str: ((str,), "a string", "string_type"),
    int: ((int,), "an integer", "int_type"),
    float: ((int, float), "a number", "float_type"),
    bool: ((bool,), "a boolean", "bool_type"),
}


def _value(tp: Any, value: Any, loc: tuple[Any, ...]) -> Any:
    if tp is Any:
        return value
    if tp is None or tp is type(None):
        if value is not None:
            raise InvalidPayload([_error(loc, "expected null", "none_required")])
        return None
    scalar = _SCALARS.get(tp)
    if scalar is not None:
        kinds, what, code = scalar
        if not isinstance(value, kinds) or (tp is not bool and isinstance(value, bool)):
            raise InvalidPayload([_error(loc, f"expected {what}", code)])
        number: Any = value
        return float(number) if tp is float else value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp, value, loc)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        errors: list[dict[str, Any]] = []
        for option in args:
            try:
                return _value(option, value, loc)
            except InvalidPayload as exc:
                errors.extend(exc.errors)
        raise InvalidPayload(errors)
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise InvalidPayload([_error(loc, f"expected one of {list(args)!r}", "literal_error")])
        return value
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise InvalidPayload([_error(loc, "expected a list", "list_type")])
        if not args:
            return value
        items, errs = [], []
        for i, item in enumerate(value):
            try:
                items.append(_value(args[0], item, (*loc, i)))
            except InvalidPayload as exc:
                errs.extend(exc.errors)
        if errs:
            raise InvalidPayload(errs)
        return items
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise InvalidPayload([_error(loc, "expected an object", "dict_type")])
        if len(args) != 2:
            return value
        out, errs = {}, []
        for key, item in value.items():
            try:
                out[key] = _value(args[1], item, (*loc, key))
            except InvalidPayload as exc:
                errs.extend(exc.errors)
        if errs:
            raise InvalidPayload(errs)
        return out
    return value  # an annotation this validator does not check


# -- dispatch (called by Channel for a push) ---------------------------------------------------


class HandlerHost(Protocol):
    """What :func:`dispatch` needs of a channel (the channel module imports this one)."""

    async def handle_in(self, event: str, payload: Any) -> Any: ...


async def dispatch(channel: HandlerHost, handlers: Handlers, event: str, payload: Any) -> Any:
    """Run the typed handler of ``event`` (or ``handle_in``) with the validated payload.

    A payload that does not validate raises :class:`InvalidPayload`; the channel
    answers it with an ``invalid_payload`` error reply listing ``errors``.
    """
    entry = handlers.get(event)
    if entry is None:
        return await channel.handle_in(event, payload)
    name, validate = entry
    if validate is not None:
        payload = validate(payload)
    if name is None:
        return await channel.handle_in(event, payload)
    return await getattr(channel, name)(payload)
