"""Row conditions as SQL: a list view's `where:` and a team's `covers:` (engine/metamodel/conditions.py).

The blueprint checked the condition when it loaded; here it becomes one WHERE clause over the
entity's table. `not` is pushed down to the comparisons so that an empty value answers as in
every other expression (`status != 'won'` holds for an empty status; SQL alone would say NULL).
"""

from __future__ import annotations

import ast
import datetime as dt
import zoneinfo
from typing import Any

import sqlalchemy as sa

from engine.metamodel import EntitySpec, FieldType
from engine.metamodel.conditions import ME
from engine.metamodel.expressions import Expression
from engine.runtime.records.errors import QueryInvalid
from engine.runtime.records.fieldkinds import FieldKinds
from engine.runtime.records.queries import _list_contains, _typed
from engine.runtime.storage.times import naive_utc

_FLIP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt,
         ast.In: ast.NotIn, ast.NotIn: ast.In}


def row_condition_sql(expression: Expression, entity: EntitySpec, table: sa.Table, *, kinds: FieldKinds,
                      dialect: str, me: int | None, now: dt.datetime, timezone: str) -> sa.ColumnElement[bool]:
    """The WHERE clause selecting the rows for which `expression` holds."""
    tree = ast.parse(expression.source.strip(), mode="eval").body
    return _Compiler(entity, table, kinds, dialect, me, now, timezone).compile(tree, False)


class _Compiler:
    def __init__(self, entity: EntitySpec, table: sa.Table, kinds: FieldKinds, dialect: str, me: int | None,
                 now: dt.datetime, timezone: str) -> None:
        self.entity, self.table, self.kinds, self.dialect, self.me = entity, table, kinds, dialect, me
        self.now = now.astimezone(dt.timezone.utc)
        self.zone = zoneinfo.ZoneInfo(timezone)

    def compile(self, node: ast.AST, negate: bool) -> sa.ColumnElement[bool]:
        if isinstance(node, ast.BoolOp):
            parts = [self.compile(value, negate) for value in node.values]
            is_and = isinstance(node.op, ast.And) != negate  # De Morgan
            return sa.and_(*parts) if is_and else sa.or_(*parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return self.compile(node.operand, not negate)
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name):
            op = type(node.ops[0])
            return self.compare(node.left.id, _FLIP[op] if negate else op, node.comparators[0])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "is_empty":
            return self.empty(_name(node.args[0]), negate)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "contains":
            column = self.table.c[_name(node.args[0])]
            found = _list_contains(column, str(_constant(node.args[1])), self.dialect)
            return sa.or_(column.is_(None), sa.not_(found)) if negate else sa.and_(column.is_not(None), found)
        if isinstance(node, ast.Name):
            column = self.table.c[node.id]
            return sa.or_(column.is_(None), column.is_(False)) if negate else column.is_(True)
        raise QueryInvalid(f"'{ast.unparse(node)}' cannot be answered by the database", field="where")

    def empty(self, name: str, negate: bool) -> sa.ColumnElement[bool]:
        column = self.table.c[name]
        spec = self.entity.find_field(name)
        blank: list[Any] = [column.is_(None)]
        if spec is not None and spec.value_type in (FieldType.STRING, FieldType.TEXT, FieldType.EMAIL,
                                                     FieldType.PHONE, FieldType.URL):
            blank.append(column == "")
        if spec is not None and spec.type in (FieldType.TAGS, FieldType.MULTICHOICE):
            blank.append(sa.cast(column, sa.String) == "[]")
        condition = sa.or_(*blank)
        return sa.not_(condition) if negate else condition

    def compare(self, name: str, op: type[ast.cmpop], node: ast.AST) -> sa.ColumnElement[bool]:
        column = self.table.c[name]
        if op in (ast.In, ast.NotIn):
            assert isinstance(node, (ast.List, ast.Tuple))
            values = [self.value(name, item) for item in node.elts]
            return column.in_(values) if op is ast.In else sa.or_(column.not_in(values), column.is_(None))
        value = self.value(name, node)
        if value is None:  # me with nobody signed in, or a literal None: only emptiness can match
            return column.is_(None) if op is ast.Eq else column.is_not(None)
        if op is ast.Eq:
            equal: sa.ColumnElement[bool] = column == value
            return equal
        if op is ast.NotEq:
            return sa.or_(column != value, column.is_(None))
        compared: sa.ColumnElement[bool] = {ast.Lt: column.__lt__, ast.LtE: column.__le__, ast.Gt: column.__gt__,
                                            ast.GtE: column.__ge__}[op](value)
        return sa.and_(column.is_not(None), compared)

    def value(self, name: str, node: ast.AST) -> Any:
        if isinstance(node, ast.Name) and node.id == ME:
            return self.me
        moment = self.moment(node)
        if moment is not None:
            if self.entity.has_field(name) and self.entity.field(name).type is FieldType.DATE:
                return moment.astimezone(self.zone).date() if isinstance(moment, dt.datetime) else moment
            if isinstance(moment, dt.datetime):
                return naive_utc(moment)
            start = dt.datetime.combine(moment, dt.time(), self.zone)  # today() against a time: its start
            return naive_utc(start)
        raw = _constant(node)
        if raw is None or isinstance(raw, bool):
            return raw
        return _typed(self.entity, name, str(raw), self.kinds)

    def moment(self, node: ast.AST) -> dt.datetime | dt.date | None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("today", "now"):
            return self.now if node.func.id == "now" else self.now.astimezone(self.zone).date()
        if isinstance(node, ast.BinOp) and isinstance(node.right, ast.Call) and isinstance(node.right.func, ast.Name):
            base = self.moment(node.left)
            if base is None:
                return None
            amount = float(_constant(node.right.args[0]))
            delta = dt.timedelta(days=amount) if node.right.func.id == "days" else dt.timedelta(hours=amount)
            return base + delta if isinstance(node.op, ast.Add) else base - delta
        return None


def _name(node: ast.AST) -> str:
    assert isinstance(node, ast.Name)  # checked when the blueprint loaded
    return node.id


def _constant(node: ast.AST) -> Any:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value: Any = node.operand.value
        return -value
    assert isinstance(node, ast.Constant)
    return node.value
