"""The screens' own words in Chinese and English; blueprint labels come from the metamodel."""

from __future__ import annotations

from engine.metamodel import EntitySpec
from engine.runtime.records.fieldkinds import FieldError

LANGUAGES = ("zh", "en")

_TEXTS: dict[str, tuple[str, str]] = {
    # key: (zh, en)
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出", "Sign out"),
    "username": ("用户名", "Username"),
    "password": ("密码", "Password"),
    "session_expired": ("登录已过期，请重新登录。", "Your session has expired; please sign in again."),
    "search": ("搜索", "Search"),
    "search_placeholder": ("姓名、公司、电话…", "Name, company, phone…"),
    "apply": ("筛选", "Apply"),
    "clear": ("清除", "Clear"),
    "from": ("从", "from"),
    "to": ("至", "to"),
    "any": ("全部", "Any"),
    "new": ("新建", "New"),
    "edit": ("编辑", "Edit"),
    "delete": ("删除", "Delete"),
    "save": ("保存", "Save"),
    "cancel": ("取消", "Cancel"),
    "board": ("看板", "Board"),
    "list": ("列表", "List"),
    "export_csv": ("导出 CSV", "Export CSV"),
    "assign_to": ("分配给", "Assign to"),
    "assign": ("分配", "Assign"),
    "select_all": ("全选", "Select all"),
    "owner": ("负责人", "Owner"),
    "created_at": ("创建时间", "Created"),
    "updated_at": ("更新时间", "Updated"),
    "created_by": ("创建人", "Created by"),
    "id": ("编号", "ID"),
    "version": ("版本", "Version"),
    "total": ("共 {total} 条，第 {page}/{pages} 页", "{total} records, page {page} of {pages}"),
    "previous": ("上一页", "Previous"),
    "next": ("下一页", "Next"),
    "no_records": ("没有符合条件的记录。", "No records match."),
    "timeline": ("动态", "Timeline"),
    "explanation": ("规则与分配说明（管理员可见）", "Why: rules and routing (admins only)"),
    "clocks": ("时效", "Deadlines"),
    "due": ("截止", "due"),
    "cadence": ("跟进节奏", "Cadence"),
    "next_step": ("下一步", "next step"),
    "sla_on_track": ("正常", "on track"),
    "sla_warning": ("预警", "warning"),
    "sla_breached": ("已超时", "breached"),
    "sla_paused": ("已暂停", "paused"),
    "sla_stopped": ("已完成", "stopped"),
    "sla_filter": ("时效", "SLA"),
    "sla_filter_overdue": ("已超时", "Overdue"),
    "sla_filter_due_1h": ("1 小时内到期", "Due within 1 h"),
    "sla_filter_due_1d": ("24 小时内到期", "Due within 24 h"),
    "sla_filter_running": ("计时中", "Clock running"),
    "sla_filter_paused": ("已暂停", "Paused"),
    "related": ("相关记录", "Related"),
    "show_all": ("查看全部 {total} 条", "Show all {total}"),
    "forbidden_related": ("你没有查看{entity}的权限。", "You lack permission to read {entity}."),
    "forbidden_title": ("没有权限", "Permission needed"),
    "forbidden_text": ("你缺少对“{entity}”的“{permission}”权限。", "You lack permission “{permission}” on “{entity}”."),
    "not_found_title": ("找不到页面", "Not found"),
    "not_found_text": ("你要找的页面或记录不存在（可能已被删除）。", "The page or record does not exist (it may have been deleted)."),
    "problem_title": ("无法完成", "That did not work"),
    "back_home": ("返回首页", "Back to the start page"),
    "required": ("必填", "required"),
    "fix_errors": ("请修正标出的字段后再保存。", "Please correct the marked fields and save again."),
    "version_conflict": ("这条记录已被他人修改：请重新打开后再修改。", "Someone else changed this record meanwhile: reopen it and apply your change again."),
    "saved": ("已保存。", "Saved."),
    "created": ("已创建。", "Created."),
    "deleted": ("已删除。", "Deleted."),
    "merged": ("手机号或邮箱与已有记录相同，已更新该记录。", "The phone or email matched an existing record, which was updated instead."),
    "assigned": ("已分配 {count} 条记录。", "Assigned {count} records."),
    "assign_failed": ("{count} 条未能分配：{reason}", "{count} could not be assigned: {reason}"),
    "nothing_selected": ("请先勾选记录。", "Select some records first."),
    "confirm_delete": ("确定删除这条记录吗？", "Delete this record?"),
    "move_to": ("移动到", "Move to"),
    "move": ("移动", "Move"),
    "moved": ("已移动到“{label}”。", "Moved to “{label}”."),
    "move_refused": ("无法移动：{reason}", "Cannot move: {reason}"),
    "drag_hint": ("拖动卡片到其他列以变更{field}", "Drag a card to another column to change {field}"),
    "users": ("用户管理", "Users"),
    "outbox": ("通知队列", "Outbox"),
    "outbox_pending": ("待发送", "Waiting"),
    "outbox_sending": ("发送中", "Sending"),
    "outbox_dead": ("发送失败", "Dead-lettered"),
    "outbox_delivered": ("已送达", "Delivered"),
    "outbox_all": ("全部", "All"),
    "outbox_channel": ("渠道", "Channel"),
    "outbox_message": ("内容", "Message"),
    "outbox_attempts": ("尝试次数", "Attempts"),
    "outbox_error": ("最近错误", "Last error"),
    "outbox_retry": ("重新发送", "Retry"),
    "outbox_retry_all": ("全部失败消息重新发送（{count}）", "Retry all dead-lettered ({count})"),
    "outbox_retried": ("已重新排队 {count} 条消息。", "{count} message(s) queued again."),
    "outbox_empty": ("没有消息。", "No messages."),
    "display_name": ("姓名", "Name"),
    "role": ("角色", "Role"),
    "team": ("团队", "Team"),
    "manager": ("上级", "Manager"),
    "state": ("状态", "State"),
    "active": ("启用", "Active"),
    "disabled": ("已停用", "Disabled"),
    "on_leave": ("休假", "On leave"),
    "disable": ("停用", "Disable"),
    "enable": ("启用", "Enable"),
    "change_role": ("修改角色", "Change role"),
    "chat_ids": ("@提醒账号", "Chat ids (@mentions)"),
    "user_updated": ("用户 {username} 已更新。", "User {username} updated."),
    "cannot_disable_self": ("不能停用自己的账号。", "You cannot disable your own account."),
    "language": ("语言", "Language"),
    "menu": ("菜单", "Menu"),
    "fields": ("字段", "Field"),
    "system_fields": ("系统信息", "System"),
    "no_events": ("暂无动态。", "No history yet."),
    "event_created": ("创建了记录", "created the record"),
    "event_updated": ("修改了", "changed"),
    "event_transitioned": ("变更了阶段", "moved the stage"),
    "event_assigned": ("分配了负责人", "assigned the owner"),
    "event_merged": ("合并了重复提交", "merged a duplicate submission"),
    "event_deleted": ("删除了记录", "deleted the record"),
    "event_viewed": ("查看了记录", "opened the record"),
    "file_too_large": ("文件超过 20 MB", "the file is larger than 20 MB"),
    "link_pick": ("“{text}”：请从建议中选择{entity}", "'{text}': pick the {entity} from the suggestions"),
    "link_forbidden": ("你没有查看{entity}的权限", "you may not read {entity} records"),
    "link_none": ("没有名为“{text}”的{entity}：输入名称的一部分，再从建议中选择",
                  "no {entity} is named '{text}' — type part of the name and pick a suggestion"),
    "link_several": ("有 {count} 条{entity}名为“{text}”：请从建议中选择（建议里带有编号）",
                     "{count} {entity} records are named '{text}' — pick one from the suggestions "
                     "(they show each record's number)"),
    "event_other": ("记录了 {kind}", "recorded {kind}"),
    "event_duplicate_flagged": ("标记为疑似重复", "flagged as a possible duplicate"),
    "event_intake_flagged": ("被进线过滤规则拦截（未分配）", "was caught by an intake filter (not routed)"),
    "event_routing_queued": ("进入待分配队列", "was parked in a routing queue"),
    "event_routing_unassigned": ("无人可分配", "could not be assigned to anyone"),
    "event_sla_start": ("开始计时（SLA）", "started an SLA clock"),
    "event_sla_restart": ("重新开始计时（SLA）", "restarted an SLA clock"),
    "event_sla_pause": ("暂停计时（SLA）", "paused an SLA clock"),
    "event_sla_resume": ("恢复计时（SLA）", "resumed an SLA clock"),
    "event_sla_retier": ("调整时效目标（SLA）", "changed the SLA target"),
    "event_sla_stop": ("停止计时（SLA）", "stopped an SLA clock"),
    "event_sla_cancel": ("取消计时（SLA）", "cancelled an SLA clock"),
    "event_sla_warning": ("即将超时预警", "got an SLA warning"),
    "event_sla_breached": ("已超时（熔断）", "breached its SLA"),
    "event_sla_escalated": ("超时升级", "escalated after the SLA breach"),
    "event_cadence_start": ("开始跟进节奏", "started a cadence"),
    "event_cadence_stop": ("停止跟进节奏", "stopped a cadence"),
    "event_cadence_cancel": ("取消跟进节奏", "cancelled a cadence"),
    "event_cadence_step": ("执行了节奏步骤", "ran a cadence step"),
    "event_action_failed": ("自动动作失败", "an automatic action failed"),
    "event_reassign_skipped": ("未能转交备份人", "could not be handed to a backup"),
    "system": ("系统", "System"),
    "none_column": ("未设置", "Not set"),
    "view": ("视图", "View"),
    "csrf_refused": ("表单已过期或来源无效，请刷新页面后重试。", "The form expired or did not come from this site; reload the page and try again."),
    "bad_query": ("筛选条件无效：{reason}", "The filter is invalid: {reason}"),
}


def translate(lang: str, key: str, **values: object) -> str:
    """The screen text `key` in `lang` (zh or en), with `{name}` placeholders filled in."""
    zh, en = _TEXTS[key]
    text = zh if lang == "zh" else en
    return text.format(**values) if values else text


def permission_word(lang: str, action: str) -> str:
    words = {"read": ("查看", "read"), "create": ("新建", "create"), "update": ("修改", "update"),
             "delete": ("删除", "delete"), "assign": ("分配", "assign"), "export": ("导出", "export")}
    zh, en = words.get(action, (action, action))
    return zh if lang == "zh" else en


def field_error_text(entity: EntitySpec, error: FieldError, lang: str) -> str:
    """A RecordService field error for people, in the user's language where one is known: a
    blueprint validation's own message, else the error's Chinese text on Chinese screens,
    else its message without the leading "field: " (the form shows it under the field)."""
    if error.code == "rule":
        for rule in entity.validations:
            if rule.field == error.field and rule.message.text("en") == error.message:
                return rule.message.text(lang)
    if lang == "zh" and error.zh:
        return str(error.zh)
    return error.message.removeprefix(f"{error.field}: ") if error.field else error.message
