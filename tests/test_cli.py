"""``phoenix-channels serve``: mistakes answered in one line, as uvicorn does (subprocesses)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from phoenix_channels import ConfigurationError, Endpoint, PubSub, Socket
from tests.pubsub.engines import free_port

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
from phoenix_channels import Endpoint, Socket

class UserSocket(Socket):
    channels = {}

endpoint = Endpoint(sockets={"/socket": UserSocket}, check_origin=False)
not_an_endpoint = {"sockets": 1}
"""

BROKEN = """
import phoenix_channels
import a_package_that_is_not_installed  # the app's own import fails
"""

CLUSTER = """
import os

from phoenix_channels import Endpoint, PubSub, Socket

class UserSocket(Socket):
    channels = {}

pubsub = (
    PubSub.nats("nats://127.0.0.1:1")
    if os.environ.get("ENGINE") == "nats"
    else PubSub.redis("redis://127.0.0.1:1/0")
)
endpoint = Endpoint(sockets={"/socket": UserSocket}, pubsub=pubsub)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHX_CLUSTER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "phoenix_channels", "serve", *args],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "goodapp.py").write_text(textwrap.dedent(GOOD))
    (tmp_path / "brokenapp.py").write_text(textwrap.dedent(BROKEN))
    (tmp_path / "clusterapp.py").write_text(textwrap.dedent(CLUSTER))
    return tmp_path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_a_module_that_is_not_found_is_one_line_and_exit_2(app_dir: Path) -> None:
    code, _, err = cli("ap:endpoint", cwd=app_dir)
    assert code == 2
    line = one_line(err)
    assert line.startswith("phoenix-channels: error: could not import module 'ap'")
    assert "--app-dir" in line


def test_a_module_whose_own_import_fails_keeps_its_traceback(app_dir: Path) -> None:
    code, _, err = cli("brokenapp:endpoint", cwd=app_dir)
    assert code != 0
    assert "Traceback" in err
    assert "No module named 'a_package_that_is_not_installed'" in err


def test_a_missing_attribute_and_a_value_that_is_not_an_endpoint(app_dir: Path) -> None:
    code, _, err = cli("goodapp:nope", cwd=app_dir)
    assert code == 2
    assert "module 'goodapp' has no attribute 'nope'" in one_line(err)
    code, _, err = cli("goodapp:not_an_endpoint", cwd=app_dir)
    assert code == 2
    assert "goodapp:not_an_endpoint is a dict, not a phoenix_channels.Endpoint" in one_line(err)
    code, _, err = cli("not a module", cwd=app_dir)
    assert code == 2
    assert "is not module:attribute" in one_line(err)


def test_app_dir_finds_the_module_from_elsewhere_and_serves_it(
    app_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    code, _, err = cli("goodapp:nope", cwd=elsewhere)
    assert code == 2 and "could not import module 'goodapp'" in err
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "phoenix_channels", "serve", "goodapp", "--port", str(port),
         "--app-dir", str(app_dir)],
        cwd=elsewhere, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_help_shows_every_default(app_dir: Path) -> None:
    code, out, _ = cli("--help", cwd=app_dir)
    assert code == 0
    for default in ("127.0.0.1", "4000", "info", "(default: 1)", "(default: .)"):
        assert default in out, default
    assert "--app-dir" in out


# -- a cluster needs a shared secret ------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "adapter"), [("redis", "RedisAdapter"), ("nats", "NatsAdapter")]
)
def test_a_cluster_endpoint_without_a_secret_is_refused_by_serve(
    app_dir: Path, engine: str, adapter: str
) -> None:
    env = {**_env(), "ENGINE": engine}
    code, _, err = cli("clusterapp:endpoint", "--port", str(free_port()), cwd=app_dir, env=env)
    assert code == 2
    line = one_line(err)
    assert f"one node of a cluster ({adapter})" in line
    assert "no secret_key_base" in line
    assert "refused by the others with HTTP 403" in line
    assert 'secret_key_base=os.environ["SECRET_KEY_BASE"]' in line


def test_workers_without_a_secret_are_refused(app_dir: Path) -> None:
    env = {**_env(), "PHX_CLUSTER_ENGINE": "redis", "PHX_CLUSTER_URL": "redis://127.0.0.1:1/0"}
    env["PHX_CLUSTER_NO_SECRET"] = "1"
    code, _, err = cli(
        "tests.cluster.app:endpoint", "--workers", "2", "--port", str(free_port()),
        cwd=ROOT, env=env,
    )  # fmt: skip
    assert code == 2
    line = one_line(err)
    assert line.startswith("phoenix-channels: error: --workers 2 runs 2 processes")
    assert "no secret_key_base" in line


class _S(Socket):
    channels = {}


@pytest.mark.parametrize("engine", ["redis", "nats", "redis_cluster"])
async def test_a_cluster_engine_without_a_secret_refuses_to_start(engine: str) -> None:
    pubsub = {
        "redis": lambda: PubSub.redis("redis://127.0.0.1:1/0"),
        "nats": lambda: PubSub.nats(),
        "redis_cluster": lambda: PubSub.redis_cluster("redis://127.0.0.1:1"),
    }[engine]()
    endpoint = Endpoint(sockets={"/socket": _S}, pubsub=pubsub)
    adapter = type(pubsub.adapter).__name__
    with pytest.raises(ConfigurationError, match=rf"one node of a cluster \({adapter}\)"):
        await endpoint.start()
    assert not endpoint._started


async def test_one_node_without_a_secret_starts() -> None:
    endpoint = Endpoint(sockets={"/socket": _S})
    await endpoint.start()
    await endpoint.stop()
