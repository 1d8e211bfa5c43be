"""Realistic demo data for the shipped CRM blueprint, written through RecordService.

Deterministic (seeded) so screenshots and demos look the same every time. Records are
backdated over the last 120 days by running the writes on a clock set to each record's
moment, so the event log and every later metric see a believable history.

The funnels hold here as everywhere: every lead and opportunity past its first stage earned
it — the first touch logged, the demo deck uploaded, the demo logged, the signed quote and
contract attached, the price and contract approvals requested and decided by the approvers —
at believable moments, so the stage_changed events carry real evidence and dwell times. A few
approvals are left pending, so the manager, finance and legal open the demo with tasks waiting.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from engine.io.demo_import import import_demo_ledger
from engine.rules import FakeClock
from engine.io.demo_comments import seed_comments
from engine.runtime.automation.conversions import Conversions
from engine.runtime.automation.inbox import inbox_table
from engine.runtime.ops.audit import AuditLog
from engine.runtime.ops.users import NewUser
from engine.runtime.background.timers import fire_due_timers
from engine.runtime.storage.times import as_utc, naive_utc
from engine.runtime.records.actors import SYSTEM, Actor

if TYPE_CHECKING:  # the demo receives an engine; it never builds one
    from engine.engine import Engine

# Demo sign-ins: each user's own password, "crm-demo-" + username (printed by `crm demo`).
USERS = (
    NewUser("admin", "系统管理员", "admin", None, None, "admin@demo.example", "13900000000"),
    NewUser("manager", "周经理", "sales_manager", "east", None, "zhou@demo.example", "13900000001"),
    NewUser("wang", "王磊", "sales_rep", "east", "manager", "wang@demo.example", "13900000002"),
    NewUser("li", "李娜", "sales_rep", "east", "manager", "li@demo.example", "13900000003"),
    NewUser("zhao", "赵敏", "sales_rep", "south", None, "zhao@demo.example", "13900000005"),
    NewUser("chen", "陈静", "service_agent", "service", None, "chen@demo.example", "13900000004"),
    NewUser("qian", "钱芳", "finance", "finance", None, "qian@demo.example", "13900000006"),
    NewUser("sun", "孙律师", "legal", "legal", None, "sun@demo.example", "13900000007"),
    # the departments that own handover nodes (handover.yaml)
    NewUser("ma", "马工", "delivery", "delivery", None, "ma@demo.example", "13900000008"),
    NewUser("he", "何医生", "medical", "medical", None, "he@demo.example", "13900000009"),
    NewUser("luo", "罗师傅", "logistics", "logistics", None, "luo@demo.example", "13900000010"),
)


def demo_password(username: str) -> str:
    return f"crm-demo-{username}"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = ["伟", "芳", "娜", "敏", "静", "磊", "强", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英", "霞",
         "平", "刚", "桂英", "建华", "晓东", "志强", "海燕", "丽华", "文博", "思远", "子涵", "雨桐"]
CITIES = {"east": [("上海", "上海"), ("江苏", "苏州"), ("浙江", "杭州"), ("山东", "青岛"), ("江苏", "南京")],
          "south": [("广东", "深圳"), ("广东", "广州"), ("福建", "厦门"), ("广西", "南宁")],
          "north": [("北京", "北京"), ("天津", "天津"), ("河北", "石家庄")],
          "central": [("湖北", "武汉"), ("湖南", "长沙"), ("河南", "郑州")],
          "southwest": [("四川", "成都"), ("重庆", "重庆"), ("云南", "昆明")],
          "northwest": [("陕西", "西安"), ("甘肃", "兰州")],
          "northeast": [("辽宁", "沈阳"), ("黑龙江", "哈尔滨")]}
COMPANY_WORDS = ["华东", "精工", "恒通", "瑞康", "智联", "远航", "鼎盛", "新锐", "博远", "天成", "宏达", "安泰", "明德",
                 "云启", "金桥", "海纳", "中科", "汇丰", "启明", "卓越"]
INDUSTRY_SUFFIX = {"manufacturing": "机械制造有限公司", "medical_devices": "医疗器械有限公司", "saas": "软件科技有限公司",
                   "education": "教育科技有限公司", "logistics": "供应链管理有限公司", "retail": "商贸有限公司",
                   "finance": "融资租赁有限公司", "other": "实业有限公司"}


@dataclass
class DemoSummary:
    users: list[Actor]
    counts: dict[str, int]


class _Writer:
    """Creates records as a given user at a given moment."""

    def __init__(self, engine: Engine, clock: FakeClock, rng: random.Random, now: dt.datetime) -> None:
        self.engine, self.clock, self.rng, self.now = engine, clock, rng, now
        self.counts: dict[str, int] = {}

    def create(self, entity: str, values: dict[str, Any], actor: Actor, days_ago: float) -> dict[str, Any]:
        """Create as `actor` with system rights (the loader assigns freely), owned by them by default."""
        self.clock.set(self.now - dt.timedelta(days=days_ago))
        acting = dataclasses.replace(actor, is_system=True)
        record = self.engine.records.create(entity, {"owner": actor.id, **values}, actor=acting).record
        self.counts[entity] = self.counts.get(entity, 0) + 1
        return record

    def arrive(self, entity: str, values: dict[str, Any], days_ago: float) -> dict[str, Any]:
        """A record arriving from a channel: no owner given, so the blueprint routes it."""
        self.clock.set(self.now - dt.timedelta(days=days_ago))
        record = self.engine.records.create(entity, values, actor=SYSTEM).record
        self.counts[entity] = self.counts.get(entity, 0) + 1
        return record

    def convert(self, entity: str, record: dict[str, Any], actor: Actor, days_ago: float) -> None:
        """The blueprint's conversion (a lead → account, contact, opportunity), as its owner."""
        self.clock.set(self.now - dt.timedelta(days=max(days_ago, 0)))
        done = Conversions(self.engine.model, self.engine.records, self.engine.evaluator, self.clock).convert(
            entity, record["id"], actor=dataclasses.replace(actor, is_system=True))
        for made_entity, _, matched in done.created.values():
            if not matched:
                self.counts[made_entity] = self.counts.get(made_entity, 0) + 1

    def update(self, entity: str, record: dict[str, Any], values: dict[str, Any], actor: Actor,
               days_ago: float) -> dict[str, Any]:
        self.clock.set(self.now - dt.timedelta(days=max(days_ago, 0)))
        return self.engine.records.update(entity, record["id"], values, actor=dataclasses.replace(actor, is_system=True))

    def move(self, entity: str, record: dict[str, Any], stage: str, actor: Actor, days_ago: float,
             **values: Any) -> dict[str, Any]:
        """Enter `stage` (with `values` written first): the funnel checks it like any move."""
        if values:
            record = self.update(entity, record, values, actor, days_ago + 0.01)
        self.clock.set(self.now - dt.timedelta(days=max(days_ago, 0)))
        return self.engine.records.transition(entity, record["id"], stage, actor=dataclasses.replace(actor, is_system=True))

    def file(self, name: str, content_type: str, actor: Actor, days_ago: float) -> int:
        self.clock.set(self.now - dt.timedelta(days=max(days_ago, 0)))
        content = f"{name} (demo file)".encode() if content_type != "application/pdf" else \
            b"%PDF-1.4\n% demo: " + name.encode() + b"\n%%EOF\n"
        return int(self.engine.records.store_file(name, content_type, content, actor=actor)["id"])

    def approve(self, entity: str, record: dict[str, Any], approval: str, requester: Actor, days_ago: float,
                *, decide: bool = True) -> None:
        """Request the approval as the record's owner; each step's approvers approve it a few hours later."""
        desk = self.engine.approvals
        assert desk is not None
        self.clock.set(self.now - dt.timedelta(days=max(days_ago, 0)))
        desk.request(entity, record["id"], approval, actor=dataclasses.replace(requester, is_system=True))
        hours = 0.0
        while decide:
            pending = _pending_tasks(self.engine, entity, record["id"], approval)
            if not pending:
                break
            hours += self.rng.uniform(0.5, 5)
            for task_id, owner in pending:
                self.clock.set(self.now - dt.timedelta(days=max(days_ago, 0)) + dt.timedelta(hours=hours))
                desk.decide(task_id, "approve", self.rng.choice(["同意", "可以，注意回款节点", "同意，按流程执行"]),
                            actor=Actor(owner, "approver", is_system=True))


def _pending_tasks(engine: Engine, entity: str, record_id: int, approval: str) -> list[tuple[int, int]]:
    tasks = engine.schema.table("approval_task")
    with engine.db.read() as connection:
        return [(row.id, row.owner) for row in connection.execute(sa.select(tasks.c.id, tasks.c.owner).where(
            tasks.c.subject_entity == entity, tasks.c.subject_id == record_id, tasks.c.approval_name == approval,
            tasks.c.status == "pending").order_by(tasks.c.id))]


def _person(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN)


def _mobile(rng: random.Random, used: set[str]) -> str:
    while True:
        number = rng.choice(["139", "138", "137", "136", "135", "150", "151", "158", "186", "188", "199"]) + \
            f"{rng.randrange(10**8):08d}"
        if number not in used:
            used.add(number)
            return number


def _weighted(rng: random.Random, options: Mapping[str, float]) -> str:
    return rng.choices(list(options), weights=list(options.values()))[0]


def seed_demo(engine: Engine, *, leads: int = 600, seed: int = 7, now: dt.datetime | None = None) -> DemoSummary:
    """Fill an empty database with users, products, accounts, contacts, leads, opportunities,
    activities, orders and tickets. Refuses a database that already has leads."""
    with engine.db.read() as connection:
        if connection.execute(sa.select(sa.func.count()).select_from(engine.schema.table("lead"))).scalar_one():
            raise ValueError("the database already holds leads; demo data goes into an empty database")
    now = now or engine.clock.now()
    clock = FakeClock(now)
    # SLA clocks and cadences run as the history is written (at its past moments), so the demo
    # opens with clocks on the record pages, overdue leads in the lists, and the breaches fired
    # (`_catch_up_timers`); the blueprint's rules do not (owners here are chosen by hand).
    seeding = engine.on_clock(clock, rules=False)
    live = engine.on_clock(clock, rules=True)  # leads and their calls: rules and routing as in production
    rng = random.Random(seed)
    users = [engine.users.add(dataclasses.replace(user, password=demo_password(user.username))) for user in USERS
             if engine.model.has_role(user.role)]
    reps = [user for user in users if user.role in ("sales_rep", "sales_manager")]
    agent = next(user for user in users if user.role == "service_agent")
    writer = _Writer(seeding, clock, rng, now)
    live_writer = _Writer(live, clock, rng, now)
    live_writer.counts = writer.counts
    phones: set[str] = set()

    products = _products(writer, users[0])
    accounts = _accounts(writer, reps, phones)
    contacts = _contacts(writer, accounts, phones)
    deliveries = _FORM_DELIVERIES if _files_accounts(engine) and leads >= len(_FORM_DELIVERIES) else ()
    phones.update(entry["entry"]["field_2"].replace(" ", "")[3:] for entry in deliveries)  # kept for the deliveries
    _leads(writer, live_writer, reps, phones, leads - len(deliveries), accounts)
    _form_deliveries(live_writer, deliveries)
    opportunities = _opportunities(writer, accounts, contacts, reps)
    _activities(writer, opportunities, reps)
    _orders(writer, opportunities, products)
    _sample_requests(writer, accounts, products, reps)
    _tickets(writer, accounts, contacts, products, agent, phones)
    if engine.model.handovers:
        _handovers(writer, accounts, products, reps)
    imported = import_demo_ledger(engine)  # the import screens open on a finished import (engine/io/demo_import.py)
    if imported is not None:
        writer.counts["imported"] = imported.record.created + imported.record.merged
    if engine.model.alerts or engine.model.scores:
        _service_story(engine, accounts, products, agent, now)
    _catch_up_timers(engine, now)  # before the comments: a breach may still move a lead to another rep
    seed_comments(seeding, clock, users, rng)  # @mentions in the inboxes (demo_comments.py)
    _audit_setup(engine, users, now)
    _read_old_notices(engine, now)
    engine.db.analyze(engine.schema.metadata.sorted_tables)  # every table was filled: the planner's statistics
    return DemoSummary(users, writer.counts)


def _audit_setup(engine: Engine, users: list[Actor], now: dt.datetime) -> None:
    """The administrator set the team up before the history began, and issued the manager's
    report token today: the audit log opens with those lines, as the users screen would have
    written them (it opened empty beside eleven users and a token)."""
    admin = next((user for user in users if user.role == "admin"), None)
    if admin is None:
        return
    setup = AuditLog(engine.schema, engine.db, FakeClock(now - dt.timedelta(days=125)))
    for user in users:
        if user is not admin:
            setup.record(admin, "user_created", user.username, {"role": user.role, "team": user.team})
    if any(user.username == "manager" for user in users):  # shown (never its secret) on the admin's users screen
        engine.users.create_token("manager", "周报导出 weekly report", scope="read", days=30)
        AuditLog(engine.schema, engine.db, FakeClock(now)).record(admin, "user_token", "manager",
                                                                  {"name": "周报导出 weekly report"})


def _catch_up_timers(engine: Engine, now: dt.datetime) -> None:
    """The worker's share of the history: every SLA and cadence timer that fell due while the
    history was written fires at (within five minutes of) its due moment, with the rules on, as
    a worker running all along would have fired it — so the breaches, their reassignments and
    notices carry their own dates, and the first `crm serve` does not fire four months of them
    at once (the manager opened the demo with 586 unread breach notices)."""
    clock = FakeClock(now)
    handlers = engine.on_clock(clock).timer_handlers
    table = engine.schema.timers
    while True:
        with engine.db.read() as connection:
            due = connection.execute(sa.select(sa.func.min(table.c.due_at)).where(
                table.c.status == "pending", table.c.due_at <= naive_utc(now))).scalar()
        if due is None:
            return
        clock.set(min(as_utc(due) + dt.timedelta(minutes=5), now))
        fire_due_timers(engine.db, engine.schema, handlers, clock.now(), worker="demo")


def _read_old_notices(engine: Engine, now: dt.datetime) -> None:
    """People who use the CRM every day have read what reached them before the last day: the demo
    opens on a few dozen unread notices, not four months' worth (the manager had 1,083)."""
    table = inbox_table(engine.schema)
    with engine.db.write() as connection:
        connection.execute(table.update().where(table.c.read_at.is_(None),
                                                table.c.created_at < naive_utc(now - dt.timedelta(days=1)))
                           .values(read_at=table.c.created_at))


def _service_story(engine: Engine, accounts: list[dict[str, Any]], products: list[dict[str, Any]], agent: Actor,
                   now: dt.datetime) -> None:
    """The last two days of the service desk, with the blueprint's rules on: the same fault code
    reported six times in South China (the fifth raises one quality alert, the sixth joins it),
    and a late delivery at a customer with open deals (their owners are warned, the deals carry
    the delivery-risk banner, the account's health drops)."""
    clock = FakeClock(now - dt.timedelta(days=2))
    live = engine.on_clock(clock)
    acting = dataclasses.replace(agent, is_system=True)
    south = [account for account in accounts if account.get("region") == "south"] or accounts
    model = next((p for p in products if p.get("model_code") == "LC-3015"), products[0])
    for index in range(6):
        clock.set(now - dt.timedelta(hours=44 - index * 7))
        customer = south[index % len(south)]
        live.records.create("ticket", {
            "subject": f"{model['name']} 切割头报警 E-777", "customer": customer["id"], "product": model["id"],
            "product_model": model["model_code"], "category": "fault", "fault_code": "E-777", "region": "south",
            "priority": "P2", "channel": "hotline", "owner": agent.id}, actor=acting)
    opportunities = engine.schema.table("opportunity")
    with engine.db.read() as connection:
        busy = connection.execute(
            sa.select(opportunities.c.account).where(opportunities.c.stage.notin_(["won", "lost"]))
            .group_by(opportunities.c.account).order_by(sa.func.count().desc(), opportunities.c.account)
            .limit(1)).scalar()
    if busy is not None:
        clock.set(now - dt.timedelta(hours=3))
        live.records.create("ticket", {
            "subject": "设备到货延误两周，客户要求说明", "customer": busy, "category": "delivery", "priority": "P2",
            "channel": "hotline", "description": "400 热线来电：合同约定上月底交货，至今未到，客户生产计划受影响。",
            "owner": agent.id}, actor=acting)


def _products(writer: _Writer, admin: Actor) -> list[dict[str, Any]]:
    catalogue = [("数控加工中心 VMC-850", "VMC-850", "equipment", 268000), ("激光切割机 LC-3015", "LC-3015", "equipment", 415000),
                 ("超声诊断仪 US-60", "US-60", "equipment", 189000), ("监护仪 PM-12", "PM-12", "equipment", 36800),
                 ("刀具套装 TS-200", "TS-200", "consumable", 2600), ("过滤芯 FC-10", "FC-10", "consumable", 380),
                 ("主轴电机 SP-7.5", "SP-7.5", "spare_part", 12800), ("探头 PR-3C", "PR-3C", "spare_part", 9600),
                 ("设备物联网平台 IoT-Cloud", "IOT-CLOUD", "software", 58000), ("维保服务包 MS-1Y", "MS-1Y", "service", 18000),
                 ("安装调试服务 INST", "INST-STD", "service", 6000), ("操作培训 TRN", "TRN-2D", "service", 4500)]
    return [writer.create("product", {"name": name, "model_code": code, "category": category, "price": price},
                          admin, 120) for name, code, category, price in catalogue]


def _accounts(writer: _Writer, reps: list[Actor], phones: set[str]) -> list[dict[str, Any]]:
    rng = writer.rng
    accounts: list[dict[str, Any]] = []
    for index in range(80):
        region = _weighted(rng, {"east": 5, "south": 4, "north": 3, "central": 2, "southwest": 2, "northwest": 1,
                                 "northeast": 1})
        province, city = rng.choice(CITIES[region])
        industry = _weighted(rng, {"manufacturing": 5, "medical_devices": 3, "saas": 2, "education": 2,
                                   "logistics": 2, "retail": 1, "finance": 1, "other": 1})
        word = COMPANY_WORDS[index % len(COMPANY_WORDS)] + ("" if index < len(COMPANY_WORDS) else str(index // 20))
        parent = accounts[rng.randrange(len(accounts))]["id"] if index > 20 and rng.random() < 0.15 else None
        capital = rng.choice([500_000, 1_000_000, 3_000_000, 5_000_000, 8_000_000, 20_000_000, 50_000_000])
        values = {
            "name": f"{city}{word}{INDUSTRY_SUFFIX[industry]}", "short_name": f"{word}{city}",
            "industry": industry, "region": region, "province": province, "city": city,
            "grade": _weighted(rng, {"S": 1, "A": 3, "B": 4, "C": 2}),
            "lifecycle": _weighted(rng, {"prospect": 3, "customer": 5, "key_account": 1, "dormant": 1}),
            "registered_capital": capital, "employee_count": rng.choice([30, 80, 150, 400, 1200, 3000]),
            "hiring_recently": rng.random() < 0.4, "has_tenders": rng.random() < 0.3,
            "phone": _mobile(rng, phones), "parent": parent,
            "source": _weighted(rng, {"website": 3, "expo": 2, "referral": 2, "cold_call": 1, "wecom": 1}),
        }
        accounts.append(writer.create("account", values, rng.choice(reps), rng.uniform(60, 120)))
    return accounts


def _contacts(writer: _Writer, accounts: list[dict[str, Any]], phones: set[str]) -> list[dict[str, Any]]:
    rng = writer.rng
    contacts: list[dict[str, Any]] = []
    titles = [("总经理", "decision_maker"), ("采购经理", "procurement"), ("设备部主管", "technical"),
              ("财务总监", "finance"), ("生产厂长", "influencer"), ("工程师", "user")]
    for account in accounts:
        for position in range(rng.randint(1, 3)):
            title, role = titles[position] if position < 2 else rng.choice(titles)
            values = {"name": _person(rng), "account": account["id"], "job_title": title, "role": role,
                      "phone": _mobile(rng, phones), "is_primary": position == 0,
                      "email": f"contact{len(contacts) + 1}@{['corp', 'group', 'tech'][position % 3]}.example.cn"}
            contacts.append(writer.create("contact", values, _as_owner(account), rng.uniform(50, 110)))
    return contacts


def _as_owner(record: dict[str, Any]) -> Actor:
    """Write as the record owner's account when it has one, else as the system."""
    owner = record.get("owner")
    return Actor(owner, "owner") if owner else SYSTEM


def _leads(writer: _Writer, live: _Writer, reps: list[Actor], phones: set[str], count: int,
           accounts: list[dict[str, Any]]) -> None:
    """Leads arrive as in production: created without an owner through the live write path, so the
    blueprint's rules grade and score them and routing assigns them (or leaves them in the
    unassigned queue when every rep is at cap); each one past "new" was touched by a call its
    owner logged — the activity's rules stamp the first touch and mark it contacted."""
    rng = writer.rng
    sources = {"website": 30, "wecom": 20, "douyin": 15, "baidu": 8, "form_builder": 8, "expo": 10, "referral": 5,
               "cold_call": 3, "csv_import": 1}
    statuses = {"new": 30, "contacted": 25, "qualified": 15, "converted": 8, "disqualified": 12, "paused": 10}
    by_id = {rep.id: rep for rep in reps}
    queued = min(12, count // 5)  # the last arrivals came while the East team was at a training day
    for index in range(count):
        if index == count - queued:
            _team_away(live, True)  # routing finds nobody: they wait in the manager's unassigned queue
        region = _weighted(rng, {"east": 5, "south": 4, "north": 3, "central": 2, "southwest": 2, "northwest": 1,
                                 "northeast": 1})
        province, city = rng.choice(CITIES[region])
        industry = _weighted(rng, {"manufacturing": 5, "medical_devices": 3, "saas": 2, "education": 2,
                                   "logistics": 2, "retail": 1, "finance": 1})
        status = _weighted(rng, statuses) if index < count - queued else "new"
        capital = rng.choice([None, 300_000, 1_000_000, 2_000_000, 5_000_000, 6_000_000, 10_000_000, 30_000_000])
        hiring, tenders = rng.random() < 0.35, rng.random() < 0.25
        days_ago = rng.uniform(0, 120) ** 1.15 / 120 ** 0.15  # more leads recently
        if status == "new":  # untouched leads are this week's arrivals: some on time, some overdue
            days_ago = rng.uniform(0, 4) if index < count - queued else rng.uniform(0, 0.5)
        name = _person(rng)
        values: dict[str, Any] = {
            "name": name, "company": f"{city}{rng.choice(COMPANY_WORDS)}{INDUSTRY_SUFFIX[industry]}",
            "job_title": rng.choice(["采购经理", "总经理", "设备主管", "技术总监", "行政"]),
            "phone": _mobile(rng, phones) if rng.random() < 0.9 else None,
            "email": f"lead{index + 1}@example.cn" if rng.random() < 0.5 else None,
            "source": _weighted(rng, sources), "region": region, "province": province, "city": city,
            "industry": industry, "registered_capital": capital, "hiring_recently": hiring, "has_tenders": tenders,
            "demand_level": _weighted(rng, {"A": 2, "B": 5, "C": 3}),
            "contact_role": rng.choice(["decision_maker", "influencer", "technical", "procurement", "user"]),
            "budget": rng.choice([None, None, 200_000, 500_000, 1_200_000]),
        }
        if rng.random() < 0.4:
            values["tags"] = rng.sample(["budget_ok", "comparing", "trial_requested", "high_budget", "tender"],
                                        rng.randint(1, 2))
        record = live.arrive("lead", values, days_ago)  # graded, scored and routed by the blueprint
        owner = by_id.get(record.get("owner") or 0)
        if status == "new" or owner is None:
            continue
        # the owner's first call, a few hours later: the rules stamp the first touch, mark it contacted
        touched = days_ago - rng.uniform(0.01, min(days_ago, 1.2)) if days_ago > 0.02 else days_ago
        outcome = "interested" if status in ("qualified", "converted") else rng.choice(["reached", "no_answer"])
        live.create("activity", {"subject": "首次电话沟通", "kind": "call", "done": True, "lead": record["id"],
                                 "outcome": outcome, "duration_minutes": rng.choice([5, 10, 15, 30]),
                                 "notes": "了解需求与预算，约定下一步" if outcome == "interested" else "介绍产品，客户暂未表态",
                                 "next_follow_up": (writer.now - dt.timedelta(days=touched)
                                                    + dt.timedelta(days=rng.randint(2, 6))).date()},
                    owner, touched)
        record = _reread_lead(live, record)
        if status == "paused":
            live.update("lead", record, {"status": "paused",
                                         "pause_reason": rng.choice(["客户预算冻结至下季度", "等待客户内部立项",
                                                                     "决策人出差两周"])}, owner, touched * 0.8)
        elif status == "disqualified":
            live.update("lead", record, {"status": "disqualified", "disqualify_reason":
                                         rng.choice(["spam", "unreachable", "no_need", "competitor"])}, owner,
                        touched * 0.8)
        elif status in ("qualified", "converted"):
            record = live.move("lead", record, "qualified", owner, touched * 0.9)
            if status == "converted":
                live.convert("lead", record, owner, touched * 0.5)
    _team_away(live, False)


# This morning's two expo sign-ups from one company, through the form tool (blueprints/crm/sources.yaml,
# form_builder): the first files the company as an account with its contact and the lead; the second,
# a colleague, is linked to that account (`crm hooks list` names every record each one made).
_FORM_DELIVERIES: tuple[dict[str, Any], ...] = (
    {"form": "展会意向登记表", "entry": {"serial_number": 2045, "field_1": "陈工", "field_2": "+86 137 0000 1111",
                                   "field_3": "深圳科讯电子有限公司", "field_4": "chen.gong@kexun-tech.com",
                                   "field_5": "制造业", "field_6": "已立项采购"}},
    {"form": "展会意向登记表", "entry": {"serial_number": 2046, "field_1": "林经理", "field_2": "+86 137 0000 2222",
                                   "field_3": "深圳科讯电子有限公司", "field_4": "lin@kexun-tech.com",
                                   "field_5": "制造业", "field_6": "半年内有计划"}},
)


def _files_accounts(engine: Engine) -> bool:
    """The blueprint has the form tool source that files a delivery's company as an account."""
    return engine.model.has_source("form_builder") and bool(engine.model.source("form_builder").records)


def _form_deliveries(writer: _Writer, deliveries: tuple[dict[str, Any], ...]) -> None:
    """Deliveries through the real intake (logged, mapped, records made and linked, routed), an hour
    apart this morning. The demo holds no form tool token, so authentication is skipped as for a
    trusted replay."""
    intake = writer.engine.intake
    for index, payload in enumerate(deliveries):
        writer.clock.set(writer.now - dt.timedelta(hours=len(deliveries) - index))
        body = orjson.dumps(payload)
        delivery_id = intake.log_delivery("form_builder", {"content-type": "application/json"}, "", body)
        result = intake.process("form_builder", delivery_id, {}, {}, body, check_auth=False)
        for made in result.records:
            if made["outcome"] in ("created", "flagged"):
                writer.counts[made["entity"]] = writer.counts.get(made["entity"], 0) + 1


def _team_away(writer: _Writer, away: bool) -> None:
    """The East team (manager and reps) on leave, or back."""
    for username in ("manager", "wang", "li"):
        if writer.engine.users.find(username) is not None:
            writer.engine.users.update(username, on_leave=away)


def _reread_lead(writer: _Writer, record: dict[str, Any]) -> dict[str, Any]:
    return writer.engine.records.get("lead", record["id"], actor=SYSTEM)


STAGES = ("qualify", "demo", "quote", "contract", "won")
DISCOUNTS = (0, 0, 5, 8, 10, 12, 18, 20, 28)


def _opportunities(writer: _Writer, accounts: list[dict[str, Any]], contacts: list[dict[str, Any]],
                   reps: list[Actor]) -> list[dict[str, Any]]:
    """150 opportunities, each walked through the funnel to where it stands, earning every stage."""
    rng = writer.rng
    targets = {"qualify": 25, "demo": 22, "quote": 20, "contract": 12, "won": 14, "lost": 12}
    by_account: dict[int, list[dict[str, Any]]] = {}
    for contact in contacts:
        by_account.setdefault(contact["account"], []).append(contact)
    opportunities = []
    for index in range(150):
        account = rng.choice(accounts)
        people = by_account.get(account["id"], [])
        target = _weighted(rng, targets)
        days_ago = rng.uniform(20, 110)
        values: dict[str, Any] = {
            "name": f"{account['short_name']}-{rng.choice(['产线升级', '设备采购', '年度维保', '新院区建设', '数字化改造'])}"
                    f"-{index + 1:03d}",
            "account": account["id"], "contact": people[0]["id"] if people else None,
            "amount": rng.choice([38000, 86000, 150000, 268000, 415000, 800000, 1200000]),
            "owner": account["owner"] or rng.choice(reps).id,
            "expected_close": (writer.now + dt.timedelta(days=rng.randint(-10, 90))).date(),
            "source": rng.choice(["website", "expo", "referral", "existing_customer"]),
            "customer_concern": rng.choice(["price_sensitive", "feature_led", "service_led"]),
            "competitor": rng.choice([None, "德玛吉", "大隈", "海天精工", "本地代理商"]),
        }
        record = writer.create("opportunity", values, _as_owner(values), days_ago)
        record = _walk(writer, record, people, target, days_ago)
        opportunities.append(record)
    return opportunities


def _walk(writer: _Writer, record: dict[str, Any], people: list[dict[str, Any]], target: str,
          days_ago: float) -> dict[str, Any]:
    """Do what each stage asks, then enter it; stop at `target` (a lost deal is lost from where it got)."""
    rng = writer.rng
    owner = _as_owner(record)
    last = rng.choice(STAGES[:4]) if target == "lost" else target
    step = days_ago / (STAGES.index(last) + 2)
    when = days_ago
    for stage in STAGES[1:STAGES.index(last) + 1]:
        when -= step * rng.uniform(0.6, 1.0)
        pending = stage == last and target != "lost" and rng.random() < 0.25  # left waiting for an approver
        record = _earn(writer, record, stage, people, owner, when, pending)
        if pending:
            return record
        record = writer.move("opportunity", record, stage, owner, when)
    if target == "lost":
        when -= step * rng.uniform(0.3, 0.8)
        record = writer.move("opportunity", record, "lost", owner, when,
                             loss_reason=rng.choice(["price", "competitor", "no_budget", "no_decision"]),
                             loss_note=rng.choice(["客户选择了本地代理商", "预算推迟到明年", "价格差 12%"]),
                             closed_at=(writer.now - dt.timedelta(days=when)).date())
    return record


def _earn(writer: _Writer, record: dict[str, Any], stage: str, people: list[dict[str, Any]], owner: Actor,
          when: float, leave_pending: bool) -> dict[str, Any]:
    """What `stage` demands (funnels.yaml), done at believable moments before it is entered."""
    rng = writer.rng
    name = record["name"]
    if stage == "demo":
        deck = writer.file(f"{name}-演示方案.pptx", "application/vnd.ms-powerpoint", owner, when + 0.6)
        writer.create("activity", {"subject": "产品演示", "kind": "demo", "done": True, "outcome": "interested",
                                   "opportunity": record["id"], "account": record["account"],
                                   "notes": "现场演示换型与上下料，客户技术负责人参加"}, owner, when + 0.3)
        influencer = people[1]["id"] if len(people) > 1 else (people[0]["id"] if people else None)
        return writer.update("opportunity", record, {
            "demo_deck": deck, "decision_influencer": influencer,
            "customer_questions": rng.choice(["关注交期与售后响应时间；要求提供同行业案例",
                                              "担心操作工培训周期；问能否分期付款", "要求对比两家竞品的精度指标"])},
            owner, when + 0.2)
    if stage == "quote":
        quote = writer.file(f"{name}-签字报价单.pdf", "application/pdf", owner, when + 0.5)
        discount = rng.choice(DISCOUNTS)
        record = writer.update("opportunity", record, {"signed_quote": quote, "discount": discount,
                                                       "quote_sent_at": (writer.now - dt.timedelta(days=when + 1))
                                                       .isoformat(), "comparison_sheet_sent": rng.random() < 0.7},
                               owner, when + 0.4)
        if discount > 15:
            writer.approve("opportunity", record, "price_approval", owner, when + 0.35, decide=not leave_pending)
        return _reread(writer, record)
    if stage == "contract":
        contract = writer.file(f"{name}-合同.pdf", "application/pdf", owner, when + 0.8)
        record = writer.update("opportunity", record, {
            "contract_file": contract, "contract_checklist": ["payment_terms", "delivery_date", "acceptance"]},
            owner, when + 0.7)
        writer.approve("opportunity", record, "contract_review", owner, when + 0.65, decide=not leave_pending)
        return _reread(writer, record)
    if stage == "won":
        return writer.update("opportunity", record, {"win_reason": rng.choice(["price", "product", "service",
                                                                              "relationship"]),
                                                     "closed_at": (writer.now - dt.timedelta(days=when)).date()},
                             owner, when + 0.05)
    return record


def _reread(writer: _Writer, record: dict[str, Any]) -> dict[str, Any]:
    return writer.engine.records.get("opportunity", record["id"], actor=SYSTEM)


def _activities(writer: _Writer, opportunities: list[dict[str, Any]], reps: list[Actor]) -> None:
    rng = writer.rng
    subjects = {"call": "电话沟通需求", "visit": "上门拜访", "wechat": "微信发送资料", "email": "邮件发送报价",
                "meeting": "方案评审会", "demo": "产品演示"}
    for index in range(400):
        opportunity = rng.choice(opportunities)
        kind = rng.choice(list(subjects))
        done = rng.random() < 0.7
        values: dict[str, Any] = {"subject": subjects[kind], "kind": kind, "opportunity": opportunity["id"],
                                  "account": opportunity["account"], "done": done,
                                  "duration_minutes": rng.choice([5, 15, 30, 60, 90])}
        if done:
            values["outcome"] = rng.choice(["reached", "interested", "next_step_agreed", "no_answer"])
            values["notes"] = rng.choice(["客户确认预算,约下周演示", "对交期有顾虑", "需要补充案例资料", "已发送对比表"])
        days_ago = rng.uniform(0, 90)
        # Each was planned: done ones mostly before their due time (one in eight late, which the
        # "required actions done on time" rate counts against), open ones due two days on.
        moment = writer.now - dt.timedelta(days=days_ago)
        late = index % 8 == 0
        values["due_at"] = moment + (dt.timedelta(hours=-3 if late else 4) if done else dt.timedelta(days=2))
        if done:
            values["done_at"] = moment
        writer.create("activity", values, _as_owner(opportunity), days_ago)


def _orders(writer: _Writer, opportunities: list[dict[str, Any]], products: list[dict[str, Any]]) -> None:
    rng = writer.rng
    won = [o for o in opportunities if o["stage"] == "won"] or opportunities[:5]
    for index in range(60):
        opportunity = rng.choice(won)
        product = rng.choice(products)
        quantity = rng.randint(1, 5)
        price = product["price"][0]
        status = _weighted(rng, {"confirmed": 2, "contract_signed": 2, "paid": 3, "delivering": 1, "delivered": 2})
        days_ago = rng.uniform(1, 80)
        ordered = (writer.now - dt.timedelta(days=days_ago)).date()
        values: dict[str, Any] = {"order_no": f"SO{20260000 + index + 1}", "account": opportunity["account"],
                                  "opportunity": opportunity["id"], "product": product["id"], "quantity": quantity,
                                  "unit_price": price, "amount": price * quantity, "status": status,
                                  "order_date": ordered, "payment_due": ordered + dt.timedelta(days=30)}
        if status in ("paid", "delivering", "delivered"):  # some pay late: the sample approval counts them
            late = rng.random() < 0.3
            values["paid_at"] = (writer.now - dt.timedelta(days=days_ago) +
                                 dt.timedelta(days=rng.uniform(35, 50) if late else rng.uniform(5, 28))).isoformat()
            if values["paid_at"] > writer.now.isoformat():
                values["paid_at"] = writer.now.isoformat()
        writer.create("order", values, _as_owner(opportunity), days_ago)
    _late_payer(writer, won, products)


def _late_payer(writer: _Writer, won: list[dict[str, Any]], products: list[dict[str, Any]]) -> None:
    """One customer who paid late three times lately: their sample requests need finance too."""
    opportunity = won[0]
    for index in range(3):
        days_ago = 70 + index * 12
        ordered = (writer.now - dt.timedelta(days=days_ago)).date()
        writer.create("order", {"order_no": f"SO{20269000 + index + 1}", "account": opportunity["account"],
                                "opportunity": opportunity["id"], "product": products[4]["id"], "quantity": 10,
                                "amount": products[4]["price"][0] * 10, "status": "delivered", "order_date": ordered,
                                "payment_due": ordered + dt.timedelta(days=15),
                                "paid_at": (writer.now - dt.timedelta(days=days_ago - 28)).isoformat()},
                      _as_owner(opportunity), days_ago)


def _sample_requests(writer: _Writer, accounts: list[dict[str, Any]], products: list[dict[str, Any]],
                     reps: list[Actor]) -> None:
    """Sample requests through the sample approval: most decided, the latest ones still waiting."""
    rng = writer.rng
    late_payer = _late_payer_account(writer)
    equipment = [p for p in products if p["category"] in ("equipment", "consumable")]
    for index in range(12):
        account = accounts[index * 5 % len(accounts)] if index % 4 else (late_payer or rng.choice(accounts))
        product = rng.choice(equipment)
        days_ago = 30 - index * 2.4
        owner = Actor(account["owner"], "owner") if account.get("owner") else rng.choice(reps)
        record = writer.create("sample_request", {
            "subject": f"{product['name']} 样品试用", "account": account["id"], "product": product["id"],
            "quantity": rng.randint(1, 3), "purpose": "客户产线试用两周，验证精度与节拍",
            "needed_by": (writer.now + dt.timedelta(days=14 - days_ago)).date(), "owner": owner.id}, owner, days_ago)
        writer.approve("sample_request", record, "sample_approval", owner, days_ago - 0.01, decide=days_ago > 8)


def _late_payer_account(writer: _Writer) -> dict[str, Any] | None:
    orders = writer.engine.schema.table("order")
    with writer.engine.db.read() as connection:
        account = connection.execute(sa.select(orders.c.account).where(orders.c.order_no == "SO20269001")).scalar()
    return writer.engine.records.get("account", account, actor=SYSTEM) if account else None


def _tickets(writer: _Writer, accounts: list[dict[str, Any]], contacts: list[dict[str, Any]],
             products: list[dict[str, Any]], agent: Actor, phones: set[str]) -> None:
    rng = writer.rng
    faults = ["E-101", "E-205", "M-310", "P-42", "S-900"]
    equipment = [p for p in products if p["category"] in ("equipment", "spare_part")]
    solutions = _solutions(writer, equipment, faults, agent)
    for index in range(120):
        account = rng.choice(accounts)
        product = rng.choice(equipment)
        status = _weighted(rng, {"new": 2, "open": 3, "waiting_customer": 1, "resolved": 3, "closed": 3})
        category = _weighted(rng, {"fault": 6, "installation": 1, "delivery": 1, "usage": 2, "quality": 1})
        values: dict[str, Any] = {
            "subject": f"{product['name']} {rng.choice(['报警停机', '无法开机', '精度异常', '噪音过大', '安装咨询'])}",
            "customer": account["id"], "product": product["id"], "product_model": product["model_code"],
            "category": category, "region": account["region"], "priority": _weighted(rng, {"P1": 1, "P2": 3, "P3": 5, "P4": 2}),
            "status": status, "channel": rng.choice(["hotline", "wecom", "email", "web"]),
            "reporter_phone": _mobile(rng, phones), "owner": agent.id,
        }
        if rng.random() < 0.6:  # the caller left a mail address: the satisfaction survey goes there
            values["reporter_email"] = f"service{index + 1}@customer{account['id']}.example.cn"
        if category == "fault":
            values["fault_code"] = rng.choice(faults)
        if status in ("resolved", "closed"):
            values["resolution"] = rng.choice(["更换主轴轴承后恢复", "远程指导重置参数", "现场校准完成"])
            values["root_cause"] = rng.choice(["hardware", "software", "operation"])
            known = solutions.get((str(product["model_code"]), str(values.get("fault_code"))))
            if known and rng.random() < 0.8:  # the first fix of a pair works more often: it ranks first
                values["solution"] = known[0]["id"] if rng.random() < 0.7 else rng.choice(known)["id"]
        days_ago = rng.uniform(0, 60)
        ticket = writer.create("ticket", values, agent, days_ago)
        if status == "closed" and rng.random() < 0.75:
            _answer_survey(writer, ticket, days_ago)


def _answer_survey(writer: _Writer, ticket: dict[str, Any], days_ago: float) -> None:
    """The customer answers the closed ticket's satisfaction survey within two days, through the
    same signed link and desk as the public page (blueprints/service/survey.yaml)."""
    desk = writer.engine.surveys
    spec = next((spec for spec in writer.engine.model.surveys if spec.entity == "ticket"), None)
    if desk is None or spec is None:
        return
    link = writer.engine.records.get("ticket", ticket["id"], actor=SYSTEM).get(spec.link_field)
    if not link:
        return
    rng = writer.rng
    writer.clock.set(writer.now - dt.timedelta(days=max(days_ago - rng.uniform(0.05, 2), 0)))
    score = _weighted(rng, {"5": 5, "4": 4, "3": 2, "2": 1, "1": 0.5})
    comment = {"5": "工程师响应快，问题一次解决", "4": "处理专业，希望备件到得更快", "3": "问题解决了，但等待时间较长",
               "2": "来回沟通多次才解决", "1": "停机太久，影响生产"}[score] if rng.random() < 0.6 else ""
    desk.answer(spec.name, str(link).rsplit("/", 1)[1], score, comment, writer.clock.now())
    writer.counts["survey answers"] = writer.counts.get("survey answers", 0) + 1


def _solutions(writer: _Writer, equipment: list[dict[str, Any]], faults: list[str],
               agent: Actor) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The knowledge base: two fixes for each of the common faults of each machine (when the
    blueprint has one); tickets record which fix they used, which ranks them."""
    if not writer.engine.model.has_entity("solution"):
        return {}
    fixes = {"E-101": ("伺服驱动器过流：检查电缆并重置参数", "更换伺服驱动板"),
             "E-205": ("冷却液温度报警：清洗换热器滤网", "更换冷却泵"),
             "M-310": ("主轴异响：补充润滑并调整预紧", "更换主轴轴承")}
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for product in equipment:
        for fault in faults:
            for title in fixes.get(fault, ()):
                record = writer.engine.records.create("solution", {
                    "title": title, "product_model": product["model_code"], "fault_code": fault, "owner": agent.id,
                    "steps": f"适用 {product['name']}，故障代码 {fault}。\n1. 断电并确认安全\n2. {title}\n3. 试运行 30 分钟并记录"},
                    actor=dataclasses.replace(agent, is_system=True)).record
                found.setdefault((product["model_code"], fault), []).append(record)
    return found


# The handover boards (handover.yaml): items at every node, a few done this month and last (the
# timeliness table has figures, some late), and some sitting past their node's SLA right now.
_DELIVERY_WALK = (  # node entered, and what the node before it handed over
    ("signing", lambda n: {"solution_summary": "5 轴加工中心 ×2，含自动上下料与首年驻场", "contract_no": f"HT-2026-{n:04d}"}),
    ("payment", lambda n: {"signed_at": None}),
    ("kickoff", lambda n: {"paid_at": None, "paid_amount": 680000 + 20000 * n}),
    ("started", lambda n: {"kickoff_date": None}),
)
_TRIAL_WALK = (
    ("logistics", lambda n: {"qualification_checked": True}),
    ("hospital_signoff", lambda n: {"tracking_no": f"SF{1402260000 + n}"}),
    ("completed", lambda n: {"signed_by_hospital_at": None}),
)


def _handovers(writer: _Writer, accounts: list[dict[str, Any]], products: list[dict[str, Any]],
               reps: list[Actor]) -> None:
    rng = writer.rng
    customers = [account for account in accounts if account.get("industry") == "manufacturing"] or accounts
    hospitals = [account for account in accounts if account.get("industry") == "medical_devices"] or accounts
    for index in range(14):
        account = customers[index % len(customers)]
        started = rng.uniform(2, 45)
        item = writer.create("delivery_handover", {"name": f"{account['name']} 设备交付", "account": account["id"]},
                             _as_owner(account), started)
        _walk_nodes(writer, "delivery_handover", item, _DELIVERY_WALK, steps=index % 5, started=started, number=index + 1)
    equipment = [product for product in products if product.get("category") != "service"] or products
    for index in range(8):
        hospital = hospitals[index % len(hospitals)]
        started = rng.uniform(1, 30)
        item = writer.create("trial_handover", {"name": f"{hospital['name']} 临床试用", "account": hospital["id"],
                                                "product": equipment[index % len(equipment)]["id"]},
                             _as_owner(hospital), started)
        _walk_nodes(writer, "trial_handover", item, _TRIAL_WALK, steps=index % 4, started=started, number=index + 1)


def _walk_nodes(writer: _Writer, entity: str, item: dict[str, Any], walk: Any, *, steps: int, started: float,
                number: int) -> None:
    """Move `item` through its first `steps` nodes, each after a few working days (some late)."""
    days_ago = started
    owner = Actor(item["owner"], "demo", is_system=True)
    for node, handed_over in walk[:steps]:
        days_ago -= writer.rng.uniform(0.2, 4)
        if days_ago <= 0:
            return
        moment = writer.now - dt.timedelta(days=days_ago)
        values = {name: (moment if value is None and name.endswith("_at") else
                         moment.date() if value is None else value) for name, value in handed_over(number).items()}
        writer.update(entity, item, values, owner, days_ago + 0.01)
        writer.clock.set(moment)
        writer.engine.records.transition(entity, item["id"], node, field="node", actor=owner)

