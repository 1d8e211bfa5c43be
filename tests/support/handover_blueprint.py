"""A small blueprint with one handover flow, for the handover tests (inline YAML, written per test).

The sales → delivery handover: solution (sales, 2 business hours; hands over the contract
number) → signing (legal, 4 business hours; the e-contract platform's signed webhook fills in
signed_at and completes it) → payment (finance, 1 business day) → done. The calendar counts China's public
holidays, so a clock left over Qingming (4–6 April 2026) stands still.
"""

from __future__ import annotations

import hashlib
import hmac

ECONTRACT_SECRET = "test-econtract-secret"

APP = "app: handovers\ninclude: [entities/*.yaml, roles.yaml, channels.yaml, calendars.yaml, sources.yaml, handover.yaml]\n"
ROLES = """
roles:
  admin: {admin: true}
  sales_rep:
    entities:
      "*": {read: all, create: all, update: all}
  legal:
    entities:
      "*": {read: all, update: all}
  finance:
    entities:
      "*": {read: all, update: all}
"""
CHANNELS = "channels:\n  dingtalk_delivery: {type: dingtalk, url: {env: DT_URL}}\n"
CALENDARS = """
calendars:
  office:
    timezone: Asia/Shanghai
    hours: {mon-fri: ["09:00-12:00", "13:30-18:00"]}
    public_holidays: china
"""
HANDOVER_ENTITY = """
entity: delivery_handover
title: name
fields:
  name: {type: string, required: true}
  contract_no: {type: string, unique: true}
  node:
    type: choice
    default: solution
    options: {solution: 方案确认, signing: 合同签署, payment: 回款确认, done: 已交付}
  contract_file: {type: attachment}
  signed_at: {type: datetime}
  tags: {type: tags, options: {handover_overdue: 交接超时}}
"""
SOURCES = f"""
sources:
  econtract_signed:
    entity: delivery_handover
    auth: {{type: hmac, header: X-Signature, secret_env: TEST_ECONTRACT_SECRET, algorithm: sha256,
           timestamp_header: X-Timestamp, max_skew_seconds: 300}}
    event_id: event.id
    match: contract_no
    mapping:
      contract_no: contract.number
      signed_at: contract.signed_at
"""
HANDOVER = """
handover: sales_to_delivery
label: {zh: 销售→交付交接, en: Sales to delivery handover}
entity: delivery_handover
field: node
channel: dingtalk_delivery
calendar: office
escalate_to: [owner.manager]
nodes:
  - name: solution
    role: sales_rep
    sla: 2h
    requires:                 # sales hands over the contract number before legal takes it
      - field: contract_no
  - name: signing
    role: legal
    sla: 4h
    requires:                 # the e-contract platform's signed webhook fills it in
      - field: signed_at
    completed_by: econtract_signed
  - name: payment
    role: finance
    sla: 1bd
  - name: done
    kind: done
"""


def handover_blueprint(**replaced: str) -> dict[str, str]:
    files = {"app.yaml": APP, "roles.yaml": ROLES, "channels.yaml": CHANNELS, "calendars.yaml": CALENDARS,
             "entities/delivery_handover.yaml": HANDOVER_ENTITY, "sources.yaml": SOURCES, "handover.yaml": HANDOVER}
    files.update(replaced)
    return files


def econtract_headers(body: bytes, stamp: str, secret: str = ECONTRACT_SECRET) -> dict[str, str]:
    """The e-contract platform's signature headers: HMAC-SHA256 over "timestamp.body"."""
    signature = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Signature": signature, "X-Timestamp": stamp, "Content-Type": "application/json"}
