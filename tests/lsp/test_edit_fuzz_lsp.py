"""Random incremental edits and requests at random (also out-of-range) positions through the
protocol: no crash, no unanswered request, final diagnostics equal a fresh server's. A few
examples here; `python bench/edit_fuzz.py` is the long version (>= 10,000 edits)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from bench.edit_fuzz import Session, scenario
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def session():
    session = Session.start(ROOT)
    yield session
    session.close()


# Deterministic examples (derandomize): the same ones every run, so a loaded machine can only make
# this slower, never different. No deadline: timing is not what is tested.
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=scenario(max_steps=20))
def test_random_edits_and_requests(session, case):
    session.replay(*case)


def test_the_examples_had_power(session):
    """(Runs after the examples above, on the same session.) Some final texts parsed, so their
    diagnostics were compared with a fresh server's; many edits and requests were made."""
    assert session.compared >= 3 and session.edits >= 100 and session.requests >= 100, vars(session)
