"""Dashboards on screen: the role's home page, every figure a link to the list of exactly the
records it counts (the list page's own total), a rep who sees only his own numbers in cards,
charts, drill-downs and exports, CSV and XLSX exports, and clear refusals."""

from __future__ import annotations

import html
import io
import re
from typing import Any

import pytest
from python_calamine import CalamineWorkbook

from engine.rules import FakeClock
from tests.support.analytics_blueprint import OWNERS, build_world
from tests.support.dashboard_pages import list_total, signed_in


@pytest.fixture
def world(make_engine: Any, clock: FakeClock) -> Any:
    return build_world(make_engine, clock)


def figure_links(page: str, widget: str) -> list[tuple[str, str]]:
    """(href, number) of every figure in the widget's table."""
    section = page.split(f'id="w-{widget}"', 1)[1].split("</section>", 1)[0]
    table = section.split("<table", 1)[1] if "<table" in section else ""
    return [(html.unescape(href), text) for href, text in re.findall(r'<td[^>]*><a href="([^"]+)"[^>]*>([^<]+)</a>',
                                                                      table)]


def test_the_first_page_after_sign_in_is_the_roles_dashboard_with_svg_charts(world: Any) -> None:
    runtime, _, _ = world
    client = signed_in(runtime, "zhou")
    home = client.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/dashboards/pipeline"
    page = client.get("/dashboards/pipeline").text
    assert '<svg role="img" aria-label="各销售商机数"' in page and "<title>各销售商机数</title>" in page
    assert "xlink:href=\"/opportunity?" in page  # each bar is a link to its records
    assert client.get("/dashboards/charts.css").status_code == 200


@pytest.mark.parametrize("who, team", [("wang", {"wang"}), ("zhou", {"wang", "li"})])
def test_every_figure_opens_a_list_of_exactly_the_records_it_counts(world: Any, who: str, team: set[str]) -> None:
    runtime, _, _ = world
    client = signed_in(runtime, who)
    page = client.get("/dashboards/pipeline?period=month").text
    per_rep = figure_links(page, "per_rep")[::2]  # each rep's row: this period, then the previous one
    assert sorted(int(n) for _, n in per_rep) == sorted(OWNERS.count(name) for name in team)
    health = figure_links(page, "health")  # per stage: entered, left, then days and rates
    counts = [cell for start in range(0, len(health), 7) for cell in health[start:start + 2]]
    assert counts
    for url, number in per_rep + counts:  # the list behind each count says the same total
        assert list_total(client, url) == int(number.replace(",", "")), url
    card = re.search(r'class="card-value[^"]*"><a href="([^"]+)"[^>]*>([0-9,]+)<', page)
    assert card and list_total(client, html.unescape(card.group(1))) == int(card.group(2))


def test_a_rep_never_sees_another_teams_numbers(world: Any) -> None:
    runtime, people, _ = world
    client = signed_in(runtime, "wang")
    page = client.get("/dashboards/pipeline?period=month").text
    assert "赵强" not in page and "李娜" not in page
    stolen = client.get(f"/opportunity?owner={people['zhao'].id}")
    assert list_total(client, f"/opportunity?owner={people['zhao'].id}") == 0 or stolen.status_code == 403
    exported = client.get("/dashboards/pipeline/per_rep.csv?period=month")
    assert exported.status_code == 200 and "王磊" in exported.text and "赵强" not in exported.text
    book = CalamineWorkbook.from_filelike(io.BytesIO(client.get("/dashboards/pipeline/per_rep.xlsx?period=month").content))
    rows = [tuple(row) for row in book.get_sheet_by_index(0).to_python()]
    assert rows[1:] == [("王磊", float(OWNERS.count("wang")))]


def test_bad_period_and_unknown_dashboard_are_clear_refusals(world: Any) -> None:
    runtime, _, _ = world
    client = signed_in(runtime, "zhou")
    bad = client.get("/dashboards/pipeline?period=fortnight")
    assert bad.status_code == 422 and "fortnight" in bad.text
    assert client.get("/dashboards/nothing").status_code == 404
    wrong = client.get("/opportunity?funnel=left:deals:nowhere:all")
    assert wrong.status_code == 422 and "nowhere" in html.unescape(wrong.text)  # the list names the bad filter


def test_crm_metrics_prints_a_widgets_figures_as_csv_and_json(world: Any, db_url: str, tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from cli import main
    runtime, _, _ = world
    folder = tmp_path / "bp"
    runner = CliRunner()
    listed = runner.invoke(main, ["metrics", "--db", db_url, "--blueprint", str(folder)])
    assert listed.exit_code == 0 and "pipeline" in listed.output and "per_rep" in listed.output
    as_json = runner.invoke(main, ["metrics", "--db", db_url, "--blueprint", str(folder), "pipeline", "per_rep",
                                   "--as", "zhou", "--period", "all", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    figures = json.loads(as_json.stdout)
    assert sorted(f["records"] for f in figures) == sorted([OWNERS.count("wang"), OWNERS.count("li")])
    health = runner.invoke(main, ["metrics", "--db", db_url, "--blueprint", str(folder), "pipeline", "health",
                                  "--period", "all", "--format", "csv"])
    assert health.exit_code == 0 and "qualify,0,20," in health.stdout
    wrong = runner.invoke(main, ["metrics", "--db", db_url, "--blueprint", str(folder), "pipeline", "nothing"])
    assert wrong.exit_code == 1 and "has no widget 'nothing'" in wrong.output
