"""A small blueprint for the intake and routing tests (inline YAML, written per test)."""

APP = "app: intake\ninclude: [entities/*.yaml, roles.yaml, channels.yaml, routing.yaml, sources.yaml, rules.yaml]\n"
CHANNELS = "channels:\n  wecom_sales: {type: wecom, url: {env: WECOM_SALES_URL}}\n"
LEAD = """
entity: lead
fields:
  name: {type: string, required: true}
  company: {type: string}
  phone: {type: phone}
  email: {type: email}
  source: {type: choice, options: {website: 官网, douyin: 抖音, expo: 展会}}
  region: {type: choice, options: {east: 华东, south: 华南}}
  status: {type: choice, options: {new: 新建, contacted: 已联系, closed: 关闭}, default: new}
  grade: {type: choice, options: {S: S, A: A, B: B}}
  registered_capital: {type: money}
  hiring_recently: {type: boolean, default: false}
  has_tenders: {type: boolean, default: false}
  next_follow_up: {type: date}
dedup: {keys: [phone, email], on_match: update}
indexes:
  - fields: [owner, status]
"""
ACTIVITY = """
entity: activity
fields:
  subject: {type: string}
  lead: {type: link, entity: lead, on_delete: cascade}
"""
ROLES = """
roles:
  sales_rep:
    entities:
      "*": {read: own, create: all, update: own}
  intern:
    entities:
      activity: {read: own}
"""
ROUTING = """
routing:
  by_region:
    entity: lead
    strategy: territory
    field: region
    pools:
      east: [wang, li, zhou]
      "*": [zhao]
    within: round_robin
    open_when: "status in ['new', 'contacted']"
    fallback_queue: unassigned_leads
"""
SOURCES = """
sources:
  website_form:
    entity: lead
    auth: {type: token, header: X-Webhook-Token, secret_env: TEST_WEBSITE_TOKEN}
    event_id: submission_id
    mapping:
      name: contact.name
      company: contact.company
      phone: contact.mobile
      region:
        path: answers.region
        map: {华东: east, 华南: south}
      created_at: submitted_at
    defaults: {source: website}
    spam_filter: "is_empty(phone) and is_empty(email)"
  douyin:
    entity: lead
    auth: {type: hmac, header: X-Signature, secret_env: TEST_DOUYIN_SECRET, timestamp_header: X-Timestamp,
           max_skew_seconds: 300}
    event_id: lead_id
    mapping:
      name: nickname
      phone: telephone
    defaults: {source: douyin, region: east}
"""
RULES = """
rules:
  - name: grade_s
    entity: lead
    trigger: created
    when: "number(registered_capital) > 5000000 and hiring_recently and has_tenders"
    actions:
      - set: {grade: S, next_follow_up: "=today()"}
      - create_related: {entity: activity, link: lead, values: {subject: "=company + ' 首次电话'"}}
      - notify: {channel: wecom_sales, to: [owner], text: "S级线索 {{ record.company }}"}
  - name: assign_new_lead
    entity: lead
    priority: 90
    trigger: created
    when: "is_empty(owner)"
    actions:
      - assign: auto
"""


def files(**overrides: str) -> dict[str, str]:
    parts = {"app.yaml": APP, "entities/lead.yaml": LEAD, "entities/activity.yaml": ACTIVITY, "roles.yaml": ROLES,
             "channels.yaml": CHANNELS, "routing.yaml": ROUTING, "sources.yaml": SOURCES, "rules.yaml": RULES}
    parts.update(overrides)
    return parts


# --- one delivery, several linked records (sources: records:) and links by natural key (lookup:)
ACCOUNT = """
entity: account
fields:
  name: {type: string, required: true}
  code: {type: string}
  credit_code: {type: string}
dedup: {keys: [credit_code], on_match: reject}
"""
CONTACT = """
entity: contact
fields:
  name: {type: string, required: true}
  account: {type: link, entity: account, on_delete: cascade, required: true}
  phone: {type: phone}
  email: {type: email}
dedup: {keys: [phone, email], on_match: flag}
"""
LINKED_LEAD = LEAD.replace("  next_follow_up: {type: date}\n",
                           "  next_follow_up: {type: date}\n  account: {type: link, entity: account, on_delete: set_null}\n")
ACCOUNT_RULES = RULES + """
  - name: welcome_account
    entity: account
    trigger: created
    actions:
      - set: {code: "=upper(name)"}
"""
LINKED_SOURCES = """
sources:
  expo:
    entity: lead
    auth: {type: hmac, header: X-Signature, secret_env: TEST_EXPO_SECRET, timestamp_header: X-Timestamp,
           max_skew_seconds: 300}
    event_id: scan_id
    records:
      account:
        entity: account
        when: company
        match_on: [name]
        mapping:
          name: company
      contact:
        entity: contact
        when: company
        match_on: [account, phone]
        mapping:
          name: person
          phone: mobile
          account: {record: account}
    mapping:
      name: person
      company: company
      phone: mobile
      account: {record: account}
    defaults: {source: expo, region: east}
    test_filter: "contains(company, '测试')"
  enrol:
    entity: lead
    auth: {type: token, header: X-Webhook-Token, secret_env: TEST_WEBSITE_TOKEN}
    event_id: id
    mapping:
      name: person
      phone: mobile
      account: {path: company, lookup: name}
    defaults: {source: website, region: east}
"""


def linked_files(**overrides: str) -> dict[str, str]:
    """The intake blueprint with accounts and contacts, and the sources that make and look them up."""
    return files(**{"entities/lead.yaml": LINKED_LEAD, "entities/account.yaml": ACCOUNT,
                    "entities/contact.yaml": CONTACT, "sources.yaml": LINKED_SOURCES, "rules.yaml": ACCOUNT_RULES,
                    **overrides})
