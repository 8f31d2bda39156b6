"""The socket and the channel, and the endpoint that serves them.

* ``UserSocket.connect`` verifies the token the room page rendered for the
  logged-in user (signed with Django's ``SECRET_KEY``), then loads the user
  with Django's async ORM: no blocking call on the event loop.
* ``RoomChannel`` reads the room's history on join and saves each message,
  with the async ORM (``aget``, ``acreate``, ``async for``); code that only
  has a sync API is wrapped with ``asgiref.sync.sync_to_async``.
* ``publisher`` lets plain sync views broadcast through the running endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.asgi import get_asgi_application

from phoenix_channels import Channel, ChannelReply, Endpoint, Socket, TokenError, on, reply, token
from phoenix_channels.publisher import Publisher

from .models import Message

SOCKET_SALT = "user socket"
TOKEN_MAX_AGE = 24 * 3600


def socket_token(user_id: int) -> str:
    """Rendered into the room page for the logged-in user."""
    return token.sign(settings.SECRET_KEY, SOCKET_SALT, user_id)


@dataclass
class NewMsg:
    body: str


def _history(room: str) -> list[dict[str, Any]]:
    # A sync helper (say, shared with a view) called from async code: sync_to_async.
    rows = Message.objects.filter(room=room).select_related("user").order_by("-id")[:20]
    return [{"user": m.user.username, "body": m.body} for m in reversed(rows)]


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        room = topic.partition(":")[2]
        history = await sync_to_async(_history)(room)
        return {"user": self.socket.assigns["username"], "history": history}

    @on("new_msg")
    async def new_msg(self, payload: NewMsg) -> ChannelReply:
        if not payload.body.strip():
            return reply("error", {"reason": "empty message"})
        user = await get_user_model().objects.aget(pk=self.socket.assigns["user_id"])
        room = self.topic.partition(":")[2]
        message = await Message.objects.acreate(room=room, user=user, body=payload.body)
        await self.broadcast(
            "new_msg", {"id": message.pk, "user": user.username, "body": message.body}
        )
        return reply("ok", {"id": message.pk})


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}

    async def connect(self, params: dict[str, Any], connect_info: Any) -> bool:
        try:
            user_id = token.verify(
                settings.SECRET_KEY, SOCKET_SALT, params.get("token"), max_age=TOKEN_MAX_AGE
            )
        except TokenError:
            return False  # HTTP 403: a missing, forged or expired token
        user = await get_user_model().objects.filter(pk=user_id, is_active=True).afirst()
        if user is None:
            return False
        self.assigns["user_id"] = user.pk
        self.assigns["username"] = user.get_username()
        return True

    def id(self) -> str | None:
        return f"user_socket:{self.assigns['user_id']}"


endpoint = Endpoint(
    sockets={"/socket": UserSocket},
    app=get_asgi_application(),  # every request that is not for a socket goes to Django
    secret_key_base=settings.SECRET_KEY,
    check_origin=["//localhost", "//127.0.0.1"],
)
publisher = Publisher(endpoint)
