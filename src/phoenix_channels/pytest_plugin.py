"""The pytest plugin: a ``channel_test`` fixture, loaded automatically.

Installing phoenix-channels registers this module with pytest (a
``pytest11`` entry point). Tell it your endpoint once, in ``conftest.py``::

    import pytest
    from myapp import endpoint

    @pytest.fixture
    def phoenix_endpoint():
        return endpoint

and every async test can take a started :class:`~phoenix_channels.testing.ChannelTest`::

    async def test_echo(channel_test):
        room = await channel_test.subscribe_and_join(UserSocket, "room:lobby")
        await channel_test.assert_reply(room.push("echo", {"hi": 1}), "ok", {"hi": 1})

At the end of the test every socket is closed, and a channel that crashed
unexpectedly fails it. The fixture is async: it needs pytest-asyncio (any
mode) or anyio's pytest plugin, whichever runs your async tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import pytest

from .errors import ConfigurationError
from .testing import ChannelTest, _check_endpoint

F = TypeVar("F", bound=Callable[..., Any])


def _async_fixture(func: F) -> F:
    try:  # in strict mode pytest-asyncio only runs async fixtures it was told about
        import pytest_asyncio
    except ImportError:  # pragma: no cover - anyio's plugin takes plain async fixtures
        return cast(F, pytest.fixture(func))
    return cast(F, pytest_asyncio.fixture(func))


@pytest.fixture
def phoenix_endpoint() -> Any:
    """Override this fixture to return your Endpoint (the one ``channel_test`` uses)."""
    raise ConfigurationError(
        "the channel_test fixture needs your endpoint: define a `phoenix_endpoint` fixture "
        "(in conftest.py) that returns your phoenix_channels.Endpoint"
    )


@_async_fixture
async def channel_test(phoenix_endpoint: Any) -> AsyncIterator[ChannelTest]:
    """A started ChannelTest for ``phoenix_endpoint``; closed (and checked) after the test."""
    async with ChannelTest(_check_endpoint(phoenix_endpoint)) as case:
        yield case
