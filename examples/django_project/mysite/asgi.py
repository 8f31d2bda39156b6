"""The ASGI application: the phoenix-channels endpoint in front, Django behind it.

``uvicorn mysite.asgi:application`` (add ``--http phoenix_channels.uvicorn:HttpProtocol``
for the fast path, or run ``phoenix-channels serve mysite.asgi:application``).
Requests for ``/socket/...`` are served by the endpoint; every other request
goes to Django (``Endpoint(app=get_asgi_application())`` in ``chat/sockets.py``).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

import django

django.setup()  # before any model is imported

from chat.sockets import endpoint  # noqa: E402

application = endpoint
