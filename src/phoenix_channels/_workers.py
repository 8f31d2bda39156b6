"""``phoenix-channels serve --workers N``: N server processes sharing one port, supervised.

Each worker is a plain ``phoenix-channels serve ... --reuse-port`` process:
it binds its own listening socket with ``SO_REUSEPORT``, and the kernel
spreads new connections evenly over the listening workers (Linux hashes
each connection to one of them), whatever each worker is busy with. A
worker that dies takes only its own connections with it: the kernel stops
handing it new ones at once, its clients reconnect and land on the others,
and the supervisor starts a replacement.

Workers are separate nodes: they share broadcasts only through a cluster
PubSub adapter (Redis or NATS). With the local adapter each worker would be
an island, so ``main`` refuses ``--workers`` > 1 then.

The supervisor holds a bound, never-listening socket on the port for its
whole life (it reserves the port, and resolves port 0 to a real one before
the workers start); a socket that does not listen is never handed
connections. Workers run in their own sessions, so a terminal's Ctrl-C
reaches the supervisor only, which asks each worker once (SIGTERM) to drain
and stop; a second Ctrl-C kills them. On Linux a worker also gets SIGTERM if
the supervisor dies without asking.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

__all__ = ["bind_socket", "serve_workers"]

log = logging.getLogger("phoenix_channels.workers")

_CRASH_WINDOW = 10.0  # a worker that dies this soon after starting counts as a crash at startup
_MAX_STARTUP_CRASHES = 5  # in a row, for one slot: then the supervisor gives up


def bind_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``(host, port)``, with ``SO_REUSEPORT`` if asked; not listening."""
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise SystemExit("--workers and --reuse-port need SO_REUSEPORT, which this OS lacks")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SystemExit(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this worker if the supervisor dies (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except Exception:
        pass


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    crashes: int = 0


def serve_workers(
    spec: str,
    workers: int,
    host: str,
    port: int,
    log_level: str,
    grace: float,
    on_exit: Callable[[int], None] | None = None,
    app_dir: str = ".",
) -> int:
    """Run ``workers`` processes serving ``spec`` on ``host:port`` until stopped; exit status.

    ``grace``: how long the workers get to drain after SIGTERM before they are killed.
    ``on_exit(pid)`` is called once for each worker that ended (metrics clean up after it).
    """
    if not sys.platform.startswith("linux"):
        log.warning(
            "SO_REUSEPORT spreads connections evenly over workers on Linux only; on this OS "
            "most connections may go to one worker"
        )
    holder = bind_socket(host, port, reuse_port=True)
    port = holder.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "phoenix_channels",
        "serve",
        spec,
        "--host",
        host,
        "--port",
        str(port),
        "--log-level",
        log_level,
        "--reuse-port",
        "--app-dir",
        app_dir,
    ]
    preexec: Callable[[], None] | None = (
        _die_with_parent if sys.platform.startswith("linux") else None
    )
    slots = [_Slot(i) for i in range(workers)]
    stopping = False
    deadline = 0.0
    signals = 0

    def start(slot: _Slot) -> None:
        slot.process = subprocess.Popen(command, start_new_session=True, preexec_fn=preexec)
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    def send_all(sig: int) -> None:
        for slot in slots:
            proc = slot.process
            if proc is not None and proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping, deadline, signals
        signals += 1
        if signals == 1:
            stopping = True
            deadline = time.monotonic() + grace
            log.info("stopping %d worker(s): draining connections", workers)
            send_all(signal.SIGTERM)
        else:
            log.warning("stopping now: killing the workers")
            send_all(signal.SIGKILL)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for slot in slots:
            start(slot)
        log.info("serving on %s:%d with %d workers", host, port, workers)
        while True:
            now = time.monotonic()
            alive = 0
            for slot in slots:
                proc = slot.process
                if proc is None:
                    if not stopping and slot.restart_at is not None and now >= slot.restart_at:
                        start(slot)
                        alive += 1
                    continue
                code = proc.poll()
                if code is None:
                    alive += 1
                    continue
                slot.process = None
                if on_exit is not None:
                    on_exit(proc.pid)
                if stopping:
                    continue
                lived = now - slot.started
                slot.crashes = slot.crashes + 1 if lived < _CRASH_WINDOW else 0
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                if slot.crashes >= _MAX_STARTUP_CRASHES:
                    log.error(
                        "worker %d %s %d times in a row within %.0f s of starting; giving up "
                        "(its output above says why)",
                        slot.index,
                        how,
                        slot.crashes,
                        _CRASH_WINDOW,
                    )
                    status = 1
                    on_signal(signal.SIGTERM, None)
                    continue
                delay = min(30.0, 0.5 * 2**slot.crashes)
                log.error(
                    "worker %d (pid %d) %s after %.1f s; starting a new one in %.1f s",
                    slot.index,
                    proc.pid,
                    how,
                    lived,
                    delay,
                )
                slot.restart_at = now + delay
            if stopping:
                if alive == 0:
                    break
                if now > deadline:
                    log.warning("workers still running %.0f s after SIGTERM: killing them", grace)
                    send_all(signal.SIGKILL)
                    deadline = now + 3600
            time.sleep(0.1)
    finally:
        send_all(signal.SIGKILL)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        holder.close()
    return status
