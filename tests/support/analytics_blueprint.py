"""A small sales blueprint for the analytics tests: opportunities walk qualify → demo → quote →
contract → won (lost beside) with skips and moves back allowed and nothing demanded, so a
test drives every kind of move; two teams (east, north) and a dashboard of every widget kind."""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.engine import Engine
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM, Actor
from engine.rules import FakeClock

APP = """
app: sales
settings: {timezone: Asia/Shanghai, currency: CNY}
include: [entities/*.yaml, roles.yaml, funnels.yaml, dashboards.yaml, channels.yaml, jobs.yaml]
menu:
  - label: Sales
    items: [opportunity]
"""
ROLES = """
roles:
  admin: {admin: true}
  sales_manager:
    entities:
      "*": {read: team, create: all, update: team, assign: team, export: team}
  sales_rep:
    entities:
      "*": {read: own, create: all, update: own, export: own}
"""
OPPORTUNITY = """
entity: opportunity
label: {zh: 商机, en: Opportunity}
title: name
fields:
  name: {type: string, required: true}
  stage:
    type: choice
    required: true
    default: qualify
    label: {zh: 阶段, en: Stage}
    options:
      qualify: {zh: 需求确认, en: Qualify}
      demo: {zh: 方案演示, en: Demo}
      quote: {zh: 方案报价, en: Quote}
      contract: {zh: 合同签署, en: Contract}
      won: {zh: 赢单, en: Won}
      lost: {zh: 输单, en: Lost}
  outcome: {type: text, label: {zh: 结果说明, en: Outcome}}
  amount: {type: money, currency: CNY, min: 0, label: {zh: 金额, en: Amount}}
  industry:
    type: choice
    label: {zh: 行业, en: Industry}
    options:
      manufacturing: {zh: 制造业, en: Manufacturing}
      retail: {zh: 零售, en: Retail}
"""
FUNNELS = """
funnel: deals
entity: opportunity
moves: {forward: true, skip: true, back: true, lose: true}
stages:
  - name: qualify
  - name: demo
  - name: quote
  - name: contract
  - {name: won, kind: won, reason: outcome}
  - {name: lost, kind: lost, reason: outcome}
"""
DASHBOARDS = """
dashboards:
  pipeline:
    label: {zh: 销售看板, en: Pipeline}
    home: [sales_manager, sales_rep]
    period: month
    filters: [industry, owner]
    widgets:
      - {name: open_deals, kind: card, label: {zh: 进行中商机, en: Open deals}, entity: opportunity,
         where: {stage__in: "qualify,demo,quote,contract"}, period: none, target: {value: 5, better: higher, warn: 3}}
      - {name: by_stage, kind: funnel, label: {zh: 各阶段金额, en: Amount per stage}, funnel: deals,
         measures: ["sum:amount", count], period: none}
      - {name: per_rep, kind: bar, label: {zh: 各销售商机数, en: Deals per rep}, entity: opportunity, by: owner}
      - {name: amounts, kind: table, label: {zh: 金额分布, en: Amounts}, entity: opportunity, by: industry,
         measures: [count, "sum:amount", "avg:amount", "median:amount", "p90:amount"], period: none}
      - {name: age, kind: table, label: {zh: 最近推进用时, en: Time to last move}, entity: opportunity, by: owner,
         measures: ["avg:updated_at-created_at", "median:updated_at-created_at"], period: none}
      - {name: dwell, kind: heatmap, label: {zh: 阶段停留（天）, en: Stage dwell (days)}, funnel: deals,
         rows: owner, value: dwell_mean}
      - {name: health, kind: stages, label: {zh: 阶段健康度, en: Stage health}, funnel: deals}
"""
CHANNELS = """
channels:
  dingtalk_sales: {type: dingtalk, url: {env: DT_URL}, format: markdown}
templates:
  rep_brief:
    text: |
      ### {{ person.name }} 本周流程体检
      - 新商机：{{ counts.new_deals }}（团队中位数 {{ team_median.new_deals }}）
      - 报价中：{{ counts.in_quote }}（团队中位数 {{ team_median.in_quote }}）
      - 本周推进阶段：{{ counts.moves }}（团队中位数 {{ team_median.moves }}）
      {% if gap %}最大差距：{{ gap.name }} {{ gap.value }} vs {{ gap.median }}{% endif %}
      [查看看板]({{ link }})
"""
JOBS = """
jobs:
  rep_brief:
    cron: "0 9 * * mon"
    timezone: Asia/Shanghai
    channel: dingtalk_sales
    template: rep_brief
    per: [sales_rep]
    dashboard: pipeline
    counts:
      new_deals: {entity: opportunity, created_within: 30d}
      in_quote: {entity: opportunity, where: {stage: quote}}
      moves: {entity: opportunity, event: stage_changed, within: 7d}
"""
FILES = {"app.yaml": APP, "channels.yaml": CHANNELS, "jobs.yaml": JOBS, "roles.yaml": ROLES, "entities/opportunity.yaml": OPPORTUNITY, "funnels.yaml": FUNNELS,
         "dashboards.yaml": DASHBOARDS}


START = dt.datetime(2026, 11, 2, 1, 0, tzinfo=dt.timezone.utc)  # 09:00 on Monday 2 November in Shanghai
PATH = ["qualify", "demo", "quote", "contract", "won"]
# Five walks, each step (days after the previous move, stage entered). B returns to demo, C skips.
WALKS = {
    "A": [(2, "demo"), (3, "quote"), (4, "contract"), (1, "won")],
    "B": [(1, "demo"), (2, "quote"), (1, "demo"), (2, "quote"), (5, "lost")],
    "C": [(3, "quote"), (2, "won")],
    "D": [(4, "demo"), (6, "lost")],
    "E": [(1, "demo"), (1, "quote"), (2, "contract")],
}
OWNERS = ["wang"] * 10 + ["li"] * 5 + ["zhao"] * 5


def walk(index: int) -> list[tuple[float, str]]:
    stretch = (index % 3) * 0.5  # 0, ½ or 1 day more on each step, so dwell times differ
    return [(days + stretch, stage) for days, stage in WALKS["ABCDE"[index % 5]]]


def build_world(make_engine: Any, clock: FakeClock, files: dict[str, str] | None = None,
                *, tick: bool = False) -> tuple[Engine, dict[str, Actor], list[int]]:
    """20 opportunities of three reps in two teams walking the funnel over three weeks (≈200 events).
    `files` replace or add blueprint files; with `tick`, the timer worker runs before each move
    (so SLA breaches due by then are noted first)."""
    clock.set(START)
    runtime = make_engine({**FILES, **(files or {})})
    worker = runtime.worker(role="timers") if tick else None
    people = {user.username: runtime.users.add(user) for user in (
        NewUser("zhou", "周经理", "sales_manager", "east", password="pw-correct-horse"),
        NewUser("wang", "王磊", "sales_rep", "east", "zhou", password="pw-correct-horse"),
        NewUser("li", "李娜", "sales_rep", "east", "zhou", password="pw-correct-horse"),
        NewUser("sun", "孙经理", "sales_manager", "north", password="pw-correct-horse"),
        NewUser("zhao", "赵强", "sales_rep", "north", "sun", password="pw-correct-horse"))}
    ids = [runtime.records.create("opportunity", {
        "name": f"商机{index:02d}", "owner": people[owner].id, "amount": 10000 * (index + 1),
        "industry": "manufacturing" if index % 2 == 0 else "retail"}, actor=SYSTEM).record["id"]
        for index, owner in enumerate(OWNERS)]
    moves = []
    for index in range(len(OWNERS)):
        at = START
        for days, stage in walk(index):
            at += dt.timedelta(days=days)
            moves.append((at, index, stage))
    for at, index, stage in sorted(moves):
        clock.set(at)
        if worker is not None:
            while worker.tick().fired:
                pass
        reason = {"outcome": "客户已签约" if stage == "won" else "预算取消"} if stage in ("won", "lost") else {}
        runtime.records.update("opportunity", ids[index], {"stage": stage, **reason}, actor=SYSTEM)
    clock.set(dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.timezone.utc))
    return runtime, people, ids


