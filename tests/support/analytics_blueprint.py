"""A small sales blueprint for the analytics tests: opportunities walk qualify → demo → quote →
contract → won (lost beside) with skips and moves back allowed and nothing demanded, so a
test drives every kind of move; two teams (east, north) and a dashboard of every widget kind."""

APP = """
app: sales
settings: {timezone: Asia/Shanghai, currency: CNY}
include: [entities/*.yaml, roles.yaml, funnels.yaml, dashboards.yaml]
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
      - {name: dwell, kind: heatmap, label: {zh: 阶段停留（天）, en: Stage dwell (days)}, funnel: deals,
         rows: owner, value: dwell_mean}
      - {name: health, kind: stages, label: {zh: 阶段健康度, en: Stage health}, funnel: deals}
"""
FILES = {"app.yaml": APP, "roles.yaml": ROLES, "entities/opportunity.yaml": OPPORTUNITY, "funnels.yaml": FUNNELS,
         "dashboards.yaml": DASHBOARDS}
