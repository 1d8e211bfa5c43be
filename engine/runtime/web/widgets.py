"""Field widgets: how each field is drawn in a form, shown on a page, and read back from a post.

A widget is a small object:

- `name` — what a blueprint writes as `widget: NAME` on a field;
- `field_types` — the `FieldType`s it can serve;
- `render_form(field, value, errors, lang)` → the input element(s) as `Markup`;
- `render_display(field, value, lang)` → the value for lists and record pages as `Markup`;
- `parse(field, form_values)` → the value handed to RecordService (which coerces and validates
  it), `NOT_SUBMITTED` when the form did not carry the field, or `InputError` for input the
  widget itself cannot read.

`value` in `render_form` is either the stored value or, when a post is shown again with its
errors, what `parse` returned for the user's input — so a widget accepts both. The input
elements are named after `field.name` (a widget may add `NAME__suffix` inputs).

The built-in widgets below register through the same pluggy hook (`crm_widgets`) as
third-party ones (see engine/plugins/hookspecs.py and docs/screens.md).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field as dataclass_field
from typing import Any, ClassVar, Protocol
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from engine.metamodel import FieldSpec, FieldType, Metamodel
from engine.plugins import answers, hookimpl, plugin_manager


def _word(lang: str, key: str) -> str:
    """A widget's own word from the screens' catalogue (imported here: the screens import widgets)."""
    from engine.runtime.web.screens.i18n import translate
    return translate(lang, key)

FormValues = Mapping[str, Sequence[Any]]


class _NotSubmitted:
    def __repr__(self) -> str:
        return "NOT_SUBMITTED"


NOT_SUBMITTED: Any = _NotSubmitted()


class InputError(ValueError):
    """Input a widget cannot read (e.g. malformed JSON); shown next to the field."""


@dataclass(frozen=True, slots=True)
class FieldContext:
    """What a widget knows about the field it draws: the spec plus facts of this screen."""

    spec: FieldSpec
    label: str
    help: str = ""
    is_required: bool = False
    is_readonly: bool = False
    titles: Mapping[Any, str] = dataclass_field(default_factory=dict)  # link/user id → display text
    link_base: str = ""  # URL prefix of the linked record's page, e.g. "/account/"
    search_url: str = ""  # link fields with too many targets for a select: the JSON list to search
    title_field: str = ""  # … and the target's title field in its items
    filter_by: str = ""  # link `filter_by: G`: the choices follow this form's G (static/app.js asks…
    options_url: str = ""  # … this JSON list, filtered by G, when G changes)

    @property
    def name(self) -> str:
        return self.spec.name


class Widget(Protocol):
    """The widget contract (see the module docstring); plain class attributes satisfy it."""

    @property
    def name(self) -> str: ...

    @property
    def field_types(self) -> tuple[FieldType, ...]: ...

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup: ...

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup: ...

    def parse(self, field: FieldContext, form_values: FormValues) -> Any: ...


def _last(form_values: FormValues, name: str) -> Any:
    values = form_values.get(name)
    if not values:
        return NOT_SUBMITTED
    return values[-1]


def _attrs(field: FieldContext, errors: Sequence[str]) -> Markup:
    parts = [Markup(' id="f-{0}" name="{0}"').format(field.name)]
    if field.is_required:
        parts.append(Markup(" required"))
    if errors:
        parts.append(Markup(' aria-invalid="true" aria-describedby="e-{0}"').format(field.name))
    return Markup("").join(parts)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class BaseWidget:
    """Text input by default; subclasses override what differs."""

    name: ClassVar[str] = "text"
    field_types: ClassVar[tuple[FieldType, ...]] = (FieldType.STRING,)
    input_type: ClassVar[str] = "text"

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        extra = Markup("")
        if field.spec.length:
            extra = Markup(' maxlength="{}"').format(field.spec.length)
        return Markup('<input type="{}"{}{} value="{}">').format(self.input_type, _attrs(field, errors), extra,
                                                               self.form_text(field, value))

    def form_text(self, field: FieldContext, value: Any) -> str:
        return _text(value)

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        return escape(_text(value))

    def parse(self, field: FieldContext, form_values: FormValues) -> Any:
        value = _last(form_values, field.name)
        return value if value is NOT_SUBMITTED else str(value).strip()


class TelWidget(BaseWidget):
    name, field_types, input_type = "tel", (FieldType.PHONE,), "tel"


class EmailWidget(BaseWidget):
    name, field_types, input_type = "email", (FieldType.EMAIL,), "email"

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        return Markup('<a href="mailto:{0}">{0}</a>').format(value) if value else Markup("")


class UrlWidget(BaseWidget):
    name, field_types, input_type = "url", (FieldType.URL,), "url"

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        if not value or not str(value).lower().startswith(("http://", "https://")):
            return escape(_text(value))
        return Markup('<a href="{0}" rel="noopener noreferrer" target="_blank">{0}</a>').format(value)


class TextareaWidget(BaseWidget):
    name, field_types = "textarea", (FieldType.TEXT,)

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        return Markup('<textarea rows="4"{}>{}</textarea>').format(_attrs(field, errors), self.form_text(field, value))

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        return Markup('<span class="multiline">{}</span>').format(_text(value))


class NumberWidget(BaseWidget):
    name, field_types, input_type = "number", (FieldType.INTEGER, FieldType.DECIMAL), "number"

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        spec = field.spec
        step = "1" if spec.type is FieldType.INTEGER else str(decimal.Decimal(1).scaleb(-spec.scale))
        bounds = Markup("")
        if spec.minimum is not None:
            bounds += Markup(' min="{}"').format(spec.minimum)
        if spec.maximum is not None:
            bounds += Markup(' max="{}"').format(spec.maximum)
        return Markup('<input type="number" inputmode="decimal" step="{}"{}{} value="{}">').format(
            step, bounds, _attrs(field, errors), _text(value))

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        return escape(format_number(value))


def format_number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, decimal.Decimal):
        return f"{value:,}"
    return str(value)


class MoneyWidget(BaseWidget):
    """An amount and its currency (two inputs: NAME and NAME__currency)."""

    name, field_types = "money", (FieldType.MONEY,)

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        amount, currency = self._parts(field, value)
        return Markup('<span class="money"><input type="number" inputmode="decimal" step="0.01"{} value="{}">'
                      '<input name="{}__currency" aria-label="{}" class="currency" maxlength="3" '
                      'value="{}"></span>').format(_attrs(field, errors), amount, field.name,
                                                   f"{field.label} · " + _word(lang, "currency"),
                                                   currency)

    @staticmethod
    def _parts(field: FieldContext, value: Any) -> tuple[str, str]:
        if isinstance(value, tuple):
            return _text(value[0]), value[1]
        if isinstance(value, dict):
            return _text(value.get("amount")), _text(value.get("currency")) or field.spec.currency
        return _text(value), field.spec.currency

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        if value is None:
            return Markup("")
        amount, currency = value if isinstance(value, tuple) else (value, field.spec.currency)
        return Markup('<span class="num">{} {}</span>').format(format_number(amount), currency)

    def parse(self, field: FieldContext, form_values: FormValues) -> Any:
        amount = _last(form_values, field.name)
        if amount is NOT_SUBMITTED:
            return NOT_SUBMITTED
        amount = str(amount).strip()
        if not amount:
            return None
        currency = _last(form_values, f"{field.name}__currency")
        currency = field.spec.currency if currency is NOT_SUBMITTED or not str(currency).strip() else currency
        return {"amount": amount, "currency": str(currency).strip().upper()}


class CheckboxWidget(BaseWidget):
    """A hidden "false" before the checkbox, so an unticked box is submitted too."""

    name, field_types = "checkbox", (FieldType.BOOLEAN,)

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        checked = Markup(" checked") if value in (True, "true") else Markup("")
        return Markup('<input type="hidden" name="{0}" value="false">'
                      '<input type="checkbox" id="f-{0}" name="{0}" value="true"{1}>').format(field.name, checked)

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        if value is None:
            return Markup("")
        yes, no = _word(lang, "yes"), _word(lang, "no")
        return escape(yes if value else no)

    def parse(self, field: FieldContext, form_values: FormValues) -> Any:
        value = _last(form_values, field.name)
        return value if value is NOT_SUBMITTED else value == "true"


class DateWidget(BaseWidget):
    name, field_types, input_type = "date", (FieldType.DATE,), "date"

    def form_text(self, field: FieldContext, value: Any) -> str:
        return value.isoformat() if isinstance(value, dt.date) else _text(value)

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        return escape(self.form_text(field, value))


class DateTimeWidget(BaseWidget):
    """A local wall-clock time in the app's time zone (datetime-local)."""

    name, field_types, input_type = "datetime", (FieldType.DATETIME,), "datetime-local"

    def form_text(self, field: FieldContext, value: Any) -> str:
        if isinstance(value, dt.datetime):
            return local_time(value, field.spec.timezone).strftime("%Y-%m-%dT%H:%M")
        return _text(value)

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        if not isinstance(value, dt.datetime):
            return escape(_text(value))
        return escape(local_time(value, field.spec.timezone).strftime("%Y-%m-%d %H:%M"))


def local_time(moment: dt.datetime, timezone: str) -> dt.datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(ZoneInfo(timezone))


def _options(pairs: Iterable[tuple[Any, str]], selected: Iterable[Any]) -> Markup:
    chosen = {str(item) for item in selected}
    return Markup("").join(
        Markup('<option value="{}"{}>{}</option>').format(value, Markup(" selected") if str(value) in chosen
                                                         else Markup(""), label)
        for value, label in pairs)


class SelectWidget(BaseWidget):
    name, field_types = "select", (FieldType.CHOICE,)

    def choices(self, field: FieldContext, lang: str) -> list[tuple[Any, str]]:
        return [(choice.value, choice.label.text(lang)) for choice in field.spec.choices]

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        pairs = self.choices(field, lang)
        if value not in (None, "") and str(value) not in {str(v) for v, _ in pairs}:
            pairs.append((value, f"#{value}"))
        return Markup('<select{}><option value="">—</option>{}</select>').format(
            _attrs(field, errors), _options(pairs, [] if value is None else [value]))

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        if value is None:
            return Markup("")
        return Markup('<span class="chip chip-{}">{}</span>').format(
            str(value).lower(), field.spec.choice_label(str(value), lang))


class CheckboxGroupWidget(BaseWidget):
    """multichoice: one checkbox per option; a hidden NAME__present says the group was on the form."""

    name, field_types = "checkboxes", (FieldType.MULTICHOICE,)

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        chosen = {str(item) for item in (value or [])}
        boxes = Markup("").join(
            Markup('<label class="check"><input type="checkbox" name="{}" value="{}"{}> {}</label>').format(
                field.name, choice.value, Markup(" checked") if choice.value in chosen else Markup(""),
                choice.label.text(lang))
            for choice in field.spec.choices)
        return Markup('<span class="group" id="f-{0}"><input type="hidden" name="{0}__present" value="1">{1}'
                      '</span>').format(field.name, boxes)

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        return Markup(" ").join(Markup('<span class="chip">{}</span>').format(field.spec.choice_label(item, lang))
                                for item in (value or []))

    def parse(self, field: FieldContext, form_values: FormValues) -> Any:
        if not form_values.get(f"{field.name}__present"):
            return NOT_SUBMITTED
        return [str(item) for item in form_values.get(field.name, ()) if str(item).strip()]


class TagsWidget(CheckboxGroupWidget):
    """tags: free text separated by commas; declared options are offered as suggestions."""

    name, field_types = "tags", (FieldType.TAGS,)

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        text = value if isinstance(value, str) else ", ".join(value or [])
        suggestions = Markup("").join(Markup('<option value="{}">{}</option>').format(c.value, c.label.text(lang))
                                      for c in field.spec.choices)
        return Markup('<input type="text"{} list="l-{}" value="{}" placeholder="a, b, c">'
                      '<datalist id="l-{}">{}</datalist>').format(
            _attrs(field, errors), field.name, text, field.name, suggestions)

    def parse(self, field: FieldContext, form_values: FormValues) -> Any:
        value = _last(form_values, field.name)
        if value is NOT_SUBMITTED:
            return NOT_SUBMITTED
        return [part.strip() for part in str(value).replace("，", ",").split(",") if part.strip()]


_PICKED = re.compile(r"\(#(\d+)\)\s*$")


class LinkSelectWidget(BaseWidget):
    """link: a select of the target records' titles the user may read; when there are too
    many for a select (`field.search_url`), a search box instead: its suggestions read
    "Title (#id)" and follow the typing (static/app.js asks the JSON API), and a title typed
    in full is looked up when the form is saved."""

    name, field_types = "link_select", (FieldType.LINK,)

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        if field.search_url:
            return self._search_box(field, value, errors, lang)
        pairs = list(field.titles.items())
        if value not in (None, "") and str(value) not in {str(key) for key in field.titles}:
            pairs.append((value, f"#{value}"))
        return Markup('<select{}{}><option value="">—</option>{}</select>').format(
            _attrs(field, errors), self._follows(field), _options(pairs, [] if value is None else [value]))

    @staticmethod
    def _follows(field: FieldContext) -> Markup:
        """`filter_by`: the attributes by which the page's script narrows the choices when the other
        field changes (without the script, the form offers what the server narrowed it to)."""
        if not field.filter_by:
            return Markup("")
        return Markup(' data-filter-by="{}" data-options-url="{}" data-title-field="{}"').format(
            field.filter_by, field.options_url, field.title_field)

    def _search_box(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            text = f"{field.titles.get(int(value)) or ''} (#{value})".strip()
        else:
            text = _text(value)
        suggestions = Markup("").join(Markup('<option value="{} (#{})">').format(title, key)
                                      for key, title in field.titles.items())
        placeholder = _word(lang, "type_to_search")
        follows = Markup(' data-filter-by="{}"').format(field.filter_by) if field.filter_by else Markup("")
        return Markup('<input type="text"{} list="l-{}" value="{}" autocomplete="off" placeholder="{}" '
                      'data-link-search="{}" data-title-field="{}"{}><datalist id="l-{}">{}</datalist>').format(
            _attrs(field, errors), field.name, text, placeholder, field.search_url, field.title_field, follows,
            field.name, suggestions)

    def parse(self, field: FieldContext, form_values: FormValues) -> Any:
        """The record id ("Title (#12)", "12" or "#12"), None when emptied, else the typed text
        (the form looks a title up by name)."""
        value = _last(form_values, field.name)
        if value is NOT_SUBMITTED:
            return NOT_SUBMITTED
        text = str(value).strip()
        picked = _PICKED.search(text)
        if picked:
            return int(picked.group(1))
        if text.lstrip("#").isdigit():
            return int(text.lstrip("#"))
        return text or None

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        if value is None:
            return Markup("")
        title = field.titles.get(value) or f"#{value}"
        if not field.link_base:
            return escape(title)
        return Markup('<a href="{}{}">{}</a>').format(field.link_base, value, title)


class UserSelectWidget(LinkSelectWidget):
    name, field_types = "user_select", (FieldType.USER,)

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        return escape("" if value is None else field.titles.get(value) or f"#{value}")


class FileWidget(BaseWidget):
    """attachment: a file input; the screen stores the upload first and passes its id along.
    Without a new file the current one (NAME__current) stays."""

    name, field_types = "file", (FieldType.ATTACHMENT,)

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        current = Markup("")
        if value not in (None, ""):
            current = Markup('<input type="hidden" name="{}__current" value="{}"> {}').format(
                field.name, value, self.render_display(field, value, lang))
        return Markup('<input type="file" id="f-{0}" name="{0}">{1}').format(field.name, current)

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        if value in (None, ""):
            return Markup("")
        return Markup('<a href="/api/files/{0}">📎 {1}</a>').format(value, field.titles.get(value) or f"#{value}")

    def parse(self, field: FieldContext, form_values: FormValues) -> Any:
        uploaded = _last(form_values, field.name)
        if uploaded is not NOT_SUBMITTED and str(uploaded).strip():
            return str(uploaded).strip()
        current = _last(form_values, f"{field.name}__current")
        return NOT_SUBMITTED if current is NOT_SUBMITTED else current


class JsonWidget(TextareaWidget):
    name, field_types = "json", (FieldType.JSON,)

    def form_text(self, field: FieldContext, value: Any) -> str:
        if value is None or isinstance(value, str):
            return _text(value)
        return json.dumps(value, ensure_ascii=False, indent=2)

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        return Markup("<code>{}</code>").format(self.form_text(field, value))

    def parse(self, field: FieldContext, form_values: FormValues) -> Any:
        text = _last(form_values, field.name)
        if text is NOT_SUBMITTED or not str(text).strip():
            return None if text is not NOT_SUBMITTED else text
        try:
            return json.loads(str(text)[:1_000_000])
        except json.JSONDecodeError as exc:
            raise InputError(f"{field.name}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        except RecursionError:
            raise InputError(f"{field.name}: nested too deeply") from None


class ComputedWidget(BaseWidget):
    """computed: shown like its result type, never edited."""

    name, field_types = "computed", (FieldType.COMPUTED,)

    def render_form(self, field: FieldContext, value: Any, errors: Sequence[str], lang: str) -> Markup:
        return Markup('<output id="f-{}">{}</output>').format(field.name, self.render_display(field, value, lang))

    def render_display(self, field: FieldContext, value: Any, lang: str) -> Markup:
        result = field.spec.value_type
        if isinstance(value, dt.datetime):
            return DateTimeWidget().render_display(field, value, lang)
        if result is FieldType.BOOLEAN:
            return CheckboxWidget().render_display(field, value, lang)
        return escape(format_number(value))

    def parse(self, field: FieldContext, form_values: FormValues) -> Any:
        return NOT_SUBMITTED


BUILTIN_WIDGETS: tuple[Widget, ...] = (
    BaseWidget(), TelWidget(), EmailWidget(), UrlWidget(), TextareaWidget(), NumberWidget(), MoneyWidget(),
    CheckboxWidget(), DateWidget(), DateTimeWidget(), SelectWidget(), CheckboxGroupWidget(), TagsWidget(),
    LinkSelectWidget(), UserSelectWidget(), FileWidget(), JsonWidget(), ComputedWidget(),
)


@hookimpl
def crm_widgets() -> Sequence[Widget]:
    """The engine's own widgets, one default per field type."""
    return BUILTIN_WIDGETS


class WidgetConfigError(ValueError):
    """A blueprint names a widget no installed plugin provides, or one that cannot serve the field."""


@dataclass(frozen=True, slots=True)
class WidgetRegistry:
    """Widgets by name, and the default widget of each field type (the first registered for it)."""

    by_name: Mapping[str, Widget]
    defaults: Mapping[FieldType, Widget]

    @classmethod
    def of(cls, widgets: Iterable[Widget]) -> WidgetRegistry:
        by_name: dict[str, Widget] = {}
        defaults: dict[FieldType, Widget] = {}
        for widget in widgets:
            if widget.name in by_name and by_name[widget.name] is not widget:
                raise WidgetConfigError(f"two plugins provide a widget named '{widget.name}' "
                                        f"({type(by_name[widget.name]).__module__} and {type(widget).__module__}); "
                                        "uninstall one of them")
            by_name[widget.name] = widget
            for kind in widget.field_types:
                defaults.setdefault(kind, widget)
        return cls(by_name, defaults)

    @classmethod
    def answered(cls, answers: Iterable[tuple[str, Iterable[Widget]]]) -> WidgetRegistry:
        """From each plugin's answer to crm_widgets, in registration order (the engine's first)."""
        return cls.of(widget for _, group in answers for widget in group)

    def for_field(self, spec: FieldSpec) -> Widget:
        if spec.widget:
            return self.by_name[spec.widget]
        return self.defaults[spec.type]

    def check(self, model: Metamodel) -> None:
        """WidgetConfigError naming file:line of every field whose `widget:` is unknown or unfit."""
        problems = []
        for entity in model.entities:
            for spec in entity.fields:
                if not spec.widget:
                    continue
                where = f"{spec.location.file}:{spec.location.line}:{spec.location.column}"
                widget = self.by_name.get(spec.widget)
                if widget is None:
                    problems.append(f"{where}: field {entity.name}.{spec.name} names widget '{spec.widget}', which "
                                    f"no installed plugin provides (known: {', '.join(sorted(self.by_name))}). "
                                    "Install the plugin package or correct the name.")
                elif spec.type not in widget.field_types:
                    kinds = ", ".join(kind.value for kind in widget.field_types)
                    problems.append(f"{where}: widget '{spec.widget}' on {entity.name}.{spec.name} serves {kinds} "
                                    f"fields, not {spec.type.value}. Choose another widget or drop the option.")
        if problems:
            raise WidgetConfigError("\n".join(problems))


def load_widgets(*, extra: Iterable[object] = (), load_installed: bool = True) -> WidgetRegistry:
    """Built-in widgets first (they are the defaults), then those of installed plugins (the
    engine gets its registry from engine/extensions.py, with every other hook's answers)."""
    import sys
    manager = plugin_manager([sys.modules[__name__]], extra=extra, load_installed=load_installed)
    return WidgetRegistry.answered(answers(manager, "crm_widgets"))
