"""Extension points are declared: every hook is documented where it is declared and in
docs/plugins.md; the engine's own field kinds, widgets, functions and channels register through
the same hooks as a plugin's; a plugin's field type, expression function, action verb and
channel type work end to end — accepted by the blueprint loader and `crm validate` when the
plugin is there, refused at file:line (naming what is known) when it is not.

Plugins defined here are registered in-process (`load_extensions(extra=[…])`, what an entry
point does for an installed package); the example `crm-discord` is installed for real
(./run.sh test installs it) and reaches a real loopback receiver.
"""

from __future__ import annotations

import dataclasses
import decimal
import http.server
import importlib.metadata
import inspect
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import cli
from engine.engine import Engine, open_engine
from engine.extensions import BUILTIN_PLUGINS, Extensions, load_extensions
from engine.metamodel import BlueprintInvalid, FieldSpec, FieldType, load_blueprint
from engine.metamodel.channels import CHANNEL_TYPES
from engine.plugins import ENTRY_POINT_GROUP, PluginError, hookimpl, hookspecs, plugin_manager
from engine.rules import FUNCTION_NAMES, FakeClock
from engine.rules.actions import ActionCall, AddTags, CreateRelated, SetField
from engine.rules.functions import ExpressionFunction, FunctionDoc
from engine.runtime.background.outbox import list_messages
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from engine.runtime.records.errors import ValidationFailed
from engine.runtime.records.fieldkinds import DecimalKind, FieldError
from tests.support.blueprints import write_blueprint
from tests.support.services import IN_CI

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name, value in vars(hookspecs).items()
               if inspect.isfunction(value) and hasattr(value, f"{hookspecs.PROJECT}_spec"))

APP = {"app.yaml": "app: t\ninclude: ['*.yaml']\n"}
LEAD = """
    entity: lead
    fields:
      name: {type: string, required: true}
      phone: {type: phone}
      phone_shown: {type: string}
      priority: {type: choice, options: {normal: Normal, high: High}, default: normal}
      tags: {type: tags}
      reason: {type: text}
"""


# --------------------------------------------------------------------------- the hooks themselves

def test_every_hook_has_a_one_line_docstring_saying_what_to_return() -> None:
    assert {"crm_field_kinds", "crm_widgets", "crm_functions", "crm_actions", "crm_channels"} <= set(HOOKS)
    for name in HOOKS:
        doc = (getattr(hookspecs, name).__doc__ or "").strip()
        assert doc, f"hook {name} has no docstring"
        assert "\n" not in doc and doc.startswith("Return"), f"hook {name}: one line saying what to return"


def test_docs_list_every_hook_and_the_readme_and_screens_guide_link_them() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for name in HOOKS:
        assert f"`{name}`" in guide, f"docs/plugins.md does not document the hook {name}"
    assert "docs/plugins.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "plugins.md" in (ROOT / "docs" / "screens.md").read_text(encoding="utf-8")


def test_the_engines_own_implementations_register_through_the_same_hooks() -> None:
    manager = plugin_manager(BUILTIN_PLUGINS, load_installed=False)
    registered = {hook: {impl.plugin for impl in getattr(manager.hook, hook).get_hookimpls()} for hook in HOOKS}
    assert all(registered[hook] for hook in HOOKS if hook != "crm_actions"), registered
    builtin = load_extensions(load_installed=False)
    assert set(builtin.field_kinds.by_name) == {kind.value for kind in FieldType}
    assert set(builtin.widgets.defaults) == set(FieldType)
    assert builtin.functions.names == FUNCTION_NAMES
    assert builtin.channels.names == set(CHANNEL_TYPES)
    assert not builtin.actions.by_name  # the built-in verbs are the vocabulary plugin verbs answer with
    assert builtin.vocabulary.channel_types == set(CHANNEL_TYPES) and not builtin.vocabulary.actions


# --------------------------------------------------------------------------- plugins defined here

class MaskedPhone:
    """An expression function pack with one function."""

    @hookimpl
    def crm_functions(self) -> Sequence[ExpressionFunction]:
        """mask_phone()."""
        return [ExpressionFunction("mask_phone", mask_phone,
                                   FunctionDoc("mask_phone(phone)", "the number with its middle four digits hidden"))]


def mask_phone(phone: Any) -> str:
    digits = str(phone or "").removeprefix("+86")
    return f"{digits[:3]}****{digits[7:]}" if len(digits) == 11 else digits


@dataclass(frozen=True)
class Escalate:
    """escalate: {reason: …, level: 1|2}: raise the priority, tag the lead and open a follow-up task."""

    name: str = "escalate"
    schema: Mapping[str, Any] = field(default_factory=lambda: {
        "type": "object", "required": ["reason"], "additionalProperties": False,
        "properties": {"reason": {"type": "string"}, "level": {"type": "integer", "minimum": 1, "maximum": 2}}})

    def apply(self, call: ActionCall) -> Sequence[Any]:
        reason = str(call.options["reason"])
        return (SetField("priority", "high" if call.options.get("level", 1) > 1 else "normal"),
                SetField("reason", reason), AddTags("tags", ("escalated",)),
                CreateRelated("task", "lead", (("title", f"跟进：{call.record.get('name')}（{reason}）"),)))


class Escalation:
    @hookimpl
    def crm_actions(self) -> Sequence[Any]:
        """The escalate verb."""
        return [Escalate()]


class PercentKind(DecimalKind):
    """A share written "12.5%" (or 0.125), stored as the decimal fraction."""

    stored_as = FieldType.DECIMAL

    def parse(self, spec: FieldSpec, value: Any) -> decimal.Decimal:
        text = str(value).strip()
        if text.endswith("%"):
            try:
                return super().parse(spec, decimal.Decimal(text[:-1].strip()) / 100)
            except decimal.InvalidOperation:
                raise FieldError(spec.name, "invalid", f"{spec.name}: '{text}' is not a percentage") from None
        return super().parse(spec, value)


class Percentages:
    @hookimpl
    def crm_field_kinds(self) -> Mapping[str, Any]:
        """The percent field type."""
        return {"percent": PercentKind()}


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def open_with(db_url: str, clock: FakeClock, tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Load inline blueprint files against `extensions` (as `crm serve` does) and open them on this test's database."""
    opened: list[Engine] = []

    def make(files: dict[str, str], extensions: Extensions) -> Engine:
        model = load_blueprint(write_blueprint(tmp_path / "bp", files), vocabulary=extensions.vocabulary)
        runtime = open_engine(model, db_url, clock=clock, extensions=extensions)
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:
        runtime.close()


def _refused(tmp_path: Path, files: dict[str, str], extensions: Extensions) -> str:
    with pytest.raises(BlueprintInvalid) as failed:
        load_blueprint(write_blueprint(tmp_path / "refused", files), vocabulary=extensions.vocabulary)
    return str(failed.value)


# --------------------------------------------------------------------------- expression functions

RULES_MASK = """
    rules:
      - name: mask
        entity: lead
        trigger: created
        actions:
          - set: {phone_shown: "=mask_phone(phone)"}
"""


def test_a_plugin_function_used_in_a_rule_sets_a_field(open_with: Callable[..., Engine]) -> None:
    runtime = open_with({**APP, "lead.yaml": LEAD, "rules.yaml": RULES_MASK},
                        load_extensions(extra=[MaskedPhone()], load_installed=False))
    lead = runtime.records.create("lead", {"name": "瑞康", "phone": "138 0013 8000"}, actor=SYSTEM).record
    assert lead["phone_shown"] == "138****8000"
    assert runtime.records.get("lead", lead["id"], actor=SYSTEM)["phone_shown"] == "138****8000"


def test_without_the_plugin_the_function_is_refused_at_its_line(tmp_path: Path) -> None:
    message = _refused(tmp_path, {**APP, "lead.yaml": LEAD, "rules.yaml": RULES_MASK},
                       load_extensions(load_installed=False))
    assert re.search(r"rules\.yaml:6:\d+: error: expression calls unknown function 'mask_phone'", message), message
    assert "Known functions: abs, any_of" in message and "upper" in message


def test_validate_accepts_the_function_with_the_plugin_the_way_crm_validate_loads(tmp_path: Path) -> None:
    folder = write_blueprint(tmp_path / "bp", {**APP, "lead.yaml": LEAD, "rules.yaml": RULES_MASK})
    model = cli.load_or_exit(str(folder), load_extensions(extra=[MaskedPhone()], load_installed=False))
    assert [rule.name for rule in model.rules_for("lead")] == ["mask"]


# --------------------------------------------------------------------------- actions

TASK = """
    entity: task
    fields:
      title: {type: string, required: true}
      lead: {type: link, entity: lead}
"""
RULES_ESCALATE = """
    rules:
      - name: escalate_big
        entity: lead
        trigger: created
        when: "contains(name, '集团')"
        actions:
          - escalate: {reason: "='大客户 ' + name", level: 2}
"""


def test_a_plugin_action_changes_the_record_in_its_write_and_creates_a_related_task(
        open_with: Callable[..., Engine]) -> None:
    runtime = open_with({**APP, "lead.yaml": LEAD, "task.yaml": TASK, "rules.yaml": RULES_ESCALATE},
                        load_extensions(extra=[Escalation()], load_installed=False))
    lead = runtime.records.create("lead", {"name": "恒通集团"}, actor=SYSTEM).record
    assert lead["priority"] == "high" and lead["tags"] == ["escalated"] and lead["reason"] == "大客户 恒通集团"
    assert lead["version"] == 1  # joined the create itself, not a second write
    with runtime.db.read() as connection:
        rows = connection.execute(runtime.schema.table("task").select()).mappings().all()
    assert [(row["title"], row["lead"]) for row in rows] == [("跟进：恒通集团（大客户 恒通集团）", lead["id"])]
    small = runtime.records.create("lead", {"name": "小店"}, actor=SYSTEM).record
    assert small["priority"] == "normal" and not small["tags"]


def test_an_unknown_verb_and_a_body_the_plugin_refuses_are_reported_at_their_lines(tmp_path: Path) -> None:
    files = {**APP, "lead.yaml": LEAD, "task.yaml": TASK, "rules.yaml": RULES_ESCALATE}
    missing = _refused(tmp_path, files, load_extensions(load_installed=False))
    assert re.search(r"rules\.yaml:7:\d+: error: unknown action 'escalate'", missing), missing
    assert "Known actions: add_tags, assign" in missing and "a plugin may provide more" in missing
    wrong = _refused(tmp_path, {**files, "rules.yaml": RULES_ESCALATE.replace("level: 2", "level: 5")},
                     load_extensions(extra=[Escalation()], load_installed=False))
    assert re.search(r"rules\.yaml:7:\d+: error: escalate: 5 is greater than the maximum of 2", wrong), wrong


# --------------------------------------------------------------------------- field kinds

PERCENT = """
    entity: deal
    fields:
      name: {type: string}
      discount: {type: percent, scale: 4, max: 0.5}
"""


def test_a_plugin_field_type_coerces_stores_and_reads_back(open_with: Callable[..., Engine]) -> None:
    runtime = open_with({**APP, "deal.yaml": PERCENT}, load_extensions(extra=[Percentages()], load_installed=False))
    deal = runtime.records.create("deal", {"name": "年框", "discount": "12.5%"}, actor=SYSTEM).record
    stored = runtime.records.get("deal", deal["id"], actor=SYSTEM)
    assert stored["discount"] == decimal.Decimal("0.1250")
    assert runtime.records.to_json("deal", stored)["discount"] == "0.1250"
    with pytest.raises(ValidationFailed, match="must be at most 0.5"):
        runtime.records.create("deal", {"name": "太多", "discount": "80%"}, actor=SYSTEM)


def test_without_the_plugin_the_field_type_is_refused_naming_every_known_type(tmp_path: Path) -> None:
    message = _refused(tmp_path, {**APP, "deal.yaml": PERCENT}, load_extensions(load_installed=False))
    assert re.search(r"deal\.yaml:4:\d+: error: 'percent' is not one of the allowed values", message), message
    assert "Known field types: attachment, boolean" in message


# --------------------------------------------------------------------------- channels (the installed example)

def _require_discord() -> None:
    installed = {entry.name for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if "discord" not in installed:
        reason = "the example plugin is not installed (pip install -e examples/crm-discord; ./run.sh test does)"
        if IN_CI:
            pytest.fail(reason + " — CI=true, so it must be")
        pytest.skip(reason)


CHANNELS = """
    channels:
      sales:
        type: discord
        url: {env: DISCORD_SALES}
"""
RULES_NOTIFY = """
    rules:
      - name: tell_sales
        entity: lead
        trigger: created
        actions:
          - notify: {channel: sales, to: [owner], text: "新线索：{{ record.name }}"}
"""


@dataclass
class Receiver:
    url: str = ""
    bodies: list[tuple[str, bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 answering like Discord: 204 No Content."""
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            state.bodies.append((self.path, self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def test_a_rules_notify_through_the_installed_discord_channel_reaches_the_receiver(
        open_with: Callable[..., Engine], receiver: Receiver) -> None:
    _require_discord()
    runtime = open_with({**APP, "lead.yaml": LEAD, "channels.yaml": CHANNELS, "rules.yaml": RULES_NOTIFY},
                        load_extensions())
    owner = runtime.users.add(NewUser("wang", "王伟", "admin", im_ids={"discord": "80351110224678912"}))
    runtime.records.create("lead", {"name": "瑞康医疗", "owner": owner.id}, actor=SYSTEM)
    runtime.worker(environ={"DISCORD_SALES": f"{receiver.url}/api/webhooks/42/tok"}).tick()
    (path, body), = receiver.bodies
    assert path == "/api/webhooks/42/tok"
    sent = json.loads(body)
    assert sent["content"] == "新线索：瑞康医疗\n<@80351110224678912>"
    assert sent["allowed_mentions"] == {"parse": [], "users": ["80351110224678912"]}
    assert [message["status"] for message in list_messages(runtime.db, runtime.schema)] == ["delivered"]


def test_crm_validate_accepts_the_installed_channel_type_and_names_the_known_ones_for_a_missing_one(
        tmp_path: Path) -> None:
    _require_discord()
    folder = write_blueprint(tmp_path / "bp", {**APP, "lead.yaml": LEAD, "channels.yaml": CHANNELS,
                                               "rules.yaml": RULES_NOTIFY})
    runner = CliRunner()
    accepted = runner.invoke(cli.main, ["validate", str(folder)])
    assert accepted.exit_code == 0 and "valid" in accepted.output, accepted.output
    write_blueprint(folder, {"channels.yaml": CHANNELS.replace("discord", "teams")})
    refused = runner.invoke(cli.main, ["validate", str(folder)])
    assert refused.exit_code == 1
    assert re.search(r"channels\.yaml:3:\d+: error: unknown channel type 'teams'", refused.output), refused.output
    assert "Known channel types: dingtalk, discord, feishu, mail, slack, webhook, wecom" in refused.output


def test_without_the_plugin_a_discord_channel_is_refused_at_its_line(tmp_path: Path) -> None:
    message = _refused(tmp_path, {**APP, "lead.yaml": LEAD, "channels.yaml": CHANNELS, "rules.yaml": RULES_NOTIFY},
                       load_extensions(load_installed=False))
    assert re.search(r"channels\.yaml:3:\d+: error: unknown channel type 'discord'", message), message
    assert "Known channel types: dingtalk, feishu, mail, slack, webhook, wecom" in message


# --------------------------------------------------------------------------- plugins that cannot work

class Lowercase:
    @hookimpl
    def crm_functions(self) -> Sequence[ExpressionFunction]:
        """A function named like a built-in."""
        return [ExpressionFunction("lower", str.lower, FunctionDoc("lower(x)", "again"))]


class SetVerb:
    @hookimpl
    def crm_actions(self) -> Sequence[Any]:
        """A verb named like a built-in."""
        return [dataclasses.replace(Escalate(), name="set")]


class WeComAgain:
    @hookimpl
    def crm_channels(self) -> Mapping[str, Any]:
        """A channel type named like a shipped one."""
        from engine.channels import SlackWebhook
        return {"wecom": SlackWebhook}


@pytest.mark.parametrize(("plugin", "words"), [
    (Lowercase(), "two plugins provide the expression function 'lower' (engine.rules.functions and"),
    (SetVerb(), "provides the action 'set', which is a built-in verb"),
    (WeComAgain(), "two plugins provide the channel type 'wecom' (engine.channels.vendors and"),
])
def test_a_plugin_claiming_a_name_already_taken_fails_at_startup_naming_both(plugin: object, words: str) -> None:
    with pytest.raises(PluginError, match=re.escape(words)):
        load_extensions(extra=[plugin], load_installed=False)


def test_a_blueprint_using_a_plugin_field_type_needs_the_plugin_when_it_opens(db_url: str, tmp_path: Path) -> None:
    model = load_blueprint(write_blueprint(tmp_path / "bp", {**APP, "deal.yaml": PERCENT}),
                           vocabulary=load_extensions(extra=[Percentages()], load_installed=False).vocabulary)
    with pytest.raises(PluginError, match=r"deal\.yaml:4:\d+: field deal\.discount has type 'percent', which no"):
        open_engine(model, db_url, extensions=load_extensions(load_installed=False))


def test_the_vocabulary_shorthand_keeps_the_shipped_channel_types(tmp_path: Path) -> None:
    folder = write_blueprint(tmp_path / "bp", {**APP, "lead.yaml": LEAD, "channels.yaml": CHANNELS.replace(
        "type: discord", "type: wecom")})
    assert load_blueprint(folder, functions=FUNCTION_NAMES).channel("sales").type == "wecom"
