"""The rule for ``secret_key_base`` when an application runs on more than one process.

Without a secret, each process makes a random one. That is fine on one node
(restarting it only invalidates the tokens and long-poll sessions it signed),
but in a cluster a token signed by one node is refused by every other one,
which shows up as a 403 on some connections and not others. So a cluster
adapter (Redis, NATS) or ``serve --workers N`` without an explicit secret is
refused at start, with the fix. (An adapter of one's own is not judged: an
in-memory hub for tests is one process.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["missing_shared_secret"]

_FIX = (
    "Set one secret on every node, e.g. Endpoint(..., "
    'secret_key_base=os.environ["SECRET_KEY_BASE"]), with SECRET_KEY_BASE generated once by '
    "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
)


def missing_shared_secret(endpoint: Any, *, workers: int = 1) -> str | None:
    """Why ``endpoint`` (an Endpoint: not imported, it imports this module) cannot start
    without a secret_key_base, or None when it can."""
    if not endpoint._generated_secret:
        return None
    from .pubsub._cluster import EngineAdapter

    if workers > 1:
        where = f"--workers {workers} runs {workers} processes"
    elif isinstance(endpoint.pubsub.adapter, EngineAdapter):  # Redis, NATS
        name = type(endpoint.pubsub.adapter).__name__
        where = f"this Endpoint is one node of a cluster ({name})"
    else:
        return None
    return (
        f"{where}, but it has no secret_key_base, so each process would make its own random "
        "secret: tokens (and long-poll sessions) signed on one node would be refused by the "
        f"others with HTTP 403. {_FIX}."
    )
