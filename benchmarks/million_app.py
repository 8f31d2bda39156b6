"""The application ``benchmarks/million.py`` serves: the benchmark channel over Redis.

``phoenix-channels serve benchmarks.million_app:endpoint --workers W``: each
worker is a node of one cluster on a Redis engine (``PHX_MILLION_REDIS``,
channel prefix ``PHX_MILLION_PREFIX``), so a broadcast from any node (the
harness is one) reaches the clients of every worker. Channels are
``benchmarks.bench_app``'s (``bench:*``, join ok, ``echo``, ``shout``).

The socket's idle timeout is ``PHX_MILLION_IDLE_TIMEOUT`` seconds (default
3600): the benchmark's lean clients hold their connections without
heartbeats, and its heartbeat phase measures what heartbeats cost instead.
"""

from __future__ import annotations

import os

from benchmarks.bench_app import BenchSocket
from phoenix_channels import Endpoint, PubSub


class MillionSocket(BenchSocket):
    timeout = float(os.environ.get("PHX_MILLION_IDLE_TIMEOUT", "3600"))


endpoint = Endpoint(
    sockets={"/socket": MillionSocket},
    check_origin=False,
    secret_key_base="million-benchmark-" + "m" * 30,  # one secret for every worker
    pubsub=PubSub.redis(
        os.environ.get("PHX_MILLION_REDIS", "redis://127.0.0.1:6379/0"),
        prefix=os.environ.get("PHX_MILLION_PREFIX", "million"),
        timeout=30.0,
    ),
)
