"""Shared test setup.

The run brings what it needs (``tests/services.py``): a private Redis and
NATS on free ports, named by ``PHX_TEST_REDIS_URL``/``PHX_TEST_NATS_URL``
(``make test`` starts them once for pytest and the Node suites; a bare
``pytest`` starts its own), and the programs installed when missing. In CI
(``CI=true``) a skipped test is a failure: a skip there means a missing
install step, not a machine without the service.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from .services import ENV_VARS, private_services

IN_CI = os.environ.get("CI", "").lower() == "true"
_services = contextlib.ExitStack()


def pytest_configure(config: pytest.Config) -> None:
    """Start a private Redis and NATS unless the run was given some (``make test`` does)."""
    if all(os.environ.get(name) for name in ENV_VARS):
        return
    os.environ.update(_services.enter_context(private_services()))


def pytest_unconfigure(config: pytest.Config) -> None:
    _services.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI (CI=true), which is not allowed: {reason}"
