"""A small sales blueprint with a gated funnel and approvals, for the funnel and approval tests
(inline YAML, written per test). The opportunity walks qualify → demo → quote → won (lost beside):
the demo stage asks for the deck, the customer's questions and a done demo activity; the quote
stage for the signed quote (a PDF or an image) and, above 15 % discount, the price approval.
A sample request needs the manager, and finance as well for a customer with more than two
overdue payments in the last 90 days.
"""

from starlette.testclient import TestClient

from engine.engine import Engine
from tests.support.web import sign_in

APP = """
app: sales
include: [entities/*.yaml, roles.yaml, channels.yaml, calendars.yaml, approvals.yaml, funnels.yaml, sources.yaml]
"""
ROLES = """
roles:
  admin: {admin: true}
  sales_manager:
    entities:
      "*": {read: team, create: all, update: team, assign: team}
  sales_rep:
    entities:
      "*": {read: own, create: all, update: own}
  finance:
    entities:
      "*": {read: all, update: own}
"""
CHANNELS = """
channels:
  wecom_sales: {type: wecom, url: {env: WECOM_SALES_URL}}
"""
CALENDARS = """
calendars:
  office:
    timezone: Asia/Shanghai
    hours: {mon-fri: ["09:00-12:00", "13:00-18:00"]}
    public_holidays: none
"""
ACCOUNT = """
entity: account
fields:
  name: {type: string, required: true}
"""
OPPORTUNITY = """
entity: opportunity
title: name
fields:
  name: {type: string, required: true}
  account: {type: link, entity: account, on_delete: restrict}
  stage: {type: choice, required: true, default: qualify,
          options: {qualify: 需求确认, demo: 方案演示, quote: 方案报价, won: 赢单, lost: 输单}}
  probability: {type: integer, default: 10}
  discount: {type: decimal, default: 0}
  amount: {type: money}
  customer_questions: {type: text}
  concern: {type: choice, options: {price_sensitive: 价格敏感, feature_led: 功能导向}}
  demo_deck: {type: attachment, label: {zh: 演示方案, en: Demo deck}}
  signed_quote: {type: attachment, label: {zh: 客户签字报价单, en: Signed quote}}
  approval_status: {type: choice, options: {none: 无, pending: 审批中, approved: 已批准, rejected: 已驳回}}
  win_reason: {type: choice, options: {price: 价格, product: 产品}}
  loss_reason: {type: choice, options: {price: 价格, competitor: 竞品}}
views:
  board: {field: stage, card: [name]}
"""
ACTIVITY = """
entity: activity
title: subject
fields:
  subject: {type: string, required: true}
  kind: {type: choice, options: {call: 电话, demo: 演示}, default: call}
  done: {type: boolean, default: false}
  opportunity: {type: link, entity: opportunity, on_delete: cascade}
"""
ORDER = """
entity: order
fields:
  order_no: {type: string, required: true}
  account: {type: link, entity: account, on_delete: restrict, required: true}
  payment_due: {type: date}
  paid_on: {type: date}
"""
SAMPLE = """
entity: sample_request
title: subject
fields:
  subject: {type: string, required: true}
  account: {type: link, entity: account, on_delete: restrict, required: true}
  status: {type: choice, options: {draft: 草稿, approved: 已批准, rejected: 已驳回}, default: draft}
"""
APPROVALS = """
approval: price_approval
label: {zh: 价格审批, en: Price approval}
entity: opportunity
channel: wecom_sales
covers: [discount, amount]
steps:
  - name: manager
    label: {zh: 经理审批, en: Manager}
    approvers: [owner.manager]
    sla: {target: 4h, calendar: office, warn_at: [50]}
on_requested: [{set: {approval_status: pending}}]
on_approved: [{set: {approval_status: approved}}]
on_rejected: [{set: {approval_status: rejected}}]
---
approval: sample_approval
label: {zh: 样品审批, en: Sample approval}
entity: sample_request
channel: wecom_sales
counts:
  overdue_payments:
    entity: order
    via: account
    where: "not is_empty(payment_due) and payment_due >= today() - days(90) and (is_empty(paid_on) and payment_due < today() or not is_empty(paid_on) and paid_on > payment_due)"
steps:
  - {name: manager, label: {zh: 经理审批, en: Manager}, approvers: [owner.manager]}
  - {name: finance, label: {zh: 财务会签, en: Finance co-sign}, approvers: [role:finance], when: "overdue_payments > 2"}
on_approved: [{set: {status: approved}}]
on_rejected: [{set: {status: rejected}}]
"""
FUNNELS = """
funnel: sales
entity: opportunity
probability_field: probability
talk_track_field: concern
stages:
  - name: qualify
    probability: 10
    guidance: {zh: 确认预算与决策人, en: Confirm the budget and who decides}
  - name: demo
    probability: 30
    requires:
      - attachment: demo_deck
      - field: customer_questions
      - related: {entity: activity, via: opportunity, where: "kind == 'demo' and done", prefill: {kind: demo, done: true}}
        label: {zh: 记录一次已完成的演示, en: Log a done demo}
    talk_tracks:
      price_sensitive: {zh: 先讲投资回报, en: Lead with the payback}
      feature_led: {zh: 先演示核心功能, en: Show the core features first}
  - name: quote
    probability: 60
    requires:
      - attachment: signed_quote
        types: [application/pdf, image/*]
      - approval: price_approval
        when: "discount > 15"
  - {name: won, kind: won, probability: 100, reason: win_reason}
  - {name: lost, kind: lost, probability: 0, reason: loss_reason}
"""
SOURCES = """
sources:
  partner_portal:
    entity: opportunity
    auth: {type: token, header: X-Webhook-Token, secret_env: TEST_PARTNER_TOKEN}
    event_id: deal_id
    mapping:
      name: title
      account: account_id
      stage: stage
"""
FILES = {"app.yaml": APP, "roles.yaml": ROLES, "channels.yaml": CHANNELS, "calendars.yaml": CALENDARS,
         "entities/account.yaml": ACCOUNT, "entities/opportunity.yaml": OPPORTUNITY,
         "entities/activity.yaml": ACTIVITY, "entities/order.yaml": ORDER, "entities/sample.yaml": SAMPLE,
         "approvals.yaml": APPROVALS, "funnels.yaml": FUNNELS, "sources.yaml": SOURCES}


PASSWORD = "correct horse battery"


def signed_in(runtime: Engine, username: str) -> TestClient:
    """A browser session of one of the funnel tests' users (all share PASSWORD)."""
    return sign_in(runtime, username, PASSWORD, next="/opportunity")
