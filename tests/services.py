"""What the test run needs from the machine, provided by the test run itself.

``python -m tests.services -- COMMAND...`` makes sure the programs the suite
drives are installed (``redis-server``, ``nats-server``, Debian's Chromium;
installed with apt-get when missing and running as root), starts a private
Redis and a private NATS (with JetStream) on free loopback ports, runs
COMMAND with ``PHX_TEST_REDIS_URL`` and ``PHX_TEST_NATS_URL`` pointing at
them, stops them by PID and exits with COMMAND's status. ``make test`` wraps
the whole run (pytest, then the Node suites) in it, so one Redis and one NATS
serve every suite and nothing depends on, or disturbs, services that happen
to be running on the machine.

A bare ``pytest`` run gets the same from ``tests/conftest.py``, which calls
:func:`private_services` when the variables are not set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# Debian package for each program; nats-server lives in /usr/sbin there.
PROGRAMS = {
    "redis-server": ("redis-server", ["/usr/bin/redis-server"]),
    "nats-server": ("nats-server", ["/usr/sbin/nats-server"]),
    "chromium": ("chromium", ["/usr/bin/chromium"]),
}
ENV_VARS = ("PHX_TEST_REDIS_URL", "PHX_TEST_NATS_URL")


def find_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    _, fallbacks = PROGRAMS[name]
    return next((path for path in fallbacks if os.access(path, os.X_OK)), None)


def install_missing(names: tuple[str, ...] = tuple(PROGRAMS)) -> list[str]:
    """Install the missing programs with apt-get (root only); return those still missing."""
    missing = [name for name in names if find_program(name) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = [PROGRAMS[name][0] for name in missing]
        print(f"tests/services: installing {' '.join(packages)} with apt-get", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *packages],
            check=False, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        missing = [name for name in missing if find_program(name) is None]
    return missing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"{what} did not start on 127.0.0.1:{port}; its log ends:\n{tail}")


def _start(args: list[str], port: int, what: str, workdir: Path) -> subprocess.Popen[bytes]:
    log = workdir / f"{what}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=workdir, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for_port(port, process, what, log)
    except BaseException:
        process.kill()
        process.wait(10)
        raise
    return process


@contextlib.contextmanager
def private_services() -> Iterator[dict[str, str]]:
    """A private Redis and NATS (JetStream) on free ports; yields the env vars naming them.

    A program that is not installed (and cannot be) is left out: the tests that
    need it then skip with the reason, which ``CI=true`` turns into a failure.
    """
    install_missing(("redis-server", "nats-server"))
    processes: list[subprocess.Popen[bytes]] = []
    env: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="phx-services-") as tmp:
        workdir = Path(tmp)
        try:
            redis = find_program("redis-server")
            if redis:
                port = free_port()
                processes.append(_start(
                    [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(workdir)],
                    port, "redis", workdir,
                ))  # fmt: skip
                env["PHX_TEST_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            nats = find_program("nats-server")
            if nats:
                port = free_port()
                processes.append(_start(
                    [nats, "-a", "127.0.0.1", "-p", str(port), "-js",
                     "-sd", str(workdir / "jetstream")],
                    port, "nats", workdir,
                ))  # fmt: skip
                env["PHX_TEST_NATS_URL"] = f"nats://127.0.0.1:{port}"
            yield env
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m tests.services -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    still_missing = install_missing(("chromium",))
    if still_missing:
        print(
            f"tests/services: {', '.join(still_missing)} not installed and not installable "
            "here (run as root, or apt-get install it); its tests will skip",
            file=sys.stderr,
        )
    if all(os.environ.get(name) for name in ENV_VARS):
        return subprocess.call(argv)
    with private_services() as env:
        for name, value in env.items():
            print(f"tests/services: {name}={value}", file=sys.stderr)
        return subprocess.call(argv, env={**os.environ, **env})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
