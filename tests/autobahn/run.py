"""Run the Autobahn|Testsuite (RFC 6455 conformance) against our fast path.

    .venv/bin/python -m tests.autobahn.run            # the CI selection (385 cases)
    .venv/bin/python -m tests.autobahn.run --all      # every case (adds the slow 12/13 .8-.18)

It installs the suite on first use (``autobahntestsuite`` runs on Python 2.7
only: a virtualenv under ``tests/autobahn/.venv``, git-ignored, reused
afterwards), starts ``tests/autobahn/echo_app.py`` with
``phoenix-channels serve`` on a free loopback port, runs ``wstest -m
fuzzingclient`` against it under ``timeout`` (wstest has no handshake
timeout of its own), and reads the verdicts from the report's
``index.json`` (wstest exits 0 even when cases fail). Exit status 0 only
if every selected case passed. The HTML report is left in
``test-artifacts/autobahn/`` (``--report DIR`` to change it).

A case passes when its behaviour and its closing behaviour are OK or
INFORMATIONAL (a verdict-less case). Anything else fails the run: FAILED,
UNIMPLEMENTED, a close "FAILED BY CLIENT", and NON-STRICT too (what the RFC
allows but does not prefer, e.g. noticing invalid UTF-8 late): every case
passes strictly today, so a NON-STRICT is a regression.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "tests" / "autobahn" / ".venv"
WSTEST = VENV / "bin" / "wstest"
SUITE = "autobahntestsuite==25.10.1"
APP = "tests.autobahn.echo_app:endpoint"

# Sections 12 and 13 (permessage-deflate) cases .8 to .18 send thousands of
# large compressed messages each; they take most of a full run's time. wstest
# turns a pattern into a regex matched at the start of the id: "$" anchors it.
SLOW = [f"{section}.*.{n}$" for section in (12, 13) for n in range(8, 19)]
PASSING = {"OK", "INFORMATIONAL"}


def log(message: str) -> None:
    print(f"autobahn: {message}", flush=True)


def find_python2() -> str:
    home = os.path.expanduser("~")
    candidates = [os.environ.get("AUTOBAHN_PYTHON2", "")]
    candidates += sorted(glob.glob(f"{home}/.pyenv/versions/2.7*/bin/python2.7"), reverse=True)
    candidates += sorted(glob.glob("/root/.pyenv/versions/2.7*/bin/python2.7"), reverse=True)
    candidates += [shutil.which("python2.7") or ""]  # last: a pyenv shim may not run
    for candidate in candidates:
        if not (candidate and os.access(candidate, os.X_OK)):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; assert sys.version_info[0] == 2"], capture_output=True
        )
        if probe.returncode == 0:
            return candidate
    raise SystemExit(
        "autobahn: no Python 2.7 found (autobahntestsuite needs it). Set AUTOBAHN_PYTHON2 "
        "to a python2.7 binary, e.g. one installed with `pyenv install 2.7.18`."
    )


def install() -> None:
    """Create the Python 2.7 virtualenv with the suite, once."""
    if WSTEST.exists():
        return
    python2 = find_python2()
    log(f"installing {SUITE} into {VENV.relative_to(ROOT)} with {python2}")
    quiet = ["--quiet", "--disable-pip-version-check"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.mkdir(parents=True)
    with open(VENV / "install.log", "wb") as out:  # pip 19 on 2.7 is noisy
        for command in (
            [python2, "-m", "pip", "install", *quiet, "virtualenv<20.22"],
            [python2, "-m", "virtualenv", "-q", str(VENV)],
            [str(VENV / "bin" / "pip"), "install", *quiet, SUITE],
        ):
            if subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise SystemExit(
                    f"autobahn: `{' '.join(command)}` failed; see {VENV / 'install.log'}"
                )
    if not WSTEST.exists():
        raise SystemExit(f"autobahn: {SUITE} installed, but {WSTEST} is missing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    server_log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phoenix_channels",
            "serve",
            APP,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"autobahn: the echo server exited early; see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"autobahn: the echo server did not listen within 20 s; see {log_path}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def verdicts(report_dir: Path) -> dict[str, dict[str, str]]:
    index = json.loads((report_dir / "index.json").read_text())
    if len(index) != 1:
        raise SystemExit(f"autobahn: expected one agent in index.json, found {list(index)}")
    return next(iter(index.values()))  # type: ignore[no-any-return]


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="run every case, slow ones included")
    parser.add_argument("--cases", nargs="*", help="case ids or patterns (default: the selection)")
    parser.add_argument(
        "--timeout",
        type=int,
        default=0,
        help="seconds for wstest (default 300 for the selection, 3600 for --all)",
    )
    parser.add_argument("--report", type=Path, default=ROOT / "test-artifacts" / "autobahn")
    args = parser.parse_args(argv)

    install()
    report = args.report.resolve()
    shutil.rmtree(report, ignore_errors=True)
    (report / "reports").mkdir(parents=True)
    port = free_port()
    config = {
        "outdir": str(report / "reports"),
        "servers": [{"agent": "phoenix-channels", "url": f"ws://127.0.0.1:{port}/echo/websocket"}],
        "cases": args.cases or ["*"],
        "exclude-cases": [] if args.all or args.cases else SLOW,
        "exclude-agent-cases": {},
    }
    (report / "fuzzingclient.json").write_text(json.dumps(config, indent=2))
    limit = args.timeout or (3600 if args.all else 300)
    server = start_server(port, report / "server.log")
    started = time.monotonic()
    try:
        with open(report / "wstest.log", "wb") as wstest_log:
            run = subprocess.run(
                [
                    "timeout",
                    "--kill-after=10",
                    str(limit),
                    str(WSTEST),
                    "-m",
                    "fuzzingclient",
                    "-s",
                    str(report / "fuzzingclient.json"),
                ],
                cwd=report,
                stdout=wstest_log,
                stderr=subprocess.STDOUT,
            )
    finally:
        stop_server(server)
    elapsed = time.monotonic() - started
    if run.returncode == 124:
        log(f"wstest did not finish within {limit} s; see {report / 'wstest.log'}")
        return 1
    if not (report / "reports" / "index.json").exists():
        log(f"wstest wrote no index.json (exit {run.returncode}); see {report / 'wstest.log'}")
        return 1
    results = verdicts(report / "reports")
    failed = []
    counts: dict[str, int] = {}
    for case_id in sorted(results, key=case_key):
        result = results[case_id]
        behavior, close = result["behavior"], result["behaviorClose"]
        counts[behavior] = counts.get(behavior, 0) + 1
        if behavior not in PASSING or close not in PASSING:
            failed.append(f"{case_id}: {behavior} (close: {close})")
    for line in failed:
        log(f"FAILED case {line}")
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    log(f"{len(results)} cases in {elapsed:.0f} s ({summary}); report: {report}/reports/index.html")
    print(f"autobahn: {len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
