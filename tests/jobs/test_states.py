"""The job state machine, pair by pair, and the status filters (pure, no runtime)."""

import pytest

from amp_runtime.jobs import states
from amp_runtime.jobs.states import Event, IllegalTransition

S, R, C, ST, SR, SG, F = "Scheduled", "Running", "Completed", "Stopped", "StopRequested", "Stopping", "Failed"

# Written out independently of states.TRANSITIONS: every legal (status, event) -> status.
EXPECTED = {
    (S, Event.START): R,
    (R, Event.COMPLETE): C,
    (S, Event.FAIL): F,
    (R, Event.FAIL): F,
    (SG, Event.FAIL): F,
    (S, Event.REQUEST_STOP): SR,
    (R, Event.REQUEST_STOP): SR,
    (SR, Event.REQUEST_STOP): SR,
    (SG, Event.REQUEST_STOP): SG,
    (C, Event.REQUEST_STOP): C,
    (ST, Event.REQUEST_STOP): ST,
    (F, Event.REQUEST_STOP): F,
    (SR, Event.BEGIN_STOPPING): SG,
    (SR, Event.FINISH_STOPPING): ST,
    (SG, Event.FINISH_STOPPING): ST,
}


@pytest.mark.parametrize("status", states.STATUSES)
@pytest.mark.parametrize("event", list(Event))
def test_every_status_event_pair(status, event):
    if (status, event) in EXPECTED:
        assert states.apply(status, event) == EXPECTED[(status, event)]
    else:
        with pytest.raises(IllegalTransition):
            states.apply(status, event)


def test_statuses_are_exactly_the_contracts_spelling():
    assert set(states.STATUSES) == {S, R, C, ST, SR, SG, F}
    assert states.TERMINAL == {C, ST, F}


def test_terminal_states_never_leave():
    for status in states.TERMINAL:
        for event in Event:
            try:
                assert states.apply(status, event) == status
            except IllegalTransition:
                pass


def test_status_filter_words():
    assert states.parse_status_filter(None) == states.ACTIVE
    assert states.parse_status_filter("ACTIVE") == states.ACTIVE
    assert states.parse_status_filter("All") == set(states.STATUSES)
    assert states.parse_status_filter("scheduled, RUNNING,stoprequested") == {S, R, SR}
    for bad in ("", "running,", "done", "active,running"):
        with pytest.raises(ValueError):
            states.parse_status_filter(bad)


def test_unworkable_jobs_config_is_refused_naming_the_keys(tmp_path):
    from amp_runtime.config import ConfigError
    from amp_runtime.runtime import Runtime

    from ..helpers import make_config

    with pytest.raises(ConfigError, match=r"jobs\.batch_blocks.*jobs\.continuous_blocks_per_s"):
        Runtime(make_config(tmp_path, jobs={"batch_blocks": 0, "continuous_blocks_per_s": 0.0}))
