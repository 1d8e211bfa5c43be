"""What the inbox, comments, search and the administrators' people screens render (one frozen
context per template, as in contexts.py)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.runtime.ops.users import MIN_PASSWORD_LENGTH
from engine.runtime.web.screens.contexts import Choice


@dataclass(frozen=True, slots=True)
class NoticeView:
    id: int
    what: str            # "分配给你" / "@你" / the message title
    title: str           # the record's title or the message's first line
    text: str
    at: str
    is_unread: bool
    open_url: str        # marks it read, then goes to the record (or back to the inbox)
    who: str = ""


@dataclass(frozen=True, slots=True)
class InboxContext:
    notices: tuple[NoticeView, ...]
    unread: int
    total: int
    page: int
    pages: int
    unread_only: bool


@dataclass(frozen=True, slots=True)
class CommentView:
    id: int
    who: str
    at: str
    body: str
    mentions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommentsPanel:
    """The comments card on a record page: earlier comments and the form (with who can be @-ed)."""

    post_url: str
    comments: tuple[CommentView, ...]
    people: tuple[Choice, ...]     # username → display name, for the @ hint list
    draft: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class SearchHit:
    url: str
    title: str
    detail: str


@dataclass(frozen=True, slots=True)
class SearchGroup:
    entity: str
    label: str
    total: str  # as shown: 12 or 10,000+
    hits: tuple[SearchHit, ...]
    more_url: str
    more: bool  # more hits than shown


@dataclass(frozen=True, slots=True)
class SearchContext:
    query: str
    groups: tuple[SearchGroup, ...]
    message: str = ""


@dataclass(frozen=True, slots=True)
class UserTokenView:
    id: int
    name: str
    created_at: str
    last_used_at: str
    is_revoked: bool


@dataclass(frozen=True, slots=True)
class UserDetailContext:
    """One user on the admin screen: profile, role/team/manager, chat ids, leave, password, tokens."""

    id: int
    username: str
    display_name: str
    email: str
    phone: str
    role: str
    team: str
    manager_id: int | None
    im_ids: str
    is_active: bool
    on_leave: bool
    is_self: bool
    roles: tuple[Choice, ...]
    managers: tuple[Choice, ...]
    tokens: tuple[UserTokenView, ...]
    new_token: str = ""
    error: str = ""
    min_password: int = MIN_PASSWORD_LENGTH  # what the server asks of a new password, so the form asks the same
    teams: tuple[Choice, ...] = ()  # offered beside the team box: roles.yaml's teams by label, then those in use


@dataclass(frozen=True, slots=True)
class AuditLine:
    at: str
    actor: str
    action: str
    target: str
    detail: str


@dataclass(frozen=True, slots=True)
class AuditContext:
    lines: tuple[AuditLine, ...]
    total: int
    page: int
    pages: int


@dataclass(frozen=True, slots=True)
class BlueprintEntityLine:
    name: str
    label: str
    fields: int
    records: int
    url: str


@dataclass(frozen=True, slots=True)
class BlueprintContext:
    """The blueprint at a glance for administrators: entities, roles, channels and their health."""

    entities: tuple[BlueprintEntityLine, ...]
    roles: tuple[Choice, ...]
    channels: tuple[tuple[str, str, str, int, int], ...]  # name, label, type, waiting, dead
