"""Shared fixtures, and the CI rule: under CI=true a skipped integration or interop test fails.

A skip there means a real part (node-opcua, mbpoll, a server) was missing, and CI must not pass
without having talked to it.
"""

from __future__ import annotations

import os
import socket

import pytest

_STRICT_MARKERS = ("integration", "interop")


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _ci() and any(item.get_closest_marker(m) for m in _STRICT_MARKERS):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: integration/interop test skipped, which counts as a failure: {reason}"
