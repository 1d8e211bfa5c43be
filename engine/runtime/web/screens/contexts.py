"""What each screen renders: one documented, frozen context per template.

Handlers build these from RecordService answers; templates only read them. Cell and input
markup comes from widgets as `Markup` (already escaped); every other text is escaped by Jinja.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from markupsafe import Markup

if TYPE_CHECKING:  # the panorama module builds on the site, which renders these contexts
    from engine.runtime.web.screens.handovers import HandoverPanel
    from engine.runtime.web.screens.panorama import Panorama


@dataclass(frozen=True, slots=True)
class MenuLink:
    label: str
    url: str
    is_current: bool = False


@dataclass(frozen=True, slots=True)
class MenuSection:
    label: str
    links: tuple[MenuLink, ...]


@dataclass(frozen=True, slots=True)
class Chrome:
    """Around every page: app name, navigation from the blueprint's menu, who is signed in,
    the language switch, the CSRF token for forms and one-time messages."""

    app_label: str
    title: str
    lang: str
    languages: tuple[str, ...]
    csrf: str
    here: str                      # this page's path and query, for "come back here" links
    user_name: str | None = None
    is_admin: bool = False
    menu: tuple[MenuSection, ...] = ()
    flashes: tuple[str, ...] = ()
    pending_approvals: MenuLink | None = None  # "my pending approvals (3)", when the blueprint has approvals
    inbox: MenuLink | None = None              # the signed-in user's inbox (label says how many are unread)
    unread: int = 0
    search_text: str = ""                      # what the header's search box shows (on /search)


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    label: str
    is_selected: bool = False


@dataclass(frozen=True, slots=True)
class FilterControl:
    """One filter of a list view: a select (choice or user field) or a date range."""

    name: str
    label: str
    kind: str                      # "select" or "date_range"
    options: tuple[Choice, ...] = ()
    value_from: str = ""
    value_to: str = ""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    label: str
    sort_url: str | None           # None when the column cannot be sorted
    sorted: str = ""               # "asc", "desc" or ""


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    url: str
    cells: tuple[Markup, ...]


@dataclass(frozen=True, slots=True)
class ListContext:
    """A list view: columns, filters, search, sort, pagination with totals, bulk actions.
    `query` is the cleaned query string — the saved filter every link here preserves."""

    entity: str
    title: str
    views: tuple[MenuLink, ...]
    view: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    filters: tuple[FilterControl, ...]
    search: str
    total: str  # as shown: 1,234 or 10,000+ (counted up to COUNT_CAP)
    page: int
    pages: str  # 25, or 201+ past the count cap
    query: str
    prev_url: str | None = None
    next_url: str | None = None
    can_create: bool = False
    can_export: bool = False
    can_assign: bool = False
    can_reroute: bool = False  # the entity has routing policies: the bulk action may route again
    has_board: bool = False
    assignees: tuple[Choice, ...] = ()
    error: str | None = None
    totals: tuple[str, ...] = ()  # per column: the money total over every matching record ('' elsewhere)


@dataclass(frozen=True, slots=True)
class DisplayItem:
    label: str
    value: Markup


@dataclass(frozen=True, slots=True)
class DisplaySection:
    label: str
    items: tuple[DisplayItem, ...]


@dataclass(frozen=True, slots=True)
class RelatedList:
    """Records of another entity linking to this one (e.g. an account's contacts)."""

    label: str
    total: str                     # as shown: 12 or 10,000+
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    more_url: str
    new_url: str | None = None
    refusal: str | None = None     # shown instead of rows when the user may not read them
    more: bool = False             # more records than the rows shown


@dataclass(frozen=True, slots=True)
class Change:
    label: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: str
    who: str
    action: str
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class StageChip:
    """One stage in the record page's stage bar."""

    name: str
    label: str
    state: str                     # done | current | next | ahead | aside (lost and hold stages)
    probability: str = ""


@dataclass(frozen=True, slots=True)
class RequirementItem:
    """One thing the next stage demands: ticked, or with its one-click way to satisfy it — a link
    (fill in the field, log the related record), an upload, checkboxes, or an approval request."""

    what: str
    how: str
    is_met: bool
    kind: str
    link_url: str | None = None
    link_label: str = ""
    upload_field: str | None = None
    upload_accept: str = ""
    checklist_field: str | None = None
    checklist: tuple[Choice, ...] = ()
    request_url: str | None = None
    status_url: str | None = None


@dataclass(frozen=True, slots=True)
class TalkTrack:
    label: str
    text: str
    is_current: bool = False


@dataclass(frozen=True, slots=True)
class FunnelPanel:
    """The stage bar, what the next stage needs, and the current stage's guidance and talk tracks."""

    title: str
    stages: tuple[StageChip, ...]
    current: str
    since: str
    next_stage: str | None
    next_label: str
    items: tuple[RequirementItem, ...]
    can_act: bool                  # the user may change the record (links, uploads, the advance button)
    is_ready: bool                 # every requirement of the next stage is met and the move is allowed
    move_refusal: str              # why the funnel does not allow the move at all (e.g. a forward move closed)
    action_base: str               # /{entity}/{id}: the one-click forms post below it
    guidance: str
    talk_tracks: tuple[TalkTrack, ...]
    set_aside: tuple[SetAside, ...] = ()  # the side stages (lost, paused) with their reason, one form each


@dataclass(frozen=True, slots=True)
class SetAside:
    """A status change to a side stage from the record page: "设为无效" with its reason field."""

    stage: str
    label: str
    reason_label: str
    reason_field: str
    control: Markup  # the reason field's widget


@dataclass(frozen=True, slots=True)
class ApprovalLine:
    label: str
    status: str
    status_label: str
    step: str
    url: str
    at: str


@dataclass(frozen=True, slots=True)
class ApprovalsPanel:
    """The record's approval requests, and the approvals it may request now."""

    lines: tuple[ApprovalLine, ...]
    requestable: tuple[Choice, ...]    # value: the request URL, label: the approval
    can_request: bool


@dataclass(frozen=True, slots=True)
class DecisionPanel:
    """On an approval task or request page: what it is about and what the user may do."""

    subject_url: str | None
    subject_title: str
    status: str
    status_label: str
    decide_url: str | None = None      # the approver of a pending task
    withdraw_url: str | None = None    # the requester of a pending request
    plan: tuple[str, ...] = ()         # the request's steps, one line each
    covered: tuple[DisplayItem, ...] = ()  # the values being approved, as the subject's page shows them


@dataclass(frozen=True, slots=True)
class RecordContext:
    """The 360° page of one record: its fields by section, related lists and history."""

    entity: str
    entity_label: str
    record_id: int
    title: str
    version: int
    sections: tuple[DisplaySection, ...]
    related: tuple[RelatedList, ...]
    timeline: tuple[TimelineEntry, ...]
    list_url: str
    edit_url: str | None = None
    delete_url: str | None = None
    explanation: str | None = None  # for admins: every rule and routing decision about this record
    decisions: tuple[str, ...] = ()  # for admins: the same, one line per change in the reader's words
    clocks: tuple[str, ...] = ()    # SLA and cadence state, one line each
    funnel: FunnelPanel | None = None        # records in a funnel
    approvals: ApprovalsPanel | None = None  # records that approvals are declared for
    decision: DecisionPanel | None = None    # approval requests and tasks
    actions: tuple[object, ...] = ()         # quick actions: log a call/visit, convert (screens/workday.py)
    panorama: Panorama | None = None         # the 360° part: flags, score, relations, merged timeline


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    label: str
    help: str
    is_required: bool
    control: Markup
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FormSectionContext:
    label: str
    fields: tuple[FormField, ...]


@dataclass(frozen=True, slots=True)
class FormContext:
    """A new or edit form: one widget per field, required marks, errors next to fields, and
    the record version it was loaded at (so a concurrent change is detected on save)."""

    entity: str
    title: str
    action_url: str
    cancel_url: str
    sections: tuple[FormSectionContext, ...]
    version: int | None = None
    message: str | None = None
    is_multipart: bool = False


@dataclass(frozen=True, slots=True)
class Card:
    id: int
    url: str
    title: str
    version: int
    lines: tuple[Markup, ...]


@dataclass(frozen=True, slots=True)
class BoardColumn:
    value: str
    label: str
    total: str                   # as shown: 12 or 10,000+
    cards: tuple[Card, ...]
    more_url: str | None = None  # the column's list when it holds more cards than the board shows
    amount: str = ""             # the column's money total (the first money field), formatted


@dataclass(frozen=True, slots=True)
class BoardContext:
    """A kanban of one choice field: a column per option; cards move by drag and drop."""

    entity: str
    title: str
    field: str
    field_label: str
    fields: tuple[Choice, ...]
    columns: tuple[BoardColumn, ...]
    move_url: str
    list_url: str
    can_move: bool = False
    handover: HandoverPanel | None = None  # when a handover flow holds this field: owners, clocks, timeliness


@dataclass(frozen=True, slots=True)
class UserView:
    id: int
    username: str
    display_name: str
    role: str
    team: str
    manager: str
    is_active: bool
    on_leave: bool
    is_self: bool
    im_ids: str = ""  # "feishu=ou_… slack=U…", for @mentions


@dataclass(frozen=True, slots=True)
class TokenView:
    id: int
    username: str
    name: str
    scope: str
    expires: str
    last_used: str
    is_revoked: bool


@dataclass(frozen=True, slots=True)
class UsersContext:
    """The administrator's list of users with role, team and state, and every API token."""

    users: tuple[UserView, ...]
    roles: tuple[Choice, ...]
    tokens: tuple[TokenView, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageView:
    id: int
    channel: str
    status: str
    attempts: int
    text: str
    last_error: str
    created_at: str
    record_url: str | None


@dataclass(frozen=True, slots=True)
class OutboxContext:
    """The administrator's view of the notification outbox: what went out, what waits, what died."""

    messages: tuple[MessageView, ...]
    statuses: tuple[Choice, ...]
    dead: int
    channel_labels: dict[str, str] = field(default_factory=dict)  # channel name → its label in the reader's language


@dataclass(frozen=True, slots=True)
class LoginContext:
    username: str = ""
    next_url: str = "/"
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """A 403 or 404 page saying what is missing, never an empty screen."""

    status: int
    title: str
    message: str
    detail: str = ""
