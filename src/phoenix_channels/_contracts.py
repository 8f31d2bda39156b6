"""What the application's callbacks may be and return, checked with a message that says the fix.

Phoenix's callbacks return tagged tuples and the channel process crashes
with a clear error on any other shape. Here callbacks return plain values;
these rules keep that as strict:

===================  ===========================  ======================================
callback             must be                      may return
===================  ===========================  ======================================
``Channel.join``     ``async def``                a dict (the ok reply) or None (``{}``);
                                                  refuse by raising ``JoinError(dict)``
``handle_in``        ``async def``                ``reply(...)``, ``stop(...)`` or None
``handle_out``       ``async def``                ``stop(...)`` or None
``handle_info``      ``async def``                ``stop(...)`` or None
``terminate``        ``async def``                None
``Socket.connect``   ``async def``                True (accept) or False (refuse)
``Socket.id``        plain ``def``                a str or None
===================  ===========================  ======================================

``RawSocket``'s ``connect``, ``handle_in``, ``handle_info`` and ``terminate``
must be ``async def`` too, and its ``id`` a plain ``def``.

A callback defined with the wrong kind of ``def`` is refused when the class
is defined; a wrong return value raises :class:`~phoenix_channels.errors.UsageError`
where it happens (a join crashes and the client gets ``{"reason": "join crashed"}``).
"""

from __future__ import annotations

import inspect
from typing import Any

from .errors import UsageError

__all__ = ["check_callbacks", "check_join_response", "check_terminate"]

CHANNEL_ASYNC = ("join", "handle_in", "handle_out", "handle_info", "terminate")
SOCKET_ASYNC = ("connect",)
SOCKET_SYNC = ("id",)
RAW_SOCKET_ASYNC = ("connect", "handle_in", "handle_info", "terminate")


def check_callbacks(cls: type, async_names: tuple[str, ...], sync_names: tuple[str, ...]) -> None:
    """Refuse a class whose overridden callbacks are of the wrong kind of ``def``."""
    for name in async_names:
        method = cls.__dict__.get(name)
        if method is not None and not inspect.iscoroutinefunction(method):
            raise UsageError(
                f"{cls.__name__}.{name} must be defined with `async def` "
                f"(`async def {name}(self, ...)`); the runtime awaits it"
            )
    for name in sync_names:
        method = cls.__dict__.get(name)
        if method is not None and (
            inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)
        ):
            raise UsageError(
                f"{cls.__name__}.{name} must be a plain `def` returning a str or None, "
                "not `async def`: it is called, not awaited"
            )


def _shape(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_join_response(owner: str, value: Any, reply_type: type) -> Any:
    """The reply payload of an accepted join: ``value`` if it is allowed, else UsageError.

    ``reply_type`` is :class:`~phoenix_channels.channel.ChannelReply` (passed in: this
    module imports nothing of the channel's).
    """
    if value is None:
        return {}
    if type(value) is dict:
        if len(value) == 1 and "error" in value:
            raise UsageError(
                f"{owner}.join returned {_shape(value)}, which would ACCEPT the join with that "
                "as its reply; to refuse it, raise JoinError({...}) "
                "(from phoenix_channels.errors)"
            )
        return value
    if type(value) is reply_type:
        hint = "reply(...) answers pushes in handle_in; return the reply dict itself"
    elif type(value) is tuple:
        hint = "callbacks return values, not Elixir tuples: return the reply dict"
    elif value is True or value is False:
        hint = "return None (reply {}) to accept, raise JoinError({...}) to refuse"
    else:
        hint = "return the reply as a dict"
    raise UsageError(
        f"{owner}.join returned {_shape(value)}; join must return a dict (the ok reply), "
        f"or None for {{}}, or raise JoinError({{...}}) to refuse: {hint}"
    )


def check_terminate(owner: str, value: Any) -> None:
    if value is not None:
        raise UsageError(
            f"{owner}.terminate returned {_shape(value)}; it must return None (the channel "
            "is ending: nothing can be sent in reply)"
        )
