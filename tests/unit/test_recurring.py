"""core/recurring.py: CronJob's rules for due times, concurrency, history and series totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from carbonaware.core.recurring import (
    MAX_MISSED,
    Action,
    Run,
    Schedule,
    ScheduleError,
    Totals,
    child_name,
    concurrency,
    due,
    prune,
    tally,
)
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2024, 3, 1, tzinfo=UTC)
instants = st.integers(0, 60 * 24 * 60).map(lambda m: T0 + timedelta(minutes=m))
HOURLY = Schedule("0 * * * *")


def hours_between(after: datetime, until: datetime) -> list[datetime]:
    """Every whole hour in (after, until], by hand."""
    first = after.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    out = []
    while first <= until:
        out.append(first)
        first += timedelta(hours=1)
    return out


@settings(max_examples=200, deadline=None)
@given(last=instants, ahead=st.integers(0, 60 * 150), deadline_min=st.none() | st.integers(1, 600))
def test_due_is_cronjobs_most_recent_unstarted_time(last, ahead, deadline_min) -> None:
    now = last + timedelta(minutes=ahead)
    limit = None if deadline_min is None else timedelta(minutes=deadline_min)
    got = due(HOURLY, last, now, limit)
    passed = hours_between(last, now)
    assert got.next_time == hours_between(now, now + timedelta(hours=1))[0]
    if not passed:
        assert (got.start, got.missed, got.latest) == (None, 0, None)
        return
    assert got.latest == passed[-1]
    too_late = limit is not None and now - passed[-1] > limit
    assert got.start == (None if too_late else passed[-1])
    if len(passed) <= MAX_MISSED:
        assert got.missed == len(passed) - 1 + too_late
    else:
        assert got.missed >= MAX_MISSED


def test_time_zone_follows_daylight_saving() -> None:
    nightly = Schedule("0 22 * * *", "Europe/Berlin")
    winter = nightly.next_after(datetime(2024, 1, 10, tzinfo=UTC))
    summer = nightly.next_after(datetime(2024, 7, 10, tzinfo=UTC))
    assert (winter.hour, summer.hour) == (21, 20)  # CET = UTC+1, CEST = UTC+2


@pytest.mark.parametrize(
    "cron, zone, fragment",
    [
        ("every night", None, "five-field cron line"),
        ("0 25 * * *", None, "five-field cron line"),
        ("0 22 * * * *", None, "five-field cron line"),
        ("0 22 * * *", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_bad_schedules_say_what_is_wrong(cron, zone, fragment) -> None:
    with pytest.raises(ScheduleError, match=fragment):
        Schedule(cron, zone).check()


@given(policy=st.sampled_from(["Allow", "Forbid", "Replace"]), active=st.integers(0, 5))
def test_concurrency_policy_as_cronjob(policy, active) -> None:
    action = concurrency(policy, active)
    if active == 0 or policy == "Allow":
        assert action is Action.CREATE
    else:
        assert action is (Action.SKIP if policy == "Forbid" else Action.REPLACE)


phases = st.sampled_from(["Succeeded", "Failed", "Waiting", "Running", None])
runs_st = st.lists(
    st.builds(
        Run,
        name=st.text("abcdef", min_size=1, max_size=4),
        scheduled=instants,
        phase=phases,
        energy_kwh=st.floats(0, 10),
        emissions_grams=st.floats(0, 1000),
        baseline_grams=st.floats(0, 1000),
        saved_grams=st.floats(-100, 1000),
        started=st.none() | instants,
        deadline=st.none() | instants,
    ),
    max_size=12,
    unique_by=lambda r: r.name,
)


@given(runs=runs_st, ok=st.integers(0, 4), failed=st.integers(0, 4))
def test_prune_keeps_the_newest_finished_runs_and_every_active_one(runs, ok, failed) -> None:
    doomed = set(prune(runs, ok, failed))
    kept = [r for r in runs if r.name not in doomed]
    assert all(r.finished for r in runs if r.name in doomed)
    assert {r.name for r in runs if not r.finished} <= {r.name for r in kept}
    for phase, limit in (("Succeeded", ok), ("Failed", failed)):
        mine = [r for r in runs if r.phase == phase]
        left = [r for r in kept if r.phase == phase]
        assert len(left) == min(limit, len(mine))
        if left and len(left) < len(mine):  # whatever went is older than what stayed
            oldest_kept = min((r.scheduled, r.name) for r in left)
            assert all((r.scheduled, r.name) < oldest_kept for r in mine if r.name in doomed)


@given(runs=runs_st, split=st.integers(0, 12))
def test_tally_counts_every_finished_run_exactly_once(runs, split) -> None:
    # Two ticks see the runs (the second also sees the first's), a third sees them again.
    first = tally(Totals(), [], runs[:split])
    second = tally(first.totals, first.counted, runs)
    third = tally(second.totals, second.counted, runs)
    finished = [r for r in runs if r.finished]
    assert third.totals == second.totals
    assert second.totals.runs == len(finished)
    assert second.totals.succeeded + second.totals.failed == len(finished)
    assert second.totals.energy_kwh == pytest.approx(sum(r.energy_kwh for r in finished))
    assert second.totals.saved_grams == pytest.approx(sum(r.saved_grams for r in finished))
    assert second.totals.on_time + second.totals.at_deadline == sum(
        r.started is not None for r in finished
    )
    assert set(second.counted) == {r.name for r in finished}
    # A pruned run leaves the list, and is not counted twice if it were seen again.
    gone = tally(second.totals, second.counted, [])
    assert gone.counted == [] and gone.totals == second.totals


@given(a=instants, b=instants)
def test_child_names_are_one_per_scheduled_minute(a, b) -> None:
    assert child_name("nightly", a) == child_name("nightly", a)
    assert (child_name("nightly", a) == child_name("nightly", b)) == (
        a.replace(second=0, microsecond=0) == b.replace(second=0, microsecond=0)
    )


@given(up_to=st.none() | instants, runs=runs_st, created=instants)
def test_the_schedule_resumes_after_everything_recorded_or_created(up_to, runs, created) -> None:
    from carbonaware.core.recurring import resume_point

    point = resume_point(up_to, runs, created)
    assert point >= created and (up_to is None or point >= up_to)
    assert all(r.scheduled <= point for r in runs)
    assert point in {created, up_to, *(r.scheduled for r in runs)}
