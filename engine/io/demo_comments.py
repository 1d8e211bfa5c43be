"""Demo conversations: reps @mention their manager on a few of their leads and the manager
answers, through the same comments service as the record page — so the demo opens with
comments on record pages and unread @mentions in the manager's and the reps' inboxes."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from engine.rules import Clock
from engine.runtime.automation.comments import Comments
from engine.runtime.records.actors import Actor

if TYPE_CHECKING:  # the demo receives an engine; it never builds one
    from engine.engine import Engine

_ASKS = ("@manager 客户想要批量折扣，能否按 9 折报价？", "@manager 对方技术负责人下周到访，麻烦一起参加演示。",
         "@manager 这家的预算在审批中，需要我们先提供案例视频。")
_ANSWERS = ("@{rep} 可以，先发起价格审批，我来批。", "@{rep} 好的，周三下午我有空，约在会议室 A。",
            "@{rep} 把苏州精工的案例发过去，附上报价对比表。")


def seed_comments(engine: Engine, clock: Clock, people: Sequence[Actor], rng: random.Random) -> int:
    """A question and an answer on one lead of each rep who has a manager; how many comments."""
    manager = next((person for person in people if person.username == "manager"), None)
    if manager is None:
        return 0
    comments = Comments(engine.model, engine.schema, engine.db, clock, engine.records, engine.base_url)
    table = engine.schema.table("lead")
    written = 0
    for rep in (person for person in people if person.username in ("wang", "li")):
        with engine.db.read() as connection:
            lead_id = connection.execute(sa.select(table.c.id).where(table.c.owner == rep.id)
                                         .order_by(table.c.id).limit(1)).scalar()
        if lead_id is None:
            continue
        pick = rng.randrange(len(_ASKS))
        comments.add("lead", int(lead_id), _ASKS[pick], actor=rep)
        comments.add("lead", int(lead_id), _ANSWERS[pick].format(rep=rep.username), actor=manager)
        written += 2
    return written
