"""HTTP long polling: the JS client's fallback transport, split the way Phoenix splits it.

* :mod:`.options`: :class:`LongPoll`, the options a socket class sets;
* :mod:`.session`: :class:`LongPollSession`, one client's Transport (an
  outbox between polls) and its state table;
* :mod:`.relay`: commands and answers that reach a session on another node
  through PubSub, as typed values encoded at one boundary;
* :mod:`.handler`: the HTTP requests, one function per kind;
* :mod:`.encoding`: the frames long-poll clients get (JSON text only).

A session lives in the process whose endpoint created it; a request that
lands on another endpoint of the cluster reaches it through PubSub on the
session's private topic (the token says which), so no sticky routing is
needed.
"""

from __future__ import annotations

from .handler import serve_longpoll
from .options import LongPoll, longpoll_options
from .session import LongPollSession

__all__ = ["LongPoll", "LongPollSession", "longpoll_options", "serve_longpoll"]
