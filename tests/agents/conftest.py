"""Fixtures shared by the process-runner tests."""

from tests.agents.test_process import tag  # noqa: F401 - the fixture, for test_watchdog
