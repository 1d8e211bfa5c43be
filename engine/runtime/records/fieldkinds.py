"""What each field type means at runtime: its columns, how input is coerced, how it reads back.

One class per `FieldType`, registered in `KINDS`; nothing else compares type names.
`coerce` turns API/form input into the stored Python value or raises `FieldError` with a
message a user can act on.

The kinds register by the `type:` name a blueprint writes through the same pluggy hook as a
plugin's (`crm_field_kinds`, engine/plugins/hookspecs.py). A plugin may add a field type
under a new name: its kind subclasses one of these and says, in `stored_as`, which built-in
type it is stored, shown and computed as (its options, widgets and expressions are that
type's). `FieldKinds` holds one engine's kinds; the runtime asks it, never `KINDS` directly.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import phonenumbers
import sqlalchemy as sa

from engine.metamodel import EntitySpec, FieldSpec, FieldType, Metamodel
from engine.metamodel.patterns import compile_pattern
from engine.plugins import PluginError, claim, hookimpl
from engine.runtime.storage.times import as_utc
from engine.runtime.storage.times import naive_utc

UTC = dt.timezone.utc
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_TRUE = {"true", "1", "yes", "y", "on", "是"}
_FALSE = {"false", "0", "no", "n", "off", "否", ""}
MAX_TEXT_LENGTH = 100_000  # a text field without a declared length
MIN_YEAR, MAX_YEAR = 1900, 9998  # dates and times: far enough from the ends that time zones never overflow


class FieldError(ValueError):
    """One field's value is wrong: `code` for machines, `message` for people (English, led by
    the field name, as the API returns it), `zh` the same for Chinese screens (shown under
    the field, so without its name) when there is one."""

    def __init__(self, field: str | None, code: str, message: str, zh: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.message = message
        self.zh = zh

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "code": self.code, "message": self.message}


def _invalid(spec: FieldSpec, message: str, code: str = "invalid", zh: str | None = None) -> FieldError:
    return FieldError(spec.name, code, f"{spec.name}: {message}", zh)


class Kind:
    """Base behaviour: one column, values pass through."""

    @staticmethod
    def column_type(spec: FieldSpec) -> sa.types.TypeEngine[Any]:
        """The column's type; a kind overrides it with `staticmethod(lambda spec: ...)`."""
        return sa.String(255)

    is_text: ClassVar[bool] = False
    is_orderable: ClassVar[bool] = True
    stored_as: ClassVar[FieldType | None] = None  # a plugin's new field type: the built-in type it extends

    def columns(self, spec: FieldSpec) -> list[sa.Column[Any]]:
        return [sa.Column(spec.name, self.column_type(spec), nullable=True)]

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        """Input → stored value, or FieldError."""
        return value

    def coerce(self, spec: FieldSpec, value: Any) -> Any:
        """Parse and check the declared min/max."""
        result = self.parse(spec, value)
        self.check_range(spec, result)
        return result

    def to_json(self, spec: FieldSpec, value: Any) -> Any:
        return value

    def from_row(self, spec: FieldSpec, row: Any) -> Any:
        return row[spec.name]

    def to_row(self, spec: FieldSpec, value: Any) -> dict[str, Any]:
        return {spec.name: value}

    def check_range(self, spec: FieldSpec, value: Any) -> None:
        bounds: list[tuple[Any, str, Callable[[Any, Any], bool]]] = [
            (spec.minimum, "at least", lambda v, b: v >= b), (spec.maximum, "at most", lambda v, b: v <= b)]
        for bound, words, ok in bounds:
            if bound is None or value is None:
                continue
            limit = self.parse(spec, bound)
            if not ok(value, limit):
                raise _invalid(spec, f"must be {words} {self.to_json(spec, limit)}", "out_of_range",
                               f"应{'不小于' if words == 'at least' else '不大于'} {self.to_json(spec, limit)}")


class StringKind(Kind):
    column_type = staticmethod(lambda spec: sa.String(spec.length or 255))
    is_text = True

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        if isinstance(value, (dict, list)):
            raise _invalid(spec, "expected text", zh="请填写文字")
        text = str(value).strip()
        limit = spec.length or (None if spec.type is FieldType.TEXT else 255)
        if limit is None:
            limit = MAX_TEXT_LENGTH
        if limit is not None and len(text) > limit:
            raise _invalid(spec, f"is {len(text)} characters long; at most {limit} allowed", "too_long",
                           f"共 {len(text)} 个字符，最多 {limit} 个")
        check_text(spec, text)
        if spec.pattern and text and compile_pattern(spec.pattern).fullmatch(text) is None:
            raise _invalid(spec, f"'{text}' does not match the required pattern {spec.pattern}", "pattern",
                           f"“{text}”格式不对（应符合 {spec.pattern}）")
        return text or None


class TextKind(StringKind):
    column_type = staticmethod(lambda spec: sa.Text())
    is_orderable = False


class IntegerKind(Kind):
    column_type = staticmethod(lambda spec: sa.BigInteger())

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        if isinstance(value, bool):
            raise _invalid(spec, "expected a whole number, got true/false", zh="请填写整数")
        if isinstance(value, int):
            result = value
        else:
            try:
                number = decimal.Decimal(str(value).strip().replace(",", ""))
            except decimal.InvalidOperation:
                raise _invalid(spec, f"'{value}' is not a whole number", zh=f"“{value}”不是整数") from None
            if not number.is_finite() or number.adjusted() > 18:  # before int(): 1e999999999 is a valid Decimal
                raise _invalid(spec, "number is too large", "out_of_range", "数字太大")
            if number != number.to_integral_value():
                raise _invalid(spec, f"'{value}' is not a whole number", zh=f"“{value}”不是整数")
            result = int(number)
        if abs(result) > 2**62:
            raise _invalid(spec, "number is too large", "out_of_range", "数字太大")
        return result


class DecimalKind(Kind):
    column_type = staticmethod(lambda spec: sa.Numeric(20, spec.scale))

    def parse(self, spec: FieldSpec, value: Any) -> decimal.Decimal:
        if isinstance(value, bool):
            raise _invalid(spec, "expected a number, got true/false", zh="请填写数字")
        try:
            number = decimal.Decimal(str(value).strip().replace(",", ""))
        except decimal.InvalidOperation:
            raise _invalid(spec, f"'{value}' is not a number", zh=f"“{value}”不是数字") from None
        if not number.is_finite() or abs(number) >= decimal.Decimal(10) ** (20 - spec.scale):
            raise _invalid(spec, f"'{value}' is out of range", "out_of_range", f"“{value}”超出范围")
        return number.quantize(decimal.Decimal(1).scaleb(-spec.scale), rounding=decimal.ROUND_HALF_UP)

    def to_json(self, spec: FieldSpec, value: Any) -> Any:
        return None if value is None else str(value)

    def from_row(self, spec: FieldSpec, row: Any) -> Any:
        value = row[spec.name]
        return None if value is None else decimal.Decimal(value).quantize(decimal.Decimal(1).scaleb(-spec.scale))


class MoneyKind(DecimalKind):
    """An amount with its currency: stored as `<name>` and `<name>_currency`."""

    def columns(self, spec: FieldSpec) -> list[sa.Column[Any]]:
        return [sa.Column(spec.name, sa.Numeric(20, 2), nullable=True),
                sa.Column(f"{spec.name}_currency", sa.String(3), nullable=True)]

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        currency = spec.currency
        if isinstance(value, dict):
            if "amount" not in value:
                raise _invalid(spec, "expected {\"amount\": …, \"currency\": \"CNY\"}", zh="请填写金额")
            currency = str(value.get("currency") or currency).upper()
            if not re.fullmatch(r"[A-Z]{3}", currency):
                raise _invalid(spec, f"currency '{currency}' is not a 3-letter code such as CNY",
                               zh=f"币种“{currency}”应为三个字母的代码，如 CNY")
            value = value["amount"]
        return (super().parse(spec, value), currency)

    def check_range(self, spec: FieldSpec, value: Any) -> None:
        _AMOUNT.check_range(spec, value[0])

    def to_json(self, spec: FieldSpec, value: Any) -> Any:
        if value is None:
            return None
        amount, currency = value
        return {"amount": str(amount), "currency": currency}

    def from_row(self, spec: FieldSpec, row: Any) -> Any:
        amount = row[spec.name]
        if amount is None:
            return None
        return (decimal.Decimal(amount).quantize(decimal.Decimal("0.01")), row[f"{spec.name}_currency"] or spec.currency)

    def to_row(self, spec: FieldSpec, value: Any) -> dict[str, Any]:
        if value is None:
            return {spec.name: None, f"{spec.name}_currency": None}
        return {spec.name: value[0], f"{spec.name}_currency": value[1]}


_AMOUNT = DecimalKind()


class BooleanKind(Kind):
    column_type = staticmethod(lambda spec: sa.Boolean())

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _invalid(spec, f"'{value}' is not true or false", zh=f"“{value}”应为“是”或“否”")


class DateKind(Kind):
    column_type = staticmethod(lambda spec: sa.Date())

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            result = value.date()
        elif isinstance(value, dt.date):
            result = value
        else:
            try:
                result = dt.date.fromisoformat(str(value).strip()[:10])
            except ValueError:
                raise _invalid(spec, f"'{value}' is not a date; write it as YYYY-MM-DD",
                               zh=f"“{value}”不是日期，请写成 2026-11-20 这样的格式") from None
        if not MIN_YEAR <= result.year <= MAX_YEAR:
            raise _invalid(spec, f"'{value}' is outside the years {MIN_YEAR}–{MAX_YEAR}", "out_of_range",
                           f"“{value}”超出 {MIN_YEAR}–{MAX_YEAR} 年的范围")
        return result

    def to_json(self, spec: FieldSpec, value: Any) -> Any:
        return None if value is None else value.isoformat()


class DateTimeKind(Kind):
    """Stored as naive UTC on every database; read back as aware UTC."""

    column_type = staticmethod(lambda spec: sa.DateTime())

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            moment = value
        else:
            text = str(value).strip().replace("Z", "+00:00")
            try:
                moment = dt.datetime.fromisoformat(text)
            except ValueError:
                raise _invalid(spec, f"'{value}' is not a date and time; write it as "
                                     "YYYY-MM-DD HH:MM (local time) or with an offset, e.g. 2026-11-20T09:30+08:00",
                               zh=f"“{value}”不是日期时间，请写成 2026-11-20 09:30 这样的格式") from None
        if not MIN_YEAR <= moment.year <= MAX_YEAR:
            raise _invalid(spec, f"'{value}' is outside the years {MIN_YEAR}–{MAX_YEAR}", "out_of_range",
                           f"“{value}”超出 {MIN_YEAR}–{MAX_YEAR} 年的范围")
        if moment.tzinfo is None:  # a wall-clock time in the app's time zone
            moment = moment.replace(tzinfo=ZoneInfo(spec.timezone))
        try:
            return moment.astimezone(UTC)
        except (OverflowError, ValueError):
            raise _invalid(spec, f"'{value}' is out of range", "out_of_range", f"“{value}”超出范围") from None

    def to_json(self, spec: FieldSpec, value: Any) -> Any:
        return None if value is None else value.isoformat()

    def from_row(self, spec: FieldSpec, row: Any) -> Any:
        return as_utc(row[spec.name])

    def to_row(self, spec: FieldSpec, value: Any) -> dict[str, Any]:
        return {spec.name: None if value is None else naive_utc(value)}


class ChoiceKind(Kind):
    column_type = staticmethod(lambda spec: sa.String(64))

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        text = str(value).strip()
        if text == "":
            return None
        if text not in spec.choice_values():
            raise _invalid(spec, f"'{text}' is not one of the options ({', '.join(spec.choice_values())})",
                               zh=f"“{text}”不是可选项（{'、'.join(c.label.text('zh') for c in spec.choices)}）",
                               code="invalid_choice")
        return text


MAX_LIST_VALUES = 100  # a tags or multichoice field holds at most this many values
MAX_LIST_ITEM = 64     # … each at most this many characters
MAX_JSON_BYTES = 64 * 1024  # a json field's value, as stored text
MAX_JSON_DEPTH = 32


class ListKind(Kind):
    """multichoice and tags: a JSON list of distinct strings. The caps are checked before any
    value is looked at, and the values are de-duplicated with a set: a request with a million
    tags is refused at the cost of one `len`."""

    column_type = staticmethod(lambda spec: sa.JSON())
    is_orderable = False

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > MAX_LIST_VALUES * (MAX_LIST_ITEM + 1) * 2:
                raise _invalid(spec, f"at most {MAX_LIST_VALUES} values", "too_long", f"最多 {MAX_LIST_VALUES} 项")
            items: Any = value.split(",", MAX_LIST_VALUES * 2)
        else:
            items = value
        if not isinstance(items, (list, tuple)):
            raise _invalid(spec, "expected a list of values", zh="请选择一项或多项")
        if len(items) > MAX_LIST_VALUES * 2:  # before the loop: blanks and repeats are few in real input
            raise _invalid(spec, f"at most {MAX_LIST_VALUES} values (got {len(items)})", "too_long",
                           f"最多 {MAX_LIST_VALUES} 项（收到 {len(items)} 项）")
        allowed = frozenset(spec.choice_values()) if spec.type is FieldType.MULTICHOICE else None
        result: list[str] = []
        seen: set[str] = set()
        for item in items:
            if isinstance(item, (dict, list, tuple)):
                raise _invalid(spec, "each value must be text", zh="每一项应为文字")
            text = str(item).strip()
            if not text or text in seen:
                continue
            if allowed is not None and text not in allowed:
                raise _invalid(spec, f"'{text[:64]}' is not one of the options ({', '.join(spec.choice_values())})",
                               zh=f"“{text[:64]}”不是可选项（{'、'.join(c.label.text('zh') for c in spec.choices)}）",
                               code="invalid_choice")
            if len(text) > MAX_LIST_ITEM:
                raise _invalid(spec, f"'{text[:20]}…' is longer than {MAX_LIST_ITEM} characters", "too_long",
                               f"“{text[:20]}…”超过 {MAX_LIST_ITEM} 个字符")
            check_text(spec, text)
            seen.add(text)
            result.append(text)
            if len(result) > MAX_LIST_VALUES:
                raise _invalid(spec, f"at most {MAX_LIST_VALUES} values", "too_long", f"最多 {MAX_LIST_VALUES} 项")
        return result or None


class PhoneKind(Kind):
    column_type = staticmethod(lambda spec: sa.String(32))
    is_text = True

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        return normalize_phone(str(value), spec.phone_region, field=spec.name)


_PLAIN_PHONE = re.compile(r"[\d\s+\-().]+")
_CN_MOBILE = re.compile(r"(?:\+?86)?(1\d{10})")


def normalize_phone(text: str, region: str, *, field: str | None = None) -> str | None:
    """E.164 form of a phone number (`+8613800138000`), or FieldError when it is not one."""
    raw = text.strip()
    if not raw:
        return None
    digits = re.sub(r"[^\d+]", "", raw)
    if region == "CN" and _PLAIN_PHONE.fullmatch(raw):
        # the usual case, a mainland mobile: what phonenumbers.parse would extract, without its
        # 20 µs of parsing; validity is still phonenumbers' (tests compare the two paths)
        mobile = _CN_MOBILE.fullmatch(digits)
        if mobile is not None and phonenumbers.is_valid_number(
                phonenumbers.PhoneNumber(country_code=86, national_number=int(mobile.group(1)))):
            return "+86" + mobile.group(1)
    candidates = [raw]
    if digits.startswith("86") and len(digits) == 13 and not digits.startswith("+"):
        candidates.insert(0, "+" + digits)
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise FieldError(field, "invalid_phone", f"{field or 'phone'}: '{raw}' is not a valid phone number "
                                             f"(for {region} write e.g. 13800138000 or +86 138 0013 8000)",
                     f"“{raw}”不是有效的电话号码（例如 13800138000 或 +86 138 0013 8000）")


class EmailKind(Kind):
    column_type = staticmethod(lambda spec: sa.String(254))
    is_text = True

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        text = str(value).strip().lower()
        if not text:
            return None
        check_text(spec, text)
        if len(text) > 254 or not _EMAIL.match(text):
            raise _invalid(spec, f"'{text}' is not an email address", "invalid_email", f"“{text}”不是有效的邮箱地址")
        return text


class UrlKind(Kind):
    column_type = staticmethod(lambda spec: sa.String(2048))
    is_text = True

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        text = str(value).strip()
        if not text:
            return None
        check_text(spec, text)
        if "://" not in text:
            text = "https://" + text
        if len(text) > 2048 or not _URL.match(text):
            raise _invalid(spec, f"'{value}' is not a web address", "invalid_url",
                           f"“{value}”不是网址，请以 http:// 或 https:// 开头")
        return text


class ReferenceKind(Kind):
    """link, user and attachment: the id of a row elsewhere (existence is checked by RecordService)."""

    column_type = staticmethod(lambda spec: sa.Integer())

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        if isinstance(value, dict) and "id" in value:
            value = value["id"]
        if isinstance(value, bool):
            raise _invalid(spec, "expected a record id", zh="请选择一条记录")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise _invalid(spec, f"'{value}' is not a record id (a whole number)", zh=f"“{value}”不是记录编号") from None
        if number <= 0 or number > 2**31:
            raise _invalid(spec, f"'{value}' is not a record id", zh=f"“{value}”不是记录编号")
        return number


class JsonKind(Kind):
    """Structured data (e.g. a webhook's raw payload): a JSON object or list, bounded in size and
    depth. A scalar is refused at write time; a row written before that rule (or by hand) reads
    back as it is stored, never as an error."""

    column_type = staticmethod(lambda spec: sa.JSON())
    is_orderable = False

    def parse(self, spec: FieldSpec, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            if len(text) > MAX_JSON_BYTES:
                raise _invalid(spec, f"is larger than {MAX_JSON_BYTES // 1024} KB", "too_long",
                               f"超过 {MAX_JSON_BYTES // 1024} KB")
            try:
                value = json.loads(text, parse_constant=_no_constant)
            except (ValueError, RecursionError):
                raise _invalid(spec, "is not valid JSON; write an object like {\"key\": \"value\"}",
                               zh="不是有效的 JSON，请写成 {\"key\": \"value\"} 这样的对象") from None
        if not isinstance(value, (dict, list)):
            raise _invalid(spec, f"expected a JSON object or list, got {type(value).__name__}",
                           zh="应为 JSON 对象或列表")
        problem = _json_problem(value)
        if problem:
            raise _invalid(spec, problem, "too_long" if "large" in problem or "deep" in problem else "invalid",
                           "JSON 内容无效或过大")
        return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_problem(value: Any) -> str | None:
    """Why `value` cannot be stored in a json field (too deep, too large, NaN, a NUL or lone
    surrogate in a string), or None; iterative, so a hostile nesting cannot exhaust the stack.
    (Every intake delivery stores its payload here: exact types are tried first, and the texts
    are searched for bad characters in one pass at the end.)"""
    size, stack = 0, [(value, 1)]
    texts: list[str] = []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"is nested deeper than {MAX_JSON_DEPTH} levels"
        kind = type(item)
        if kind is str or isinstance(item, str):
            size += len(item) + 2
            texts.append(item)
        elif kind is dict or isinstance(item, dict):
            size += 2 + len(item)
            for key, member in item.items():
                if not isinstance(key, str):
                    return "has a key that is not text"
                size += len(key)
                texts.append(key)
                stack.append((member, depth + 1))
        elif kind is list or isinstance(item, (list, tuple)):
            size += 2 + len(item)
            stack.extend((member, depth + 1) for member in item)
        elif item is None or kind is bool:
            size += 5
        elif kind is float or isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                return "contains NaN or Infinity, which JSON does not allow"
            size += 24
        elif isinstance(item, int):
            if abs(item) > 2**63:
                return "contains a number too large to store"
            size += 20
        else:
            return f"contains a {kind.__name__}, which JSON cannot hold"
        if size > MAX_JSON_BYTES:
            return f"is larger than {MAX_JSON_BYTES // 1024} KB"
    if texts and _bad_text("".join(texts)):
        return "contains a NUL character or an unpaired surrogate"
    return None


_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def _bad_text(text: str) -> bool:
    return _BAD_TEXT.search(text) is not None


def check_text(spec: FieldSpec, text: str) -> None:
    """Text no database can store faithfully (a NUL byte: PostgreSQL refuses it; an unpaired
    surrogate: not UTF-8) is refused with the field's name, never left to fail in the driver."""
    if _bad_text(text):
        raise _invalid(spec, "contains a NUL character or an unpaired surrogate; remove it", "invalid_text",
                       "包含无法保存的控制字符，请删除")


class ComputedKind(Kind):
    """Stored like its result type; its value is always recomputed, never accepted as input."""

    def _result(self, spec: FieldSpec) -> Kind:
        return KINDS[spec.value_type]

    def columns(self, spec: FieldSpec) -> list[sa.Column[Any]]:
        return self._result(spec).columns(spec)

    def coerce(self, spec: FieldSpec, value: Any) -> Any:
        return self._result(spec).coerce(spec, value)

    def to_json(self, spec: FieldSpec, value: Any) -> Any:
        return self._result(spec).to_json(spec, value)

    def from_row(self, spec: FieldSpec, row: Any) -> Any:
        return self._result(spec).from_row(spec, row)

    def to_row(self, spec: FieldSpec, value: Any) -> dict[str, Any]:
        return self._result(spec).to_row(spec, value)


KINDS: dict[FieldType, Kind] = {
    FieldType.STRING: StringKind(),
    FieldType.TEXT: TextKind(),
    FieldType.INTEGER: IntegerKind(),
    FieldType.DECIMAL: DecimalKind(),
    FieldType.MONEY: MoneyKind(),
    FieldType.BOOLEAN: BooleanKind(),
    FieldType.DATE: DateKind(),
    FieldType.DATETIME: DateTimeKind(),
    FieldType.CHOICE: ChoiceKind(),
    FieldType.MULTICHOICE: ListKind(),
    FieldType.TAGS: ListKind(),
    FieldType.PHONE: PhoneKind(),
    FieldType.EMAIL: EmailKind(),
    FieldType.URL: UrlKind(),
    FieldType.LINK: ReferenceKind(),
    FieldType.USER: ReferenceKind(),
    FieldType.ATTACHMENT: ReferenceKind(),
    FieldType.JSON: JsonKind(),
    FieldType.COMPUTED: ComputedKind(),
}
assert set(KINDS) == set(FieldType), "every field type needs a runtime kind"


@hookimpl
def crm_field_kinds() -> Mapping[str, Kind]:
    """The engine's own field kinds, one per built-in field type."""
    return {field_type.value: kind for field_type, kind in KINDS.items()}


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class _EntityForms:
    entity: EntitySpec
    json_by_name: dict[str, Callable[[Any], Any]]
    json_fields: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    row_fields: tuple[tuple[FieldSpec, Callable[[FieldSpec, Any], dict[str, Any]] | None], ...]


@dataclass(frozen=True, slots=True)
class FieldKinds:
    """One engine's field kinds by `type:` name (built-in and plugins'), and who provides each."""

    by_name: Mapping[str, Kind] = field(default_factory=dict)  # a plain dict: read for every field of every row
    providers: Mapping[str, str] = field(default_factory=dict)
    _forms_of: dict[int, _EntityForms] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, answers: Iterable[tuple[str, Mapping[str, Any]]]) -> FieldKinds:
        """From each plugin's answer to crm_field_kinds (the engine's first); PluginError on a name
        taken twice, or a new name that does not say which built-in type stores it."""
        by_name: dict[str, Kind] = {}
        providers: dict[str, str] = {}
        for plugin, answered in answers:
            for name, kind in answered.items():
                if not isinstance(kind, Kind):
                    raise PluginError(f"plugin {plugin} provides the field type '{name}' as {kind!r}; a field kind "
                                      "is an instance of a Kind subclass (engine/runtime/records/fieldkinds.py)")
                is_builtin = name in _BUILTIN_NAMES
                if not is_builtin and (not _NAME.match(name) or not isinstance(kind.stored_as, FieldType)
                                       or kind.stored_as is FieldType.COMPUTED):
                    raise PluginError(f"plugin {plugin} provides the field type '{name}': a new field type needs a "
                                      "lower_case name and `stored_as`, the built-in type it extends (not computed)")
                claim(by_name, providers, name, kind, plugin, "field type")
        missing = sorted(_BUILTIN_NAMES - set(by_name))
        if missing:
            raise PluginError(f"no field kind for the built-in field types {', '.join(missing)}")
        return cls(by_name, providers)

    def of_field(self, spec: FieldSpec) -> Kind:
        """The kind of `spec` (its `type:` name: a built-in type or a plugin's)."""
        return self.by_name[spec.kind]

    def json_converters(self, entity: EntitySpec) -> Mapping[str, Callable[[Any], Any]]:
        """Each field's JSON form (`to_json`) by name: every record the API returns and every
        event a write stores converts each of its fields. Fields whose kind keeps the value as it
        is are left out (the value is its own JSON form)."""
        return self._forms(entity).json_by_name

    def json_fields(self, entity: EntitySpec) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
        """Every field of `entity` in order with its JSON converter (None: the value as it is)."""
        return self._forms(entity).json_fields

    def fill_row(self, entity: EntitySpec, data: Mapping[str, Any], row: dict[str, Any]) -> None:
        """Put the column values of every field of `entity` from `data` into `row` (an insert's)."""
        for spec, to_row in self._forms(entity).row_fields:
            if to_row is None:  # one column of the field's name, the value as it is
                row[spec.name] = data.get(spec.name)
            else:
                row.update(to_row(spec, data.get(spec.name)))

    def _forms(self, entity: EntitySpec) -> _EntityForms:
        """The per-field converters above, worked out once per entity (read for every record written)."""
        known = self._forms_of.get(id(entity))
        if known is not None and known.entity is entity:
            return known
        json_by_name: dict[str, Callable[[Any], Any]] = {}
        row_fields = []
        for spec in entity.fields:
            kind = self.of_field(spec)
            if type(kind).to_json is not Kind.to_json:
                json_by_name[spec.name] = functools.partial(kind.to_json, spec)
            row_fields.append((spec, None if type(kind).to_row is Kind.to_row else kind.to_row))
        forms = _EntityForms(entity, json_by_name, tuple((spec.name, json_by_name.get(spec.name))
                                                         for spec in entity.fields), tuple(row_fields))
        self._forms_of[id(entity)] = forms  # (the entity is kept: its id is not reused)
        return forms

    def field_types(self) -> dict[str, FieldType]:
        """The plugins' field type names → the built-in type storing each: what the loader accepts."""
        return {name: kind.stored_as for name, kind in self.by_name.items()
                if name not in _BUILTIN_NAMES and kind.stored_as is not None}

    def check(self, model: Metamodel) -> None:
        """PluginError naming file:line of every field whose type no installed plugin provides
        (a blueprint loaded with another engine's vocabulary)."""
        problems = [f"{spec.location}: field {entity.name}.{spec.name} has type '{spec.kind}', which no installed "
                    f"plugin provides (known: {', '.join(sorted(self.by_name))})"
                    for entity in model.entities for spec in entity.fields if spec.kind not in self.by_name]
        if problems:
            raise PluginError("\n".join(problems))


_BUILTIN_NAMES = frozenset(field_type.value for field_type in FieldType)
BUILTIN_KINDS = FieldKinds.of([(__name__, crm_field_kinds())])
