"""The small lead/account/activity blueprint of the record service and API tests (inline YAML)."""

APP = {"app.yaml": "app: t\ninclude: [entities/*.yaml]\n"}
LEAD = """
    entity: lead
    label: {zh: 线索, en: Lead}
    title: name
    search: [name, company, phone]
    fields:
      name: {type: string, required: true, length: 50}
      company: {type: string}
      phone: {type: phone}
      email: {type: email}
      source: {type: choice, options: {website: 官网, expo: 展会, douyin: 抖音}, default: website}
      status: {type: choice, options: {new: 新建, paused: 暂停, won: 赢单}, default: new}
      pause_reason: {type: text}
      capital: {type: money, min: 0}
      employees: {type: integer, min: 1, max: 100000}
      next_follow_up: {type: date, default: "=today() + days(2)"}
      tags: {type: tags}
      capital_wan: {type: computed, expression: "capital / 10000", result: decimal}
      account: {type: link, entity: account, on_delete: set_null}
    validations:
      - check: "status != 'paused' or not is_empty(pause_reason)"
        message: {zh: 暂停必须填写原因, en: A paused lead needs a pause reason}
        field: pause_reason
    dedup: {keys: [phone, email], on_match: update}
    views:
      list:
        default: {columns: [name, source], filters: [source, status], sort: -created_at}
"""
ACCOUNT = """
    entity: account
    fields:
      name: {type: string, required: true}
"""
ACTIVITY = """
    entity: activity
    fields:
      subject: {type: string}
      lead: {type: link, entity: lead, on_delete: cascade}
      account: {type: link, entity: account, on_delete: restrict}
"""
BLUEPRINT = {**APP, "entities/lead.yaml": LEAD, "entities/account.yaml": ACCOUNT, "entities/activity.yaml": ACTIVITY}
