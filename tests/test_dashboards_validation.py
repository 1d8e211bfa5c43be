"""A job whose message links to a dashboard the blueprint does not declare is refused at load,
at the jobs file's line, with the closest declared name suggested — not when Monday's brief is sent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.metamodel import BlueprintInvalid
from tests.support.blueprints import SHIPPED_CRM, load


def _crm_with_jobs_edit(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """A copy of the shipped CRM with one line of jobs.yaml changed; returns the file and the 1-based line."""
    shutil.copytree(SHIPPED_CRM.parent, tmp_path / "blueprints")  # crm includes ../service
    folder = tmp_path / "blueprints" / "crm"
    jobs = folder / "jobs.yaml"
    lines = jobs.read_text(encoding="utf-8").splitlines(keepends=True)
    index = next(number for number, text in enumerate(lines) if text.strip() == old)
    lines[index] = lines[index].replace(old, new)
    jobs.write_text("".join(lines), encoding="utf-8")
    return jobs, index + 1


def test_a_job_naming_an_unknown_dashboard_fails_at_load_with_its_line(tmp_path: Path) -> None:
    jobs, line = _crm_with_jobs_edit(tmp_path, "dashboard: rep_home", "dashboard: rep_hmoe")
    with pytest.raises(BlueprintInvalid) as caught:
        load(jobs.parent)
    errors = [str(error) for error in caught.value.errors]
    assert len(errors) == 1, errors
    assert f"jobs.yaml:{line}:" in errors[0]
    assert "unknown dashboard 'rep_hmoe'" in errors[0] and "did you mean 'rep_home'?" in errors[0]


def test_a_job_naming_a_declared_dashboard_loads_and_keeps_the_link(tmp_path: Path) -> None:
    jobs, _ = _crm_with_jobs_edit(tmp_path, "dashboard: rep_home", "dashboard: manager_home")
    model = load(jobs.parent)
    assert model.job("rep_weekly_brief").dashboard == "manager_home"
    assert model.dashboard("manager_home").name == "manager_home"
