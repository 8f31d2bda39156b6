"""Plain synchronous Django views: a page, and an action that broadcasts."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from .models import Message
from .sockets import publisher, socket_token


@login_required
def room(request: HttpRequest, room: str) -> HttpResponse:
    context = {"room": room, "socket_token": socket_token(request.user.pk)}
    return render(request, "chat/room.html", context)


@login_required
@require_POST
def announce(request: HttpRequest, room: str) -> JsonResponse:
    body = request.POST.get("body", "").strip()
    if not body:
        return JsonResponse({"error": "body is required"}, status=400)
    message = Message.objects.create(room=room, user=request.user, body=body, announcement=True)
    # Sync code, no event loop in sight: the publisher hands the broadcast to the endpoint.
    publisher.publish(
        f"room:{room}",
        "announcement",
        {"id": message.pk, "user": request.user.get_username(), "body": body},
    )
    return JsonResponse({"id": message.pk})
