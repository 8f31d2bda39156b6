"""The package a user installs: build the wheel and sdist, install the wheel in a fresh venv.

Outside the checkout (``tmp_path``), with nothing of the repository on the
path: the README's first example is served by the installed
``phoenix-channels`` command and the official JS client joins it; every
extra (``nats``, ``pydantic``, ``prometheus``, ``otel``, ``gunicorn``)
installs what it names, and the modules that need it import. It needs the
package index (pip installs the wheel's dependencies), like ``make bootstrap``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.apps.support import js_client, server
from tests.support import DOCS_ROOT

# Each extra, and what importing shows it installed: its packages and our module that needs them.
EXTRAS = {
    "nats": "nats",
    "pydantic": "pydantic",
    "prometheus": "prometheus_client, phoenix_channels.metrics",
    "otel": "opentelemetry.trace, phoenix_channels.tracing",
    "gunicorn": "gunicorn, uvicorn_worker, phoenix_channels.gunicorn",
}

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.packaging


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=540
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")
    return {k: v for k, v in os.environ.items() if k not in drop}


async def test_the_built_wheel_installs_and_serves_the_readme_example(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # --no-isolation: the dev extra provides setuptools and build; no download here.
    await asyncio.to_thread(
        _run, sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT, cwd=tmp_path
    )
    wheels = list(dist.glob("phoenix_channels-*.whl"))
    assert len(wheels) == 1 and list(dist.glob("phoenix_channels-*.tar.gz"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
        metadata = next(wheel.read(n).decode() for n in names if n.endswith("METADATA"))
    assert "phoenix_channels/py.typed" in names
    assert not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names)
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M))
    assert set(EXTRAS) <= extras

    venv = tmp_path / "venv"
    env = _clean_env()
    await asyncio.to_thread(_run, sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    await asyncio.to_thread(
        _run, python, "-m", "pip", "install", "--quiet", f"{wheels[0]}[{','.join(EXTRAS)}]",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    where = await asyncio.to_thread(
        _run, python, "-c",
        f"import phoenix_channels, {', '.join(EXTRAS.values())}; "
        "print(phoenix_channels.__file__)",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert where.strip().startswith(str(venv)), where

    app_dir = tmp_path / "user_app"
    app_dir.mkdir()
    text = (DOCS_ROOT / "README.md").read_text()
    found = re.search(r"```python\n(# app\.py[^\n]*\n.*?)```", text, re.S)
    assert found, "README.md lost its app.py example"
    (app_dir / "app.py").write_text(found.group(1))
    cmd = [str(venv / "bin" / "phoenix-channels"), "serve", "app:endpoint", "--port", "{port}"]
    async with (
        server(cmd, tmp_path, env=env, cwd=app_dir) as srv,
        js_client(srv.url(), "room:lobby") as client,
    ):
        assert (await client.next("joined"))["response"] == {"welcome": "room:lobby"}
        answer = await client.push("echo", {"hi": 1})
        assert (answer["status"], answer["response"]) == ("ok", {"hi": 1})
        await client.push("shout", {"msg": "hey"})
        assert (await client.event("shout"))["payload"] == {"msg": "hey"}
