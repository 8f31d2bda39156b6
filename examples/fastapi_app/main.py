"""A FastAPI service with channels beside its ordinary routes.

* The API authenticates with a JWT (``POST /login`` issues one; other routes
  take ``Authorization: Bearer <token>``). The socket checks the same token,
  passed by the JS client as ``params: {token}``: one way to authenticate.
* ``POST /rooms/{room}/messages`` broadcasts to the channel topic ``room:{room}``.
* The app's lifespan starts the endpoint and, on shutdown, drains it (every
  socket closed with 1012, so clients reconnect elsewhere).
* Pushes are typed: ``new_msg`` takes a pydantic model, so a bad payload
  gets an ``invalid_payload`` error reply with the field errors.

Serve it (from the repository root) any of these ways::

    phoenix-channels serve examples.fastapi_app.main:app --port 8000
    uvicorn examples.fastapi_app.main:app --port 8000 --http phoenix_channels.uvicorn:HttpProtocol
    uvicorn examples.fastapi_app.main:app --port 8000          # plain ASGI path

Dependencies: ``pip install phoenix-channels fastapi pyjwt`` (requirements.txt).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from phoenix_channels import Channel, ChannelReply, Endpoint, Socket, on, reply

# One secret signs the tokens of the API and of the socket. Set it in production.
SECRET = os.environ.get("APP_JWT_SECRET", "dev-only-secret-change-me-0123456789abcdef")
TOKEN_SECONDS = 3600


def issue_token(user: str) -> str:
    claims = {"sub": user, "exp": int(time.time()) + TOKEN_SECONDS}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def verify_token(token: str) -> str | None:
    """The user a valid token names, or None (bad signature, expired, malformed)."""
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.PyJWTError:
        return None
    user = claims.get("sub")
    return user if isinstance(user, str) else None


# -- channels ------------------------------------------------------------------------------


class NewMsg(BaseModel):
    body: str = Field(min_length=1, max_length=2000)


class RoomChannel(Channel):
    async def join(self, topic: str, payload: Any) -> Any:
        return {"user": self.socket.assigns["user"]}

    @on("new_msg")
    async def new_msg(self, payload: NewMsg) -> ChannelReply:
        await self.broadcast("new_msg", {"user": self.socket.assigns["user"], "body": payload.body})
        return reply("ok", {})


class UserSocket(Socket):
    channels = {"room:*": RoomChannel}

    async def connect(self, params: dict[str, Any], connect_info: Any) -> bool:
        user = verify_token(str(params.get("token", "")))
        if user is None:
            return False  # the client gets HTTP 403 and does not join
        self.assigns["user"] = user
        return True

    def id(self) -> str | None:
        return f"user_socket:{self.assigns['user']}"


endpoint = Endpoint(sockets={"/socket": UserSocket})


# -- the FastAPI app -------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await endpoint.start()
    try:
        yield
    finally:
        await endpoint.stop()  # drain: sockets closed with 1012, channels end, PubSub stops


app = FastAPI(title="chat API", lifespan=lifespan)
bearer = HTTPBearer()


async def current_user(
    credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
) -> str:
    user = verify_token(credentials.credentials)
    if user is None:
        raise HTTPException(status_code=401, detail="invalid or expired token")
    return user


class Login(BaseModel):
    username: str = Field(min_length=1)
    password: str


@app.post("/login")
async def login(body: Login) -> dict[str, str]:
    if body.password != "letmein":  # a stand-in for the app's real user check
        raise HTTPException(status_code=401, detail="wrong password")
    return {"token": issue_token(body.username)}


@app.get("/me")
async def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
    return {"user": user}


@app.post("/rooms/{room}/messages")
async def post_message(
    room: str, message: NewMsg, user: Annotated[str, Depends(current_user)]
) -> dict[str, bool]:
    await endpoint.broadcast(f"room:{room}", "new_msg", {"user": user, "body": message.body})
    return {"ok": True}


# After the routes: everything else, /socket/websocket included, goes to the endpoint.
app.mount("/", endpoint)
