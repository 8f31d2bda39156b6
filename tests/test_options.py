"""Every option set is declared once: the docs' tables and the keyword types follow it.

The client socket's, the presence tracker's and the engine adapters' options
are frozen dataclasses whose fields carry the default and, in the docstring
under each field, the meaning. The tables in the docs are generated from
those declarations: when one drifts, this test fails and prints the table to
paste (or run it with ``PHX_UPDATE_DOCS=1`` to rewrite the docs in place).
The ``**options`` keyword types (``TypedDict``) must list the same names.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import os
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from phoenix_channels import ConfigurationError
from phoenix_channels.client import Socket, SocketOptions, TransportOptions
from phoenix_channels.client.options import SocketArgs
from phoenix_channels.presence import TrackerOptions
from phoenix_channels.presence.shard import TrackerArgs
from phoenix_channels.pubsub.options import EngineArgs, EngineOptions, NatsArgs, NatsOptions

DOCS = Path(__file__).resolve().parent.parent / "docs"

# (doc file, marker name, declarations: (class, note added to the option's name))
TABLES: list[tuple[str, str, list[tuple[type, str]]]] = [
    ("client.md", "SocketOptions", [(SocketOptions, "")]),
    ("presence.md", "TrackerOptions", [(TrackerOptions, "")]),
    ("cluster.md", "NatsOptions", [(EngineOptions, ""), (NatsOptions, " (NATS)")]),
]


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for stmt, nxt in itertools.pairwise(body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = nxt.value.value
    return docs


def _markdown(text: str) -> str:
    text = " ".join(text.split())
    text = re.sub(r":\w+:`~?\.*(?:[\w]+\.)*(\w+)`", r"`\1`", text)  # :class:`~.x.Name`
    return text.replace("``", "`")


def _default(field: dataclasses.Field[Any]) -> str:
    value = field.default
    if value is dataclasses.MISSING:
        value = field.default_factory()  # type: ignore[misc]
    if callable(value):
        return f"`{value.__name__}`"
    if isinstance(value, str):
        return f"`{json.dumps(value)}`"
    return f"`{value!r}`"


def render(declarations: list[tuple[type, str]]) -> str:
    rows = ["| option | default | meaning |", "|---|---|---|"]
    seen: set[str] = set()
    for cls, note in declarations:
        docs = field_docs(cls)
        for field in dataclasses.fields(cls):
            if field.name in seen:
                continue
            seen.add(field.name)
            assert field.name in docs, f"{cls.__name__}.{field.name} has no docstring under it"
            rows.append(
                f"| `{field.name}`{note} | {_default(field)} | {_markdown(docs[field.name])} |"
            )
    return "\n".join(rows)


def _begin(name: str) -> str:
    return (
        f"<!-- options table: {name} (generated from its declaration by tests/test_options.py) -->"
    )


@pytest.mark.parametrize(("doc", "name", "declarations"), TABLES, ids=[t[1] for t in TABLES])
def test_the_docs_table_is_the_declaration(
    doc: str, name: str, declarations: list[tuple[type, str]]
) -> None:
    path = DOCS / doc
    text = path.read_text()
    begin, end = _begin(name), "<!-- end of options table -->"
    assert begin in text, f"{doc} must hold the table of {name}, starting with {begin}"
    head, rest = text.split(begin, 1)
    current, tail = rest.split(end, 1)
    wanted = "\n" + render(declarations) + "\n"
    if current != wanted and os.environ.get("PHX_UPDATE_DOCS"):
        path.write_text(head + begin + wanted + end + tail)
        return
    assert current == wanted, f"the table of {name} in docs/{doc} drifted; it should be:{wanted}"


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (SocketArgs, SocketOptions),
        (TrackerArgs, TrackerOptions),
        (EngineArgs, EngineOptions),
        (NatsArgs, NatsOptions),
    ],
)
def test_the_keywords_are_the_options(args: type, options: type) -> None:
    assert list(args.__annotations__) == [f.name for f in dataclasses.fields(options)]


def test_the_transport_defaults_are_the_sockets() -> None:
    socket, transport = SocketOptions(), TransportOptions()
    for name in ("longpoll_timeout", "max_frame_size", "compress", "ssl", "vsn"):
        assert getattr(transport, name) == getattr(socket, name), name
    assert transport.connect_timeout == socket.timeout


def test_a_socket_keeps_the_options_it_was_given() -> None:
    socket = Socket("ws://127.0.0.1:1/socket", timeout=2, headers={"x-a": "b"}, jitter=0)
    assert socket.options.timeout == 2.0 and socket.timeout == 2.0
    assert socket.options.connect_timeout == 2.0, "connect_timeout defaults to timeout"
    assert socket.options.headers == (("x-a", "b"),)
    assert socket.options.heartbeat_interval == SocketOptions().heartbeat_interval


@pytest.mark.parametrize(
    ("build", "problem"),
    [
        (lambda: SocketOptions(reconnect_after=3), "reconnect_after must be a function"),
        (lambda: SocketOptions(transport=3), "transport must be"),
        (lambda: SocketOptions(max_frame_size=0), "max_frame_size must be a positive int"),
        (lambda: TrackerOptions(max_message_bytes=10), "max_message_bytes must be an int of at"),
        (lambda: TrackerOptions(down_period=1.0), "must be at least twice"),
        (lambda: EngineOptions(prefix="a b"), "prefix must be letters"),
        (lambda: EngineOptions(shards=0), "shards must be None"),
        (lambda: EngineOptions(timeout=0), "timeout must be a positive number of seconds"),
        (lambda: NatsOptions(connect_options={"servers": []}), "cannot set"),
        (lambda: NatsOptions(prefix=""), "prefix must be letters"),
    ],
)
def test_each_option_is_checked_where_it_is_declared(
    build: Callable[[], object], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        build()
