"""A bar chart over a period shows each group's figure beside the previous period's, on the
chart and in its table, and the previous figure's link opens exactly the records it counts."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import pytest

from engine.rules import FakeClock
from engine.runtime.records.actors import SYSTEM
from tests.support.analytics_blueprint import OWNERS, build_world
from tests.support.dashboard_pages import list_total, signed_in

OCTOBER = dt.datetime(2026, 10, 14, 3, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def world(make_engine: Any, clock: FakeClock) -> Any:
    runtime, people, ids = build_world(make_engine, clock)
    now = clock.now()
    clock.set(OCTOBER)  # last month: three deals of wang's, one of zhao's (another team)
    for index, owner in enumerate(("wang", "wang", "wang", "zhao")):
        runtime.records.create("opportunity", {"name": f"十月商机{index}", "owner": people[owner].id,
                                               "amount": 5000}, actor=SYSTEM)
    clock.set(now)
    return runtime, people, ids


def rows_of(page: str, widget: str) -> list[list[tuple[str, str]]]:
    """Each table row of the widget as its (href, number) links."""
    section = page.split(f'id="w-{widget}"', 1)[1].split("</section>", 1)[0]
    table = section.split("<table", 1)[1]
    return [[(html.unescape(href), text) for href, text in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', row)
             if not href.startswith("/dashboards/")] for row in table.split("<tr")[2:]]


@pytest.mark.parametrize("who, expected", [
    ("wang", {"王磊": (OWNERS.count("wang"), 3)}),
    ("zhou", {"王磊": (OWNERS.count("wang"), 3), "李娜": (OWNERS.count("li"), 0)})])
def test_each_bar_has_the_previous_periods_figure_linking_to_its_records(world: Any, who: str,
                                                                        expected: dict[str, tuple[int, int]]) -> None:
    runtime, _, _ = world
    client = signed_in(runtime, who)
    page = client.get("/dashboards/pipeline?period=month").text
    assert "上期" in page.split('id="w-per_rep"', 1)[1].split("</section>", 1)[0]
    rows = rows_of(page, "per_rep")
    assert len(rows) == len(expected)
    for row in rows:
        (now_url, now), (then_url, then) = row
        name = next(person for person in expected if f"{person}: {now}" in page)
        assert (int(now), int(then)) == expected[name]
        assert list_total(client, now_url) == int(now) and list_total(client, then_url) == int(then)
    svg = page.split('<svg role="img" aria-label="各销售商机数"', 1)[1].split("</svg>", 1)[0]
    assert "上期" in svg and "赵强" not in page  # the legend names the previous period; no other team's rep
    assert svg.count('xlink:href="/opportunity?') == 2 * len(expected)


def test_a_snapshot_bar_has_no_previous_period(world: Any) -> None:
    runtime, _, _ = world
    page = signed_in(runtime, "zhou").get("/dashboards/pipeline?period=all").text
    assert all("上期" not in str(row) and "created_at__gte" not in str(row) for row in rows_of(page, "per_rep"))
    assert "上期" not in page.split('id="w-per_rep"', 1)[1].split("</section>", 1)[0]
