"""Pure routing: given a policy, a record, the candidate reps and the stored cursor, who
gets the record — and the new cursor to store.

No database and no process memory: the runtime loads the reps' state (status, team, open
records) and the policy's cursor for the chosen pool, calls `route_record`, and writes the
owner and `decision.cursor` in the same transaction, holding a lock on the cursor row
(`SELECT … FOR UPDATE` on PostgreSQL). That is what keeps round robin and weighted
counts fair across restarts and across processes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.metamodel.routing import BackupSpec, PoolSpec, RoutingPolicySpec, Strategy
from engine.metamodel.sources import ANY_VALUE
from engine.rules.expressions import Evaluator
from engine.rules.rules import ConditionResult, evaluate_condition, show_value


class RepStatus(enum.Enum):
    ACTIVE = "active"
    ON_LEAVE = "on_leave"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Rep:
    """A candidate as the runtime knows them now. `cap` and `weight`, when given, override the
    policy's for this person; `open_count` counts their records matching the policy's open_when."""

    username: str
    status: RepStatus = RepStatus.ACTIVE
    team: str | None = None
    role: str | None = None
    open_count: int = 0
    cap: int | None = None
    weight: int | None = None
    id: int | None = None
    manager: str | None = None  # the username of their manager (for a backup `owner.manager`)
    assigned_today: int = 0      # records the policy gave them since local midnight (cap_per_day)
    assigned_this_week: int = 0  # … since Monday's local midnight (cap_per_week)


@dataclass(frozen=True, slots=True)
class CursorState:
    """What a pool remembers between records: who got the last one (round robin, and ties of
    least loaded) and each member's running credit (smooth weighted round robin)."""

    last: str | None = None
    credits: tuple[tuple[str, int], ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"last": self.last, "credits": dict(self.credits)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> CursorState:
        if not data:
            return cls()
        return cls(data.get("last"), tuple((str(k), int(v)) for k, v in (data.get("credits") or {}).items()))


@dataclass(frozen=True, slots=True)
class Skip:
    username: str
    reason: str


class RoutingOutcome(enum.Enum):
    ASSIGNED = "assigned"
    BACKUP = "backup"
    QUEUED = "queued"
    UNASSIGNED = "unassigned"


@dataclass(frozen=True, slots=True)
class PoolChoice:
    """Which pool of the policy serves this record, why, and the key of its cursor."""

    key: str | None
    reason: str
    cursor_key: str


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Who gets the record, the trail of who was passed over and why, and the new cursor."""

    policy: str
    entity: str
    strategy: Strategy
    outcome: RoutingOutcome
    username: str | None
    pool: str | None
    pool_reason: str
    reason: str
    skipped: tuple[Skip, ...]
    cursor_key: str
    cursor: CursorState
    queue: str | None = None
    alert: str | None = None
    alert_text: str = ""

    @property
    def is_assigned(self) -> bool:
        return self.username is not None


@dataclass(frozen=True, slots=True)
class PolicySelection:
    """The policy an automatic assign uses: every policy tried, in order, with its match."""

    policy: str | None
    checked: tuple[tuple[str, ConditionResult], ...]
    reason: str


def select_policy(policies: Sequence[RoutingPolicySpec], entity: str, values: Mapping[str, Any],
                  evaluator: Evaluator) -> PolicySelection:
    """The first policy of `entity` (priority, then as written) whose match holds."""
    ordered = sorted((p for p in policies if p.entity == entity), key=lambda p: (p.priority, p.position))
    checked = []
    for policy in ordered:
        result = evaluate_condition(policy.match, values, evaluator)
        checked.append((policy.name, result))
        if result.is_true:
            why = f"its match {policy.match.source} is true" if policy.match else "it has no match condition"
            return PolicySelection(policy.name, tuple(checked), f"policy '{policy.name}' applies: {why}")
    reason = f"no routing policy of {entity} matches" if ordered else f"{entity} has no routing policy"
    return PolicySelection(None, tuple(checked), reason)


def cursor_key(policy: RoutingPolicySpec, pool: str | None) -> str:
    """The key of the stored cursor of one pool of one policy."""
    return f"{policy.entity}:{policy.name}:{pool if pool is not None else '-'}"


def choose_pool(policy: RoutingPolicySpec, values: Mapping[str, Any]) -> PoolChoice:
    """The pool for this record: the policy's one pool, or the pool for the field's value."""
    if not policy.strategy.is_by_field:
        pool = policy.pool(ANY_VALUE)
        return PoolChoice(ANY_VALUE, f"one pool: {pool.describe() if pool else 'no members'}",
                          cursor_key(policy, ANY_VALUE))
    value = values.get(policy.field or "")
    key = None if value is None else str(value)
    shown = f"{policy.field} = {show_value(value)}"
    pool = policy.pool(key) if key is not None else None
    if pool is not None:
        return PoolChoice(pool.key, f"{shown} → pool '{pool.key}': {pool.describe()}", cursor_key(policy, pool.key))
    fallback = policy.pool(ANY_VALUE)
    if fallback is not None:
        return PoolChoice(ANY_VALUE, f"{shown} has no pool of its own → pool '*': {fallback.describe()}",
                          cursor_key(policy, ANY_VALUE))
    return PoolChoice(None, f"{shown} has no pool and the policy has no '*' pool", cursor_key(policy, None))


def route_record(policy: RoutingPolicySpec, values: Mapping[str, Any], reps: Sequence[Rep],
                 cursor: CursorState) -> RoutingDecision:
    """Choose a rep for the record by `policy`; `cursor` is the stored state of the pool
    `choose_pool` names. Falls back to the backup rep, then the fallback queue."""
    choice = choose_pool(policy, values)
    pool = policy.pool(choice.key) if choice.key is not None else None
    candidates, skipped = pool_members(pool, reps) if pool is not None else ([], [])
    eligible = []
    for rep in candidates:
        why = why_not_eligible(rep, policy)
        if why is None:
            eligible.append(rep)
        else:
            skipped.append(Skip(rep.username, why))
    if eligible and pool is not None:
        chosen, reason, new_cursor = _pick(policy.within, candidates, eligible, pool, cursor)
        return _decision(policy, choice, RoutingOutcome.ASSIGNED, chosen, reason, skipped, new_cursor)
    return _fall_back(policy, choice, values, reps, _why_nobody(policy, pool, choice, candidates), skipped, cursor)


def _decision(policy: RoutingPolicySpec, choice: PoolChoice, outcome: RoutingOutcome, username: str | None,
              reason: str, skipped: list[Skip], cursor: CursorState, alert_text: str = "") -> RoutingDecision:
    is_waiting = outcome in (RoutingOutcome.QUEUED, RoutingOutcome.UNASSIGNED)
    return RoutingDecision(policy.name, policy.entity, policy.strategy, outcome, username, choice.key, choice.reason,
                           reason, tuple(skipped), choice.cursor_key, cursor,
                           queue=policy.fallback_queue if is_waiting else None,
                           alert=policy.alert if is_waiting else None, alert_text=alert_text)


def pool_members(pool: PoolSpec, reps: Sequence[Rep]) -> tuple[list[Rep], list[Skip]]:
    """The pool's members in a stable order (listed first, then the team by username), and
    listed usernames no rep has."""
    by_name = {rep.username: rep for rep in reps}
    members: list[Rep] = []
    missing: list[Skip] = []
    for username in pool.members:
        if username in by_name:
            members.append(by_name[username])
        else:
            missing.append(Skip(username, "no such active user"))
    if pool.team is not None:
        team = sorted((rep for rep in reps if rep.team == pool.team and (pool.role is None or rep.role == pool.role)),
                      key=lambda rep: rep.username)
        members.extend(rep for rep in team if rep.username not in pool.members)
    return members, missing


def why_not_eligible(rep: Rep, policy: RoutingPolicySpec) -> str | None:
    """Why this rep cannot take a record now (disabled, on leave, at cap), or None."""
    absent = why_absent(rep, policy)
    if absent is not None:
        return absent
    cap = rep.cap if rep.cap is not None else policy.cap_for(rep.username)
    if cap is not None and rep.open_count >= cap:
        return f"at cap ({rep.open_count}/{cap} open)"
    if policy.cap_per_day is not None and rep.assigned_today >= policy.cap_per_day:
        return f"at daily cap ({rep.assigned_today}/{policy.cap_per_day} today)"
    if policy.cap_per_week is not None and rep.assigned_this_week >= policy.cap_per_week:
        return f"at weekly cap ({rep.assigned_this_week}/{policy.cap_per_week} this week)"
    return None


def why_absent(rep: Rep, policy: RoutingPolicySpec) -> str | None:
    """'disabled', 'on leave' (when the policy skips reps on leave), or None."""
    if rep.status is RepStatus.DISABLED:
        return "disabled"
    if rep.status is RepStatus.ON_LEAVE and policy.skip_on_leave:
        return "on leave"
    return None


def _pick(strategy: Strategy, candidates: list[Rep], eligible: list[Rep], pool: PoolSpec,
          cursor: CursorState) -> tuple[str, str, CursorState]:
    """(username, reason, new cursor) by the strategy used inside the pool."""
    order = [rep.username for rep in candidates]
    names = {rep.username for rep in eligible}
    if strategy is Strategy.LEAST_LOADED:
        fewest = min(rep.open_count for rep in eligible)
        tied = {rep.username for rep in eligible if rep.open_count == fewest}
        chosen = _next_after(order, cursor.last, tied)
        others = ", ".join(f"{rep.username} {rep.open_count}" for rep in eligible if rep.username != chosen)
        reason = f"least loaded: {chosen} has {fewest} open" + (f" (others: {others})" if others else "")
        if len(tied) > 1:
            reason += "; tie broken in turn"
        return chosen, reason, CursorState(chosen, cursor.credits)
    if strategy is Strategy.WEIGHTED:
        credits = dict(cursor.credits)
        weights = {rep.username: rep.weight if rep.weight is not None else pool.weight(rep.username)
                   for rep in eligible}
        for username, weight in weights.items():
            credits[username] = credits.get(username, 0) + weight
        chosen = max((rep.username for rep in eligible), key=lambda name: (credits[name], -order.index(name)))
        credits[chosen] -= sum(weights.values())
        shares = ", ".join(f"{name} {weight}" for name, weight in weights.items())
        return chosen, f"weighted turn (weights: {shares})", CursorState(chosen, tuple(sorted(credits.items())))
    chosen = _next_after(order, cursor.last, names)
    after = f"after {cursor.last}" if cursor.last in order else "from the start"
    return chosen, f"round robin: next in turn {after}", CursorState(chosen, cursor.credits)


def _next_after(order: list[str], last: str | None, allowed: set[str]) -> str:
    """The first allowed name after `last` in the circular `order` (from the start without `last`)."""
    start = order.index(last) + 1 if last in order else 0
    for offset in range(len(order)):
        name = order[(start + offset) % len(order)]
        if name in allowed:
            return name
    raise ValueError("no allowed name in order")


def find_backup(spec: BackupSpec, values: Mapping[str, Any], reps: Sequence[Rep],
                policy: RoutingPolicySpec) -> tuple[Rep | None, str]:
    """The rep a backup spec names for this record, and how to name it in the trail: the named
    rep; the manager of the user in `relation` (the record's current owner for owner.manager); or
    the first present member, by username, of the team with the role."""
    if spec.username is not None:
        return next((rep for rep in reps if rep.username == spec.username), None), spec.username
    if spec.relation is not None:
        user = values.get(spec.relation)
        holder = next((rep for rep in reps if rep.id is not None and rep.id == user), None)
        manager = holder.manager if holder is not None else None
        found = next((rep for rep in reps if rep.username == manager), None) if manager else None
        return found, manager or spec.describe()
    team = sorted((rep for rep in reps if rep.team == spec.team and (spec.role is None or rep.role == spec.role)),
                  key=lambda rep: rep.username)
    present = next((rep for rep in team if why_absent(rep, policy) is None), None)
    return (present or (team[0] if team else None)), spec.describe()


def _why_nobody(policy: RoutingPolicySpec, pool: PoolSpec | None, choice: PoolChoice,
                candidates: list[Rep]) -> str:
    if pool is None:
        return f"no pool serves this record ({choice.reason})"
    label = f"pool '{pool.key}' of policy '{policy.name}'" if pool.key != ANY_VALUE else \
        f"the pool of policy '{policy.name}'"
    if pool.is_empty:
        return f"{label} has no members"
    if not candidates:
        return f"{label} ({pool.describe()}) has no active user"
    return f"nobody in {label} can take it"


def _fall_back(policy: RoutingPolicySpec, choice: PoolChoice, values: Mapping[str, Any], reps: Sequence[Rep],
               nobody: str, skipped: list[Skip], cursor: CursorState) -> RoutingDecision:
    """The backup rep (caps do not apply to a backup), else the fallback queue with an alert."""
    spec = policy.backup_for(choice.key)
    if spec is not None:
        backup, named = find_backup(spec, values, reps, policy)
        missing = f"the {spec.relation} has no manager" if spec.relation is not None and named == spec.describe() \
            else "no such active user"
        why = missing if backup is None else why_absent(backup, policy)
        if backup is not None and why is None:
            return _decision(policy, choice, RoutingOutcome.BACKUP, backup.username,
                             f"{nobody}; backup rep {backup.username} ({spec.describe()}) takes it"
                             if backup.username != spec.describe() else
                             f"{nobody}; backup rep {backup.username} takes it", skipped, cursor)
        skipped = [*skipped, Skip(named, f"backup rep, {why}")]
    outcome = RoutingOutcome.QUEUED if policy.fallback_queue else RoutingOutcome.UNASSIGNED
    where = f"it waits in queue '{policy.fallback_queue}'" if policy.fallback_queue else "it stays unassigned"
    alert_text = f"{policy.entity} not assigned by routing policy '{policy.name}': {nobody}; {where}"
    if skipped:
        alert_text += " (skipped: " + ", ".join(f"{s.username} {s.reason}" for s in skipped) + ")"
    return _decision(policy, choice, outcome, None, f"{nobody}; {where}", skipped, cursor, alert_text)
