"""Row conditions: expressions a database can answer (a list view's `where:`, a team's `covers:`).

A row condition is an ordinary blueprint expression (engine/metamodel/expressions.py) kept to
the forms that translate to one SQL WHERE clause, so a view means the same in the JSON API, on
the list screen, in the export and on every page of the list:

- `field == value`, `!=`, `<`, `<=`, `>`, `>=` — the value a literal, `me` (the signed-in user,
  for `owner`, `created_by` and user fields), `today()` or `now()`, optionally `± days(n)` /
  `hours(n)`;
- `field in ['a', 'b']`, `field not in [...]`;
- `is_empty(field)`, `contains(tags_field, 'x')`, a boolean field on its own;
- `and`, `or`, `not` and parentheses.

Empty values behave as in every other expression: `status != 'won'` holds for a record without
a status, as `not is_empty(x)` is needed to exclude it. `check_row_condition` is run when the
blueprint loads, so a condition the database cannot answer, an unknown field or an option the
field does not have is refused at its YAML line (engine/runtime/records/conditions.py compiles it).
"""

from __future__ import annotations

import ast
from collections.abc import Collection

from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.errors import did_you_mean
from engine.metamodel.expressions import Expression
from engine.metamodel.messages import Msg, MsgError

ROW_FUNCTIONS = ("is_empty", "contains", "today", "now", "days", "hours")
ME = "me"
_SYSTEM = ("id", "created_at", "updated_at", "created_by", "owner", "version")
_USER_SYSTEM = ("owner", "created_by")
_LIST_TYPES = frozenset({FieldType.TAGS, FieldType.MULTICHOICE})
_COMPARE = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)
HELP = Msg("a row condition compares fields with values: field == 'x', field in ['a', 'b'], is_empty(field), "
           "contains(tags, 'x'), owner == me, date_field <= today(), joined with and / or / not")


class RowConditionError(MsgError):
    """What in the condition a database cannot answer, or names what does not exist (a `Msg`)."""


def check_row_condition(expression: Expression, entity: EntitySpec, *, allow_me: bool = True) -> None:
    """Raise RowConditionError saying what to change when `expression` is not a row condition of `entity`."""
    tree = ast.parse(expression.source.strip(), mode="eval").body
    _Checker(entity, allow_me).condition(tree)


class _Checker:
    def __init__(self, entity: EntitySpec, allow_me: bool) -> None:
        self.entity = entity
        self.allow_me = allow_me
        self.names = [*entity.field_names(), *_SYSTEM]

    def field(self, node: ast.AST) -> str:
        if not isinstance(node, ast.Name):
            raise RowConditionError(Msg("'{expression}' is not a field name; {help}",
                                        expression=ast.unparse(node), help=HELP))
        if node.id not in self.names:
            raise RowConditionError(Msg("'{name}' is not a field of {entity}; {suggestion}", name=node.id,
                                        entity=self.entity.name, suggestion=did_you_mean(node.id, self.names)))
        return node.id

    def condition(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self.condition(value)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self.condition(node.operand)
        elif isinstance(node, ast.Compare):
            if len(node.ops) != 1 or not isinstance(node.ops[0], _COMPARE):
                raise RowConditionError(Msg("'{expression}': compare one field with one value at a time",
                                            expression=ast.unparse(node)))
            name = self.field(node.left)
            self.value(name, node.comparators[0], isinstance(node.ops[0], (ast.In, ast.NotIn)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "is_empty":
            if len(node.args) != 1:
                raise RowConditionError(Msg("is_empty takes one field: is_empty(owner)"))
            self.field(node.args[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "contains":
            if len(node.args) != 2:
                raise RowConditionError(Msg("contains takes a list field and a value: contains(tags, 'vip')"))
            name = self.field(node.args[0])
            if not self.entity.has_field(name) or self.entity.field(name).type not in _LIST_TYPES:
                raise RowConditionError(Msg("contains() reads a tags or multichoice field; '{name}' is not one",
                                            name=name))
            self.literal(name, node.args[1])
        elif isinstance(node, ast.Name):
            name = self.field(node)
            if not self.entity.has_field(name) or self.entity.field(name).type is not FieldType.BOOLEAN:
                raise RowConditionError(Msg("'{name}' alone is a condition only for a yes/no field; "
                                            "write e.g. not is_empty({name})", name=name))
        else:
            raise RowConditionError(Msg("'{expression}' cannot be answered by the database; {help}",
                                        expression=ast.unparse(node), help=HELP))

    def value(self, name: str, node: ast.AST, many: bool) -> None:
        if many:
            if not isinstance(node, (ast.List, ast.Tuple)) or not node.elts:
                raise RowConditionError(Msg("'in' needs a list of values, e.g. {name} in ['a', 'b']", name=name))
            for item in node.elts:
                self.literal(name, item)
            return
        if isinstance(node, ast.Name) and node.id == ME:
            is_user = name in _USER_SYSTEM or (self.entity.has_field(name)
                                                and self.entity.field(name).type is FieldType.USER)
            if not self.allow_me:
                raise RowConditionError(Msg("'me' (the signed-in user) has no meaning here"))
            if not is_user:
                raise RowConditionError(Msg("'me' is a user: compare it with owner or a user field, not '{name}'",
                                            name=name))
            return
        if _is_time(node):
            return
        self.literal(name, node)

    def literal(self, name: str, node: ast.AST) -> None:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return
        if not isinstance(node, ast.Constant):
            raise RowConditionError(Msg("'{expression}' is not a value the database can compare {name} with; "
                                        "use a literal, me, today() or now()", expression=ast.unparse(node),
                                        name=name))
        if self.entity.has_field(name):
            spec = self.entity.field(name)
            options: Collection[str] = [choice.value for choice in spec.choices]
            text = str(node.value)
            if spec.type in (FieldType.CHOICE, *_LIST_TYPES) and options and text not in options:
                raise RowConditionError(Msg("{name} has no option '{text}'; {suggestion}", name=name, text=text,
                                            suggestion=did_you_mean(text, options)))


def _is_time(node: ast.AST) -> bool:
    """today(), now(), or either ± days(n) / hours(n)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("today", "now"):
        return not node.args
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) and _is_time(node.left):
        right = node.right
        return (isinstance(right, ast.Call) and isinstance(right.func, ast.Name) and right.func.id in ("days", "hours")
                and len(right.args) == 1 and isinstance(right.args[0], ast.Constant)
                and isinstance(right.args[0].value, (int, float)))
    return False
