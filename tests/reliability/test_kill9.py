"""Item 1 (a few trials in CI; ``python benchmarks/reliability/kill9_trials.py`` runs 20+):
kill -9 of the orchestrator at seeded random moments — tasks.json always loads and validates,
a rerun finishes the remaining tasks, no task that had passed is run again or counted twice,
no agent process of the killed run survives the rerun, the dead run is reported as dead.
See tests/reliability/kill9.py for one trial, step by step."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import prefect_api_url
from tests.reliability.kill9 import run_trial


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_kill_9_of_the_orchestrator_loses_nothing_and_leaves_nothing(tmp_path, seed):
    trial = run_trial(seed, tmp_path, prefect_api_url())
    print(trial.line())
    assert trial.ok, trial.to_dict()
