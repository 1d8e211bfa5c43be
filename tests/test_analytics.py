"""Process analytics: stage dwell, conversion, skip and return rates from the stage events,
figures that drill down to exactly the records they count, and a rep who never sees another
team's numbers — on SQLite and PostgreSQL."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import sqlalchemy as sa
from starlette.datastructures import QueryParams

from engine.analytics import period_at
from engine.engine import Engine
from engine.metamodel.dashboards import StageValue
from engine.runtime.records.actors import SYSTEM, Actor
from engine.runtime.records.queries import parse_list_query
from engine.rules import FakeClock
from tests.support.analytics_blueprint import OWNERS, PATH, build_world, walk


def _move_kind(source: str, target: str) -> str:
    if target == "lost":
        return "lose"
    step = PATH.index(target) - PATH.index(source)
    return "forward" if step == 1 else "skip" if step > 1 else "back"


def expected(owners: set[str]) -> dict[str, dict[str, Any]]:
    """Per stage, by hand from WALKS: who entered and left it, the stays' days, the onward,
    skipping and returning records."""
    stays: dict[str, list[float]] = defaultdict(list)
    sets: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for index, owner in enumerate(OWNERS):
        if owner not in owners:
            continue
        stage = "qualify"
        for days, target in walk(index):
            kind = _move_kind(stage, target)
            stays[stage].append(days)
            sets[stage]["left"].add(index)
            sets[target]["entered"].add(index)
            if kind in ("forward", "skip"):
                sets[stage]["onward"].add(index)
            if kind == "skip":
                sets[stage]["skip"].add(index)
            if kind == "back":
                sets[stage]["return"].add(index)
            stage = target
    result: dict[str, dict[str, Any]] = {}
    for stage in [*PATH, "lost"]:
        days = sorted(stays[stage])
        left = len(sets[stage]["left"])
        result[stage] = {
            "entered": len(sets[stage]["entered"]), "left": left,
            "dwell_mean": sum(days) / len(days) if days else None,
            "dwell_median": days[(len(days) + 1) // 2 - 1] if days else None,
            "conversion": len(sets[stage]["onward"]) / left if left else None,
            "skip_rate": len(sets[stage]["skip"]) / left if left else None,
            "return_rate": len(sets[stage]["return"]) / left if left else None,
            "ids": {what: sets[stage][what] for what in ("entered", "left", "onward", "skip", "return")},
        }
    return result


@pytest.fixture
def world(make_engine: Any, clock: FakeClock) -> tuple[Engine, dict[str, Actor], list[int]]:
    return build_world(make_engine, clock)


def test_the_fixture_has_about_two_hundred_events(world: Any) -> None:
    runtime, _, _ = world
    with runtime.db.read() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(runtime.schema.events)).scalar_one()
    assert 140 <= count <= 260  # 20 created, 64 moves × (updated + stage_changed)


def test_dwell_conversion_skip_and_return_rates_equal_the_hand_computed_ones(world: Any) -> None:
    runtime, people, ids = world
    funnel = runtime.model.funnel("deals")
    period = period_at("month", runtime.clock.now(), "Asia/Shanghai")
    cells = runtime.analytics.stage_cells(funnel, actor=SYSTEM, period=period, filters={})[None]
    wanted = expected({"wang", "li", "zhao"})
    # a few figures written out by hand: qualify is left by all 20, C's 4 skip it; B's 4 return from quote
    assert cells["qualify"].left == 20 and cells["qualify"].skipped == 4
    assert cells["quote"].returned == 4 and cells["demo"].entered == 16
    for stage, want in wanted.items():
        cell = cells[stage]
        assert (cell.entered, cell.left) == (want["entered"], want["left"]), stage
        for name in ("dwell_mean", "dwell_median", "conversion", "skip_rate", "return_rate"):
            got, hand = cell.value(StageValue(name)), want[name]
            assert (got is None and hand is None) or got == pytest.approx(hand), (stage, name, got, hand)


def test_a_heat_map_per_rep_shows_each_reps_own_hand_computed_figure(world: Any) -> None:
    """A heat map's rows compute only the value the map shows: each value alone, per rep, equals
    the hand computation over that rep's deals."""
    runtime, people, _ = world
    funnel = runtime.model.funnel("deals")
    period = period_at("month", runtime.clock.now(), "Asia/Shanghai")
    for value in StageValue:
        rows = runtime.analytics.stage_cells(funnel, actor=SYSTEM, period=period, filters={}, rows="owner",
                                             values=(value,))
        for name in ("wang", "li", "zhao"):
            wanted = expected({name})
            for stage, want in wanted.items():
                got, hand = rows[people[name].id][stage].value(value), want[value.value]
                if value in (StageValue.ENTERED, StageValue.LEFT):
                    assert got == hand, (value, name, stage)
                else:
                    assert (got is None and hand is None) or got == pytest.approx(hand), (value, name, stage, got, hand)


def _ids_behind(runtime: Engine, url: str, actor: Actor) -> set[int]:
    parts = urlsplit(url)
    entity = parts.path.strip("/")
    params = [*parse_qsl(parts.query), ("per_page", "500")]
    page = runtime.records.list(entity, parse_list_query(runtime.model.entity(entity), QueryParams(params)),
                                actor=actor)
    return {item["id"] for item in page.items}


@pytest.mark.parametrize("who, team", [("wang", {"wang"}), ("zhou", {"wang", "li"}), ("sun", {"zhao"})])
def test_each_stage_figure_drills_down_to_exactly_the_records_it_counts(world: Any, who: str,
                                                                       team: set[str]) -> None:
    runtime, people, ids = world
    funnel = runtime.model.funnel("deals")
    period = period_at("month", runtime.clock.now(), "Asia/Shanghai")
    cells = runtime.analytics.stage_cells(funnel, actor=people[who], period=period, filters={})[None]
    wanted = expected(team)
    for stage, want in wanted.items():
        cell = cells[stage]
        for what in ("entered", "left", "onward", "skip", "return"):
            behind = _ids_behind(runtime, cell.urls[what], people[who])
            assert behind == {ids[index] for index in want["ids"][what]}, (who, stage, what)
        assert (cell.entered, cell.left) == (want["entered"], want["left"])


def test_record_figures_per_rep_drill_down_and_stay_within_the_team(world: Any) -> None:
    runtime, people, ids = world
    widget = runtime.model.dashboard("pipeline").widget("per_rep")
    period = period_at("month", runtime.clock.now(), "Asia/Shanghai")
    for who, team in (("wang", {"wang"}), ("zhou", {"wang", "li"}), ("sun", {"zhao"})):
        figures = runtime.analytics.figures(widget, actor=people[who], period=period, filters={})
        counts = {figure.key: figure.count for figure in figures}
        assert counts == {people[name].id: OWNERS.count(name) for name in team}, who
        for figure in figures:
            owner = next(name for name in team if people[name].id == figure.key)
            assert _ids_behind(runtime, figure.url, people[who]) == {
                ids[index] for index, name in enumerate(OWNERS) if name == owner}


def test_sum_average_median_and_p90_of_amounts_by_industry(world: Any) -> None:
    runtime, people, _ = world
    widget = runtime.model.dashboard("pipeline").widget("amounts")
    period = period_at("month", runtime.clock.now(), "Asia/Shanghai")
    figures = {f.key: f for f in runtime.analytics.figures(widget, actor=people["zhou"], period=period, filters={})}
    # zhou's team owns opportunities 0–14; even ones are manufacturing: 10 000 × (1, 3, …, 15)
    made = sorted(10000 * (index + 1) for index in range(15) if index % 2 == 0)
    count, total, average, median, p90 = figures["manufacturing"].values
    assert (count, total) == (8, sum(made)) and average == pytest.approx(sum(made) / 8)
    assert median == made[3] and p90 == made[7 - 0]  # nearest rank: ⌈8/2⌉ = 4th, ⌈0.9·8⌉ = 8th
    assert figures["retail"].count == 7


def test_a_database_from_before_the_stage_moves_table_gets_them_from_its_events(world: Any) -> None:
    from engine.analytics.metrics import backfill_stage_moves
    runtime, _, _ = world
    funnel = runtime.model.funnel("deals")
    period = period_at("all", runtime.clock.now(), "Asia/Shanghai")
    before = runtime.analytics.stage_cells(funnel, actor=SYSTEM, period=period, filters={})[None]
    with runtime.db.write() as connection:
        connection.execute(runtime.schema.stage_moves.delete())
        assert backfill_stage_moves(connection, runtime.schema) == 64  # every stage_changed event
        assert backfill_stage_moves(connection, runtime.schema) == 0   # once
    after = runtime.analytics.stage_cells(funnel, actor=SYSTEM, period=period, filters={})[None]
    assert {stage: (c.entered, c.left, c.onward, c.skipped, c.returned, c.dwell_mean, c.dwell_median)
            for stage, c in after.items()} == {stage: (c.entered, c.left, c.onward, c.skipped, c.returned,
                                                       c.dwell_mean, c.dwell_median) for stage, c in before.items()}


def test_a_duration_measure_is_the_hours_between_two_moments(world: Any) -> None:
    runtime, people, _ = world
    widget = runtime.model.dashboard("pipeline").widget("age")
    period = period_at("all", runtime.clock.now(), "Asia/Shanghai")
    figures = {f.key: f for f in runtime.analytics.figures(widget, actor=people["zhou"], period=period, filters={})}
    for name in ("wang", "li"):  # hours from creation to the last move: the walk's days × 24, by hand
        hours = sorted(sum(days for days, _ in walk(index)) * 24 for index, owner in enumerate(OWNERS)
                       if owner == name)
        average, median = figures[people[name].id].values
        assert average == pytest.approx(sum(hours) / len(hours), abs=0.01)
        assert median == pytest.approx(hours[(len(hours) + 1) // 2 - 1], abs=0.01)
    assert people["zhao"].id not in figures  # another team's rep: not in zhou's figures


def test_a_team_covering_unowned_records_counts_exactly_those_beside_its_members(make_engine: Any,
                                                                                  clock: FakeClock) -> None:
    """east covers the unowned manufacturing deals: zhou's figures and stage figures hold his reps'
    deals and those, never the unowned retail ones, and each drills down to exactly what it counts
    (the scope is the OR of two branches, which the figures spread over their own conditions)."""
    from tests.support.analytics_blueprint import ROLES
    covering = ROLES + "teams:\n  east: {covers: {opportunity: \"industry == 'manufacturing'\"}}\n  north: {}\n"
    runtime, people, ids = build_world(make_engine, clock, {"roles.yaml": covering})
    unowned = {industry: [runtime.records.create("opportunity", {"name": f"{industry} {n}", "industry": industry,
                                                                "amount": 1000}, actor=SYSTEM).record["id"]
                          for n in range(3)] for industry in ("manufacturing", "retail")}
    for industry in unowned:
        runtime.records.update("opportunity", unowned[industry][0], {"stage": "demo"}, actor=SYSTEM)
    period = period_at("month", runtime.clock.now(), "Asia/Shanghai")
    widget = runtime.model.dashboard("pipeline").widget("per_rep")
    figures = {f.key: f for f in runtime.analytics.figures(widget, actor=people["zhou"], period=period, filters={})}
    assert {key: figure.count for key, figure in figures.items()} == {
        people["wang"].id: 10, people["li"].id: 5, None: 3}
    assert _ids_behind(runtime, figures[None].url, people["zhou"]) == set(unowned["manufacturing"])
    assert _ids_behind(runtime, figures[people["li"].id].url, people["zhou"]) == {
        ids[index] for index, name in enumerate(OWNERS) if name == "li"}
    north = runtime.analytics.figures(widget, actor=people["sun"], period=period, filters={})
    assert {figure.key: figure.count for figure in north} == {people["zhao"].id: 5}
    funnel = runtime.model.funnel("deals")
    cells = runtime.analytics.stage_cells(funnel, actor=people["zhou"], period=period, filters={})[None]
    team_left = expected({"wang", "li"})["qualify"]["ids"]["left"]
    assert _ids_behind(runtime, cells["qualify"].urls["left"], people["zhou"]) == (
        {ids[index] for index in team_left} | {unowned["manufacturing"][0]})
    assert cells["qualify"].left == len(team_left) + 1
    by_rep = runtime.analytics.stage_cells(funnel, actor=people["zhou"], period=period, filters={}, rows="owner",
                                           values=(StageValue.LEFT,))
    assert by_rep[None]["qualify"].left == 1  # the unowned manufacturing deal, in the heat map's unassigned row
    assert sum(row["qualify"].left for row in by_rep.values()) == cells["qualify"].left
