"""A small blueprint (lead, activity, two channels) that rule, routing and source tests extend
with their own automation document."""

from __future__ import annotations

from pathlib import Path

from engine.metamodel import Metamodel
from tests.support.blueprints import load, write_blueprint

APP = """
    app: shop
    include: [entities/*.yaml, channels.yaml, automation.yaml]
"""

CHANNELS = """
    channels:
      wecom: {type: wecom, url: {env: WECOM_URL}}
      wecom_sales: {type: wecom, url: {env: WECOM_SALES_URL}}
"""
LEAD = """
    entity: lead
    fields:
      name: {type: string, required: true}
      company: {type: string}
      phone: {type: phone}
      source: {type: choice, options: {website: 官网, douyin: 抖音, wecom: 企微}}
      region: {type: choice, options: {east: 华东, south: 华南, north: 华北}}
      industry: {type: choice, options: {manufacturing: 制造业, medical_devices: 医疗器械, other: 其他}}
      registered_capital: {type: money}
      hiring_recently: {type: boolean, default: false}
      has_tenders: {type: boolean, default: false}
      score: {type: integer, default: 0}
      grade: {type: choice, options: {S: S, A: A, B: B, C: C}}
      tags: {type: tags, options: {tender: 招标中, high_budget: 高预算, vip: VIP}}
      status: {type: choice, default: new,
               options: {new: 新, contacted: 已联系, qualified: 合格, converted: 已转化, disqualified: 无效}}
"""

ACTIVITY = """
    entity: activity
    fields:
      subject: {type: string, required: true}
      due_at: {type: datetime}
      lead: {type: link, entity: lead, on_delete: cascade}
"""


def load_automation(tmp_path: Path, automation: str, *, folder: str = "bp") -> Metamodel:
    """A small blueprint (lead, activity) plus the given rules/routing/sources documents."""
    return load(write_blueprint(tmp_path / folder, {
        "app.yaml": APP, "entities/lead.yaml": LEAD, "entities/activity.yaml": ACTIVITY,
        "channels.yaml": CHANNELS, "automation.yaml": automation}))
