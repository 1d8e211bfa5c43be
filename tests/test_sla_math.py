"""SLA math: when warnings, breaches and escalations come due, what pausing does, and the state a
record page shows — all pure, with the Chinese business calendar."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from engine.rules.calendars import BusinessCalendar, CalendarSpec, weekly_hours
from engine.rules.sla import (CheckpointKind, Pause, SlaError, SlaPolicy, SlaStateKind, checkpoint_key,
                              checkpoint_key_prefix, first_checkpoint, shift_for_pause, sla_checkpoints,
                              sla_state)

SHANGHAI = ZoneInfo("Asia/Shanghai")
H, MIN = dt.timedelta(hours=1), dt.timedelta(minutes=1)

LEAD_FOLLOW_UP = SlaPolicy(
    name="lead_follow_up",
    targets=(("S", 2 * H), ("A", 30 * MIN), ("B", 2 * H), ("C", 24 * H)),
    warn_at=(50, 80),
    escalate_at=(200,),
    calendar="china_office",
)
FIRST_RESPONSE = SlaPolicy(name="ticket_first_response", targets=(("P1", 15 * MIN), ("P2", 15 * MIN)),
                           warn_at=(80,), calendar="china_office", default_target=4 * H)


def shanghai(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


@pytest.fixture(scope="module")
def calendar() -> BusinessCalendar:
    return BusinessCalendar(CalendarSpec(name="china_office",
                                         week=weekly_hours({"mon-fri": ["09:00-12:00", "13:30-18:00"]})))


def due_times(checkpoints):
    return {checkpoint.name: checkpoint.due_at for checkpoint in checkpoints}


def test_grade_s_lead_assigned_friday_1730_before_qingming_warns_and_breaches_on_tuesday(calendar):
    checkpoints = sla_checkpoints(LEAD_FOLLOW_UP, shanghai(4, 3, 17, 30), "S", (), calendar)
    assert due_times(checkpoints) == {
        "warning-50": shanghai(4, 7, 9, 30),  # 30 min on Friday + 30 on Tuesday
        "warning-80": shanghai(4, 7, 10, 6),  # 96 minutes
        "breach-100": shanghai(4, 7, 10, 30),
        "escalation-200": shanghai(4, 7, 14, 0),  # 4 h: 30 min Friday, the 3 h morning, 30 min after lunch
    }
    assert [c.kind for c in checkpoints] == [CheckpointKind.WARNING, CheckpointKind.WARNING,
                                             CheckpointKind.BREACH, CheckpointKind.ESCALATION]
    assert all(c.due_at.tzinfo == dt.timezone.utc for c in checkpoints)


def test_a_new_cycle_schedules_its_first_warning_and_knows_its_breach_time(calendar):
    """What a new clock writes (its first timer, its due time) without working out the rest."""
    first, breach = first_checkpoint(LEAD_FOLLOW_UP, shanghai(4, 3, 17, 30), "S", (), calendar)
    assert (first.name, first.due_at, breach) == ("warning-50", shanghai(4, 7, 9, 30), shanghai(4, 7, 10, 30))
    no_warnings = SlaPolicy(name="silent_overdue", targets=(), default_target=dt.timedelta(days=3), warn_at=(),
                            business_time=False)
    first, breach = first_checkpoint(no_warnings, shanghai(9, 30, 18), None)
    assert (first.name, first.due_at, breach) == ("breach-100", shanghai(10, 3, 18), shanghai(10, 3, 18))
    assert first_checkpoint(FIRST_RESPONSE, shanghai(10, 12, 10), "P1", [Pause(shanghai(10, 12, 10, 5))],
                            calendar) == (None, None)  # paused from the start: nothing is due


def test_grade_a_lead_has_thirty_business_minutes(calendar):
    checkpoints = sla_checkpoints(LEAD_FOLLOW_UP, shanghai(4, 7, 11, 50), "A", (), calendar)
    assert due_times(checkpoints)["breach-100"] == shanghai(4, 7, 13, 50)  # lunch does not count


def test_wall_clock_policy_counts_every_minute():
    silent = SlaPolicy(name="silent_overdue", targets=(), default_target=dt.timedelta(days=3),
                       warn_at=(), business_time=False)
    (breach,) = sla_checkpoints(silent, shanghai(9, 30, 18), None)
    assert breach.due_at == shanghai(10, 3, 18)  # straight through the National Day holiday


def test_pausing_and_resuming_shifts_every_checkpoint_by_the_paused_business_time(calendar):
    opened = shanghai(10, 12, 10, 0)
    before = due_times(sla_checkpoints(FIRST_RESPONSE, opened, "P1", (), calendar))
    assert before["breach-100"] == shanghai(10, 12, 10, 15)
    waiting = Pause(shanghai(10, 12, 10, 5), shanghai(10, 12, 10, 20))  # "waiting for customer"
    after = due_times(sla_checkpoints(FIRST_RESPONSE, opened, "P1", [waiting], calendar))
    assert after["breach-100"] == shanghai(10, 12, 10, 30)
    assert after["warning-80"] == shanghai(10, 12, 10, 27)
    assert shift_for_pause(before["breach-100"], waiting, FIRST_RESPONSE, calendar) == after["breach-100"]


def test_a_pause_over_lunch_and_the_night_shifts_only_by_working_minutes(calendar):
    opened = shanghai(10, 12, 17, 50)
    waiting = Pause(shanghai(10, 12, 17, 55), shanghai(10, 13, 9, 30))  # 5 working minutes Monday, 30 Tuesday
    (warning, breach) = sla_checkpoints(FIRST_RESPONSE, opened, "P1", [waiting], calendar)
    assert breach.due_at == shanghai(10, 13, 9, 40)  # 5 min Monday, then 10 min after the pause
    original = sla_checkpoints(FIRST_RESPONSE, opened, "P1", (), calendar)[1].due_at
    assert original == shanghai(10, 13, 9, 5)
    assert shift_for_pause(original, waiting, FIRST_RESPONSE, calendar) == breach.due_at


def test_a_pause_after_the_due_time_does_not_move_it(calendar):
    due = shanghai(10, 12, 10, 15)
    late = Pause(shanghai(10, 12, 11), shanghai(10, 12, 15))
    assert shift_for_pause(due, late, FIRST_RESPONSE, calendar) == due


def test_while_paused_nothing_is_scheduled_and_the_state_says_paused(calendar):
    opened = shanghai(10, 12, 10, 0)
    open_pause = [Pause(shanghai(10, 12, 10, 5))]
    assert sla_checkpoints(FIRST_RESPONSE, opened, "P1", open_pause, calendar) == []
    status = sla_state(shanghai(10, 12, 16), FIRST_RESPONSE, opened, "P1", open_pause, calendar)
    assert status.state is SlaStateKind.PAUSED
    assert status.due_at is None and status.remaining == 10 * MIN
    with pytest.raises(SlaError, match="finished pause"):
        shift_for_pause(shanghai(10, 12, 10, 15), open_pause[0], FIRST_RESPONSE, calendar)


def test_state_moves_from_on_track_to_warning_to_breached(calendar):
    assigned = shanghai(4, 3, 17, 30)
    def state_at(moment):
        return sla_state(moment, LEAD_FOLLOW_UP, assigned, "S", (), calendar)

    on_track = state_at(shanghai(4, 3, 17, 45))
    assert on_track.state is SlaStateKind.ON_TRACK
    assert on_track.remaining == 105 * MIN and on_track.due_at == shanghai(4, 7, 10, 30)
    over_the_holiday = state_at(shanghai(4, 5, 12))
    assert over_the_holiday.state is SlaStateKind.ON_TRACK and over_the_holiday.remaining == 90 * MIN
    assert state_at(shanghai(4, 7, 9, 30)).state is SlaStateKind.WARNING
    breached = state_at(shanghai(4, 7, 11))
    assert breached.state is SlaStateKind.BREACHED
    assert breached.remaining == -30 * MIN  # 30 business minutes overdue
    assert breached.percent_used == 125


def test_stopped_clock_reports_whether_the_target_was_met(calendar):
    opened = shanghai(10, 12, 10, 0)
    met = sla_state(shanghai(10, 12, 16), FIRST_RESPONSE, opened, "P1", (), calendar, stopped_at=shanghai(10, 12, 10, 9))
    assert met.state is SlaStateKind.STOPPED and met.met is True and met.elapsed == 9 * MIN
    missed = sla_state(shanghai(10, 12, 16), FIRST_RESPONSE, opened, "P1", (), calendar, stopped_at=shanghai(10, 12, 10, 40))
    assert missed.state is SlaStateKind.STOPPED and missed.met is False and missed.remaining == -25 * MIN


def test_checkpoint_keys_survive_rescheduling_and_differ_per_checkpoint_record_and_cycle(calendar):
    opened = shanghai(10, 12, 10, 0)
    plain = sla_checkpoints(FIRST_RESPONSE, opened, "P1", (), calendar)
    paused = sla_checkpoints(FIRST_RESPONSE, opened, "P1", [Pause(shanghai(10, 12, 10, 5), shanghai(10, 12, 10, 20))], calendar)
    keys = [checkpoint_key(FIRST_RESPONSE.name, "ticket", 42, opened, c) for c in plain]
    assert keys == [checkpoint_key(FIRST_RESPONSE.name, "ticket", 42, opened, c) for c in paused]
    assert [c.due_at for c in plain] != [c.due_at for c in paused]
    assert len(set(keys)) == 2
    assert keys[1] == "sla:ticket_first_response:ticket:42:20261012T020000.000000Z:breach-100"
    assert checkpoint_key(FIRST_RESPONSE.name, "ticket", 43, opened, plain[1]) != keys[1]
    restarted = opened + dt.timedelta(days=1)
    assert checkpoint_key(FIRST_RESPONSE.name, "ticket", 42, restarted, plain[1]) != keys[1]
    record_prefix = checkpoint_key_prefix(FIRST_RESPONSE.name, "ticket", 42)  # cancels every cycle of ticket 42
    assert all(key.startswith(record_prefix) for key in keys)
    assert not checkpoint_key(FIRST_RESPONSE.name, "ticket", 420, opened, plain[1]).startswith(record_prefix)
    assert keys[0].startswith(checkpoint_key_prefix(FIRST_RESPONSE.name, "ticket", 42, opened))
    assert not keys[0].startswith(checkpoint_key_prefix(FIRST_RESPONSE.name, "ticket", 42, restarted))


def test_unknown_tier_uses_the_default_or_names_the_known_tiers(calendar):
    (_, breach) = sla_checkpoints(FIRST_RESPONSE, shanghai(10, 12, 9), "P4", (), calendar)
    assert breach.due_at == shanghai(10, 12, 14, 30)  # default 4 h: 3 in the morning, 1 after lunch
    with pytest.raises(SlaError, match=r"no target for tier 'X' \(known: S, A, B, C\)"):
        sla_checkpoints(LEAD_FOLLOW_UP, shanghai(10, 12, 9), "X", (), calendar)


def test_business_time_policy_without_a_calendar_is_an_error():
    with pytest.raises(SlaError, match="pass its calendar 'china_office'"):
        sla_checkpoints(LEAD_FOLLOW_UP, shanghai(10, 12, 9), "S")


@pytest.mark.parametrize("options, message", [
    ({"targets": (("S", dt.timedelta(0)),)}, "longer than zero"),
    ({"targets": (("S", H),), "warn_at": (120,)}, "between 1 and 99"),
    ({"targets": (("S", H),), "escalate_at": (90,)}, "after the breach"),
    ({"targets": ()}, "no target"),
])
def test_policy_mistakes_are_refused_with_the_fix(options, message):
    with pytest.raises(SlaError, match=message):
        SlaPolicy(name="broken", **options)


def test_a_view_stops_a_clock_only_through_a_matching_viewed_by_stop():
    from engine.metamodel.labels import Label
    from engine.metamodel.clocks import ClockTrigger, StopCondition
    from engine.metamodel.sla import SlaSpec
    from engine.rules.cadences import ClockSnapshot, Move
    from engine.rules.sla import decide_sla
    now = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.timezone.utc)
    never = lambda *_: False  # noqa: E731

    def spec(who: str) -> SlaSpec:
        return SlaSpec("first_look", Label.of("first look"), "lead", (), None, ClockTrigger("assigned"),
                       stops=(StopCondition("viewed_by", values=(who,)),))
    record = {"id": 1, "owner": 7, "status": "new"}
    running = ClockSnapshot(now, "running")
    assert decide_sla(spec("owner"), running, "viewed", record, record, now, never, viewer=7).move is Move.STOP
    assert decide_sla(spec("owner"), running, "viewed", record, record, now, never, viewer=8).move is Move.NONE
    assert decide_sla(spec("anyone"), running, "viewed", record, record, now, never, viewer=8).move is Move.STOP
    stopped = ClockSnapshot(now, "stopped")
    assert decide_sla(spec("anyone"), stopped, "viewed", record, record, now, never, viewer=7).move is Move.NONE
