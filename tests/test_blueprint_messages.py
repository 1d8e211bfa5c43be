"""`crm validate` in the analyst's language: every blueprint error and hint is a message with a
Chinese text in engine/metamodel/locale (same placeholders), none is written as bare English
in the code, and the command prints Chinese under a Chinese locale and English under `C`."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from engine.metamodel import BlueprintInvalid
from engine.metamodel.messages import catalogue
from tests.support.blueprints import load, write_blueprint

ENGINE = Path(__file__).resolve().parent.parent / "engine"
METAMODEL = ENGINE / "metamodel"
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def message_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for module in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Msg":
                calls.append((f"{module.relative_to(ENGINE)}:{node.lineno}", node))
    return calls


def test_every_blueprint_message_has_a_chinese_text_with_the_same_placeholders() -> None:
    zh = catalogue("zh")
    calls = message_calls()
    assert len(calls) > 300  # the validator's errors and hints
    problems = []
    for where, call in calls:
        template = call.args[0] if call.args else None
        if not (isinstance(template, ast.Constant) and isinstance(template.value, str)):
            if "messages.py" not in where:  # Msg's own rebuilding from a pickle
                problems.append(f"{where}: the template is not written out (a catalogue needs it literally)")
            continue
        text = template.value
        if text not in zh:
            problems.append(f"{where}: no Chinese text for {text!r}")
            continue
        named = {keyword.arg for keyword in call.keywords}
        if placeholders(text) != named or placeholders(zh[text]) != named:
            problems.append(f"{where}: placeholders differ for {text!r}")
        words = re.sub(r"\{[a-z_]+\}|docs/[\w./-]+|'[^']*'", "", zh[text])
        if not CHINESE.search(zh[text]) and re.search(r"[a-z]{3,}", words):
            problems.append(f"{where}: the Chinese text of {text!r} is English")
    used = {call.args[0].value for _, call in calls if call.args and isinstance(call.args[0], ast.Constant)}
    problems += [f"the catalogue holds {text!r}, which no code says any more" for text in sorted(set(zh) - used)]
    assert not problems, "\n".join(problems)


def _bare_english(node: ast.expr) -> bool:
    """Text written straight into an error: a non-empty literal or an f-string, outside any call
    (a call such as Msg(...) or did_you_mean(...) returns a message that can be translated)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value != ""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.Call):
        return False
    return any(_bare_english(child) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr))


def test_no_blueprint_error_is_written_as_bare_english() -> None:
    problems = []
    for module in sorted(METAMODEL.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else \
                node.func.attr if isinstance(node.func, ast.Attribute) else ""
            texts: list[ast.expr]
            if name == "BlueprintError":
                texts = node.args[2:4]
            elif name == "error" and isinstance(node.func, ast.Attribute):
                texts = node.args[1:3]
            else:
                continue
            texts += [keyword.value for keyword in node.keywords if keyword.arg in ("message", "hint")]
            if any(_bare_english(text) for text in texts):
                problems.append(f"{module.name}:{node.lineno}")
    assert not problems, "errors written as English text rather than Msg(...): " + ", ".join(problems)


APP = """
    app: shop
    include: ["*.yaml"]
"""
LEAD = """
    entity: lead
    fields:
      name: {type: string, required: true}
      industry: {type: choice, options: {manufacturing: 制造业, retail: 零售}}
    rules_typo: true
"""
RULES = """
    rules:
      - name: grade_manufacturers
        entity: lead
        trigger: {event: created}
        when: "industry == 'manufactoring'"
        actions:
          - set: {industri: A}
"""


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    return write_blueprint(tmp_path / "bp", {"app.yaml": APP, "lead.yaml": LEAD, "rules.yaml": RULES})


def test_the_errors_read_in_chinese_with_the_same_places(broken: Path) -> None:
    with pytest.raises(BlueprintInvalid) as caught:
        load(broken)
    english, chinese = caught.value.text("en"), caught.value.text("zh")
    assert english == str(caught.value)
    assert "unknown option 'rules_typo'" in english and "未知选项“rules_typo”" in chinese
    # the same errors at the same places, in the same order
    assert re.findall(r"\S+\.yaml:\d+:\d+", english) == re.findall(r"\S+\.yaml:\d+:\d+", chinese)
    assert chinese.startswith("蓝图中有 ") and "错误" in chinese.splitlines()[0]
    for line in chinese.splitlines():  # every line says something in Chinese; names and places stay as written
        assert CHINESE.search(line), line


def test_crm_validate_speaks_the_locale(broken: Path) -> None:
    chinese = CliRunner().invoke(cli.main, ["validate", str(broken)], env={"LANG": "zh_CN.UTF-8", "CRM_LANG": ""})
    english = CliRunner().invoke(cli.main, ["validate", str(broken)], env={"LANG": "C.UTF-8", "CRM_LANG": ""})
    assert chinese.exit_code == english.exit_code == 1
    assert "蓝图中有 " in chinese.output and "未知选项“rules_typo”" in chinese.output
    assert "in the blueprint:" in english.output and "unknown option 'rules_typo'" in english.output
    assert not CHINESE.search(english.output.replace("制造业", "").replace("零售", ""))
