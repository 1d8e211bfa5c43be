"""Notification channels against real loopback receivers: each vendor's body shape and signature
(recomputed here from the documented algorithm), success judged the vendor's way, retries with
backoff until delivered once or dead, SMTP mail, secrets and sandboxed message templates."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from engine.channels import (ChannelError, ChannelKind, DeliveryResult, DeliveryState, DingTalkRobot, FeishuBot,
                             MailChannel, Message, MessageFormat, RetryPolicy, SecretError, SecretRef, SignedWebhook,
                             SlackWebhook, TemplateRenderError, WeComRobot, backoff_bounds, deliver, deliver_all,
                             judge_response, next_attempt_at, plan_after_attempt, render_message, resolve_secret)

NOW = dt.datetime(2026, 4, 3, 9, 30, 15, 123000, tzinfo=dt.timezone.utc)
NOW_MS, NOW_S = "1775208615123", "1775208615"
SECRET = "SECa1b2c3d4e5f6+/="
OK_ERRCODE = b'{"errcode":0,"errmsg":"ok"}'


# --- a loopback receiver that plays the vendor ---------------------------------------------------


@dataclass
class Received:
    path: str
    query: dict[str, list[str]]
    raw_query: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    replies: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=lambda: [(200, OK_ERRCODE, {})])
    accepted: int = 0  # requests answered with a success

    def reply_with(self, *replies: tuple[int, bytes] | tuple[int, bytes, dict[str, str]]) -> None:
        """Answer requests with these replies in order; the last one repeats."""
        self.replies = [(r[0], r[1], r[2] if len(r) > 2 else {}) for r in replies]  # type: ignore[misc]

    def next_reply(self) -> tuple[int, bytes, dict[str, str]]:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


class _QuietHandler(BaseHTTPRequestHandler):
    def answer(self, status: int, reply: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


class _VendorHandler(_QuietHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        parts = urllib.parse.urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        receiver.requests.append(Received(parts.path, urllib.parse.parse_qs(parts.query), parts.query,
                                          {k.lower(): v for k, v in self.headers.items()}, body))
        status, reply, headers = receiver.next_reply()
        if status == 200 and b'"errcode":0' in reply or reply in (b"ok", b'{"code":0}') or status == 204:
            receiver.accepted += 1
        self.answer(status, reply, headers)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VendorHandler)
    server.receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server.receiver  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def independent_hmac(key: str, message: str) -> bytes:
    return hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()


# --- DingTalk --------------------------------------------------------------------------------------


def test_dingtalk_text_with_mentions_is_signed_the_documented_way(receiver):
    robot = DingTalkRobot(f"{receiver.url}/robot/send?access_token=tok123")
    message = Message("S级线索「华东精密」已超时，请立即跟进", mention_mobiles=("13800138000",))
    result = deliver(robot.build_request(message, SECRET, NOW))

    assert result == DeliveryResult(ok=True, status=200, retryable=False)
    (request,) = receiver.requests
    assert request.path == "/robot/send"
    assert request.query["access_token"] == ["tok123"]
    assert request.query["timestamp"] == [NOW_MS]
    expected = base64.b64encode(independent_hmac(SECRET, f"{NOW_MS}\n{SECRET}")).decode()
    assert request.query["sign"] == [expected]
    assert f"sign={urllib.parse.quote(expected, safe='')}" in request.raw_query  # URL-encoded, '+' as %2B
    assert request.headers["content-type"].startswith("application/json")
    assert request.json == {
        "msgtype": "text",
        "text": {"content": "S级线索「华东精密」已超时，请立即跟进\n@13800138000"},
        "at": {"atMobiles": ["13800138000"], "atUserIds": [], "isAtAll": False},
    }


def test_dingtalk_markdown_to_everyone(receiver):
    robot = DingTalkRobot(f"{receiver.url}/robot/send?access_token=tok123")
    message = Message("### 超时\n- 线索：华东精密", title="SLA 超时", format=MessageFormat.MARKDOWN, mention_all=True)
    assert deliver(robot.build_request(message, None, NOW)).ok
    (request,) = receiver.requests
    assert "sign" not in request.query and "timestamp" not in request.query  # no secret: keyword security
    assert request.json == {
        "msgtype": "markdown",
        "markdown": {"title": "SLA 超时", "text": "### 超时\n- 线索：华东精密"},
        "at": {"atMobiles": [], "atUserIds": [], "isAtAll": True},
    }


@pytest.mark.parametrize("reply, retryable", [
    (b'{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}', True),
    (b'{"errcode":310000,"errmsg":"sign not match"}', False),
    (b"<html>gateway</html>", True),
])
def test_dingtalk_http_200_with_an_error_code_is_a_failed_delivery(receiver, reply, retryable):
    receiver.reply_with((200, reply))
    robot = DingTalkRobot(f"{receiver.url}/robot/send?access_token=t")
    result = deliver(robot.build_request(Message("hi"), SECRET, NOW))
    assert not result.ok and result.status == 200 and result.retryable is retryable
    assert "access_token" not in result.error


# --- WeCom -----------------------------------------------------------------------------------------


def test_wecom_text_mentions_by_mobile(receiver):
    robot = WeComRobot(f"{receiver.url}/cgi-bin/webhook/send?key=abc-123")
    message = Message("工单 T-1024 首次响应即将超时", mention_mobiles=("13900139000",), mention_all=True)
    assert deliver(robot.build_request(message, None, NOW)).ok
    (request,) = receiver.requests
    assert request.path == "/cgi-bin/webhook/send" and request.query == {"key": ["abc-123"]}
    assert request.json == {"msgtype": "text", "text": {
        "content": "工单 T-1024 首次响应即将超时", "mentioned_list": ["@all"], "mentioned_mobile_list": ["13900139000"]}}


def test_wecom_markdown_and_its_rate_limit(receiver):
    robot = WeComRobot(f"{receiver.url}/cgi-bin/webhook/send?key=abc-123")
    receiver.reply_with((200, b'{"errcode":45009,"errmsg":"api freq out of limit"}'))
    message = Message("**超时** <font color=\"warning\">P1</font>", format=MessageFormat.MARKDOWN, mention_user_ids=("zhangsan",))
    result = deliver(robot.build_request(message, None, NOW))
    assert not result.ok and result.retryable and "45009" in result.error
    assert receiver.requests[0].json == {"msgtype": "markdown",
                                         "markdown": {"content": "**超时** <font color=\"warning\">P1</font>\n<@zhangsan>"}}


def test_wecom_text_is_cut_to_2048_bytes_and_markdown_cannot_mention_mobiles():
    robot = WeComRobot("http://127.0.0.1:9/cgi-bin/webhook/send?key=k")
    body = json.loads(robot.build_request(Message("超" * 2000), None, NOW).body)
    assert len(body["text"]["content"].encode()) <= 2048 and body["text"]["content"].endswith("…")
    with pytest.raises(ChannelError, match="cannot @ by mobile"):
        robot.build_request(Message("x", format=MessageFormat.MARKDOWN, mention_mobiles=("139",)), None, NOW)


# --- Feishu ----------------------------------------------------------------------------------------


def test_feishu_text_carries_timestamp_and_signature_in_the_body(receiver):
    receiver.reply_with((200, b'{"code":0,"data":{},"msg":"success"}'))
    bot = FeishuBot(f"{receiver.url}/open-apis/bot/v2/hook/hook-id")
    message = Message("线索已分配给你", mention_user_ids=("ou_abc",))
    assert deliver(bot.build_request(message, SECRET, NOW)).ok
    (request,) = receiver.requests
    body = request.json
    assert request.path == "/open-apis/bot/v2/hook/hook-id"
    assert body["timestamp"] == NOW_S
    # documented: HmacSHA256 keyed with timestamp + "\n" + secret over an empty message, base64
    string_to_sign = f"{NOW_S}\n{SECRET}"
    expected = base64.b64encode(hmac.new(string_to_sign.encode(), b"", hashlib.sha256).digest()).decode()
    assert body["sign"] == expected
    assert body["msg_type"] == "text"
    assert body["content"] == {"text": '线索已分配给你 <at user_id="ou_abc"></at>'}


def test_feishu_markdown_goes_as_an_interactive_card(receiver):
    receiver.reply_with((200, b'{"Extra":null,"StatusCode":0,"StatusMessage":"success"}'))
    bot = FeishuBot(f"{receiver.url}/open-apis/bot/v2/hook/hook-id")
    message = Message("**P1** 工单超时", title="SLA 超时", format=MessageFormat.MARKDOWN, mention_all=True)
    assert deliver(bot.build_request(message, None, NOW)).ok
    assert receiver.requests[0].json == {"msg_type": "interactive", "card": {
        "header": {"title": {"tag": "plain_text", "content": "SLA 超时"}},
        "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "**P1** 工单超时\n<at id=all></at>"}}]}}


def test_feishu_post_message_lines():
    bot = FeishuBot("http://127.0.0.1:9/hook", rich="post")
    body = json.loads(bot.build_request(Message("第一行\n第二行", title="周报", format=MessageFormat.MARKDOWN), None, NOW).body)
    assert body == {"msg_type": "post", "content": {"post": {"zh_cn": {"title": "周报", "content": [
        [{"tag": "text", "text": "第一行"}], [{"tag": "text", "text": "第二行"}]]}}}}


def test_feishu_signature_failure_is_not_retried(receiver):
    receiver.reply_with((200, b'{"code":19021,"data":{},"msg":"sign match fail or timestamp is not within one hour"}'))
    result = deliver(FeishuBot(f"{receiver.url}/hook").build_request(Message("x"), "wrong", NOW))
    assert not result.ok and not result.retryable and "19021" in result.error


# --- Slack -----------------------------------------------------------------------------------------


def test_slack_text_and_markdown_blocks(receiver):
    receiver.reply_with((200, b"ok"))
    hook = SlackWebhook(f"{receiver.url}/services/T000/B000/XXXX")
    assert deliver(hook.build_request(Message("Lead Acme is overdue"), None, NOW)).ok
    message = Message("*Acme* waited 2 h", title="SLA breached", format=MessageFormat.MARKDOWN, mention_user_ids=("U123",))
    assert deliver(hook.build_request(message, None, NOW)).ok
    assert receiver.requests[0].json == {"text": "Lead Acme is overdue"}
    assert receiver.requests[1].json == {
        "text": "SLA breached\n*Acme* waited 2 h\n<@U123>",
        "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "SLA breached"}},
                   {"type": "section", "text": {"type": "mrkdwn", "text": "*Acme* waited 2 h\n<@U123>"}}],
    }


def test_slack_errors_and_rate_limit(receiver):
    hook = SlackWebhook(f"{receiver.url}/services/T000/B000/XXXX")
    receiver.reply_with((400, b"invalid_payload"), (429, b"rate_limited", {"Retry-After": "30"}), (500, b"rollup_error"))
    invalid, limited, broken = (deliver(hook.build_request(Message("x"), None, NOW)) for _ in range(3))
    assert not invalid.ok and not invalid.retryable and "invalid_payload" in invalid.error
    assert limited.retryable and limited.retry_after == dt.timedelta(seconds=30)
    assert broken.retryable and broken.status == 500


# --- generic signed webhook ------------------------------------------------------------------------


def test_signed_webhook_headers_let_the_receiver_verify_and_deduplicate(receiver):
    receiver.reply_with((204, b""))
    message = Message("breached", title="SLA", idempotency_key="sla:lead_follow_up:lead:7:x:breach-100",
                      data={"entity": "lead", "id": 7})
    assert deliver(SignedWebhook(f"{receiver.url}/crm-events").build_request(message, "hook-secret", NOW)).ok
    (request,) = receiver.requests
    assert request.headers["x-crm-timestamp"] == NOW_S
    assert request.headers["x-crm-idempotency-key"] == "sla:lead_follow_up:lead:7:x:breach-100"
    expected = hmac.new(b"hook-secret", f"{NOW_S}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-crm-signature"] == expected
    assert request.json == {"id": "sla:lead_follow_up:lead:7:x:breach-100", "title": "SLA", "text": "breached",
                            "format": "text", "data": {"entity": "lead", "id": 7}}


# --- retries: delivered exactly once, or dead --------------------------------------------------------


def run_outbox_row(prepare, policy: RetryPolicy, now: dt.datetime):
    """What the worker does with one outbox row: attempt, plan, wait (on a fake clock), repeat."""
    attempts, plans = 0, []
    while True:
        attempts += 1
        plan = plan_after_attempt(deliver(prepare(now)), attempts, now, policy, rand=lambda: 0.5)
        plans.append(plan)
        if plan.state is not DeliveryState.RETRY:
            return plans
        assert plan.next_attempt_at is not None and plan.next_attempt_at > now
        now = plan.next_attempt_at


def test_a_receiver_failing_three_times_then_succeeding_gets_the_message_once(receiver):
    receiver.reply_with((503, b"busy"), (200, b'{"errcode":-1,"errmsg":"system busy"}'), (502, b""), (200, OK_ERRCODE))
    robot = DingTalkRobot(f"{receiver.url}/robot/send?access_token=t")
    message = Message("S级线索超时")
    plans = run_outbox_row(lambda now: robot.build_request(message, SECRET, now), RetryPolicy(max_attempts=5), NOW)

    assert [plan.state for plan in plans] == [DeliveryState.RETRY] * 3 + [DeliveryState.DELIVERED]
    assert len(receiver.requests) == 4 and receiver.accepted == 1
    waits = [b.next_attempt_at - a.next_attempt_at for a, b in zip(plans, plans[1:3])]
    assert waits == [dt.timedelta(seconds=60), dt.timedelta(seconds=120)]  # doubling backoff
    timestamps = [request.query["timestamp"][0] for request in receiver.requests]
    assert len(set(timestamps)) == 4  # each attempt is signed afresh


def test_a_receiver_that_always_fails_ends_dead_after_max_attempts(receiver):
    receiver.reply_with((500, b"down"))
    hook = SignedWebhook(f"{receiver.url}/crm-events")
    message = Message("x", idempotency_key="k-1")
    plans = run_outbox_row(lambda now: hook.build_request(message, "s", now), RetryPolicy(max_attempts=5), NOW)
    assert [plan.state for plan in plans] == [DeliveryState.RETRY] * 4 + [DeliveryState.DEAD]
    assert "gave up after 5 attempts" in plans[-1].error and "HTTP 500" in plans[-1].error
    assert len(receiver.requests) == 5 and receiver.accepted == 0
    assert {request.headers["x-crm-idempotency-key"] for request in receiver.requests} == {"k-1"}


def test_a_permanent_error_is_dead_at_once(receiver):
    receiver.reply_with((200, b'{"errcode":310000,"errmsg":"keywords not in content"}'))
    robot = DingTalkRobot(f"{receiver.url}/robot/send?access_token=t")
    plans = run_outbox_row(lambda now: robot.build_request(Message("x"), None, now), RetryPolicy(), NOW)
    assert [plan.state for plan in plans] == [DeliveryState.DEAD] and len(receiver.requests) == 1


def test_an_unreachable_receiver_is_retried_without_leaking_the_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    result = deliver(DingTalkRobot(f"http://127.0.0.1:{port}/robot/send?access_token=secret-token")
                     .build_request(Message("x"), None, NOW))
    assert not result.ok and result.retryable and result.status is None
    assert "secret-token" not in result.error


class _GateHandler(_QuietHandler):
    """Answers only once `gate` requests are in flight together (a sequential sender would wait in vain)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/slow":
            time.sleep(1.0)
        try:
            self.server.gate.wait()  # type: ignore[attr-defined]
            status, reply = (400, b"invalid_payload") if self.path == "/bad" else (200, b"ok")
        except threading.BrokenBarrierError:
            status, reply = 503, b"nobody else came"
        self.answer(status, reply)


@pytest.fixture
def gate_server() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GateHandler)
    server.gate = threading.Barrier(3, timeout=3)  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_batch_goes_out_side_by_side_and_each_result_stays_with_its_request(gate_server):
    url = f"http://127.0.0.1:{gate_server.server_address[1]}"

    def broken_mail() -> DeliveryResult:
        raise RuntimeError("smtp exploded")

    jobs = [SlackWebhook(f"{url}/a").build_request(Message("one"), None, NOW), broken_mail,
            SlackWebhook(f"{url}/bad").build_request(Message("two"), None, NOW),
            SlackWebhook(f"{url}/c").build_request(Message("three"), None, NOW)]
    first, mail, bad, third = deliver_all(jobs, concurrency=3)
    assert first.ok and third.ok  # three requests were in flight together, or the gate would have answered 503
    assert not bad.ok and not bad.retryable and bad.status == 400
    assert not mail.ok and mail.retryable and "RuntimeError: smtp exploded" in mail.error


def test_a_receiver_slower_than_the_timeout_is_a_retryable_failure(gate_server):
    url = f"http://127.0.0.1:{gate_server.server_address[1]}"
    result = deliver(SlackWebhook(f"{url}/slow").build_request(Message("x"), None, NOW), timeout=0.3)
    assert not result.ok and result.retryable and result.status is None and result.error.startswith("timed out")


@pytest.mark.parametrize("variable", ["http_proxy", "ALL_PROXY"])
def test_a_proxy_from_the_environment_carries_the_request(receiver, monkeypatch, variable):
    for name in ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, receiver.url)  # a company proxy; nothing listens at the vendor address
    receiver.reply_with((200, b"ok"))
    result = deliver(SlackWebhook("http://127.0.0.2:9/services/T1/B2").build_request(Message("via proxy"), None, NOW))
    assert result.ok and [r.path for r in receiver.requests] == ["/services/T1/B2"]


def test_backoff_grows_exponentially_within_jitter_bounds_and_is_capped():
    policy = RetryPolicy(max_attempts=10, base_delay=dt.timedelta(seconds=30), max_delay=dt.timedelta(minutes=10), jitter=0.2)
    assert backoff_bounds(1, policy) == (dt.timedelta(seconds=24), dt.timedelta(seconds=36))
    assert backoff_bounds(3, policy) == (dt.timedelta(seconds=96), dt.timedelta(seconds=144))
    assert backoff_bounds(9, policy) == (dt.timedelta(minutes=8), dt.timedelta(minutes=12))
    assert next_attempt_at(3, NOW, policy, rand=lambda: 0.0) == NOW + dt.timedelta(seconds=96)
    assert next_attempt_at(3, NOW, policy, rand=lambda: 1.0) == NOW + dt.timedelta(seconds=144)
    assert next_attempt_at(1, NOW, policy, rand=lambda: 0.5, retry_after=dt.timedelta(minutes=2)) == NOW + dt.timedelta(minutes=2)
    assert next_attempt_at(10, NOW, policy) is None


def test_judging_replies_without_a_network():
    assert judge_response(ChannelKind.FEISHU, 200, b'{"code":11232,"msg":"frequency limited"}').retryable
    assert not judge_response(ChannelKind.SLACK, 200, b"no_text").ok
    assert judge_response(ChannelKind.WECOM, 200, b'{"errcode":0,"errmsg":"ok"}').ok


# --- SMTP mail ---------------------------------------------------------------------------------------


@dataclass
class SmtpSink:
    port: int = 0
    rcpt_reply: bytes = b"250 OK"
    mails: list[tuple[str, list[str], bytes]] = field(default_factory=list)


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def handle(self) -> None:
        sink: SmtpSink = self.server.sink  # type: ignore[attr-defined]
        self.wfile.write(b"220 sink ESMTP\r\n")
        sender, recipients = "", []
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250-sink\r\n250 8BITMIME\r\n")
            elif verb == b"MAIL":
                sender, recipients = line.decode().split(":", 1)[1].strip(), []
                self.wfile.write(b"250 OK\r\n")
            elif verb == b"RCPT":
                if sink.rcpt_reply.startswith(b"250"):
                    recipients.append(line.decode().split(":", 1)[1].strip().strip("<>"))
                self.wfile.write(sink.rcpt_reply + b"\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                sink.mails.append((sender, recipients, data))
                self.wfile.write(b"250 queued\r\n")
            elif verb in (b"RSET", b"NOOP"):
                self.wfile.write(b"250 OK\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"502 not implemented\r\n")


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    server.daemon_threads = True
    server.sink = SmtpSink(port=server.server_address[1])  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        yield server.sink  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def test_mail_reaches_the_smtp_server_with_text_and_html(smtp_sink):
    channel = MailChannel("127.0.0.1", smtp_sink.port, "crm@example.com")
    message = Message("本周流程健康报告见附表。", title="每周流程健康报告", recipients=("boss@example.com", "ops@example.com"),
                      html="<p>本周流程<b>健康</b>报告</p>", idempotency_key="report:weekly:2026-W15")
    assert channel.send(channel.build_email(message, NOW)) == DeliveryResult(ok=True, status=250, retryable=False)
    ((sender, recipients, data),) = smtp_sink.mails
    assert sender == "<crm@example.com>" and recipients == ["boss@example.com", "ops@example.com"]
    mail = email.message_from_bytes(data, policy=email.policy.default)
    assert mail["Subject"] == "每周流程健康报告"
    assert mail["X-CRM-Idempotency-Key"] == "report:weekly:2026-W15"
    assert mail.get_body(("plain",)).get_content().strip() == "本周流程健康报告见附表。"
    assert mail.get_body(("html",)).get_content().strip() == "<p>本周流程<b>健康</b>报告</p>"


@pytest.mark.parametrize("reply, retryable", [(b"550 no such user", False), (b"451 try again later", True)])
def test_refused_mail_is_retried_only_for_temporary_errors(smtp_sink, reply, retryable):
    smtp_sink.rcpt_reply = reply
    channel = MailChannel("127.0.0.1", smtp_sink.port, "crm@example.com")
    result = channel.send(channel.build_email(Message("x", title="t", recipients=("nobody@example.com",)), NOW))
    assert not result.ok and result.retryable is retryable and smtp_sink.mails == []


def test_mail_without_recipients_is_a_configuration_error():
    with pytest.raises(ChannelError, match="recipient"):
        MailChannel("127.0.0.1", 25, "crm@example.com").build_email(Message("x"), NOW)


# --- secrets -----------------------------------------------------------------------------------------


def test_secrets_come_from_the_environment_or_the_secrets_file(tmp_path):
    assert resolve_secret(SecretRef(env="DINGTALK_SALES_SECRET"), {"DINGTALK_SALES_SECRET": "SECabc"}) == "SECabc"
    yaml_file = tmp_path / "secrets.yaml"
    yaml_file.write_text("dingtalk:\n  sales:\n    secret: SECfromfile\n", encoding="utf-8")
    assert resolve_secret(SecretRef(key="dingtalk.sales.secret"), {"CRM_SECRETS_FILE": str(yaml_file)}) == "SECfromfile"
    json_file = tmp_path / "secrets.json"
    json_file.write_text('{"wecom": {"service": "https://qyapi.example/send?key=k"}}', encoding="utf-8")
    assert resolve_secret(SecretRef(key="wecom.service"), {}, json_file) == "https://qyapi.example/send?key=k"


def test_missing_secrets_say_where_they_were_looked_for_without_values(tmp_path):
    with pytest.raises(SecretError, match="DINGTALK_SALES_SECRET is not set"):
        resolve_secret(SecretRef(env="DINGTALK_SALES_SECRET"), {})
    with pytest.raises(SecretError, match="CRM_SECRETS_FILE is not set"):
        resolve_secret(SecretRef(key="dingtalk.sales"), {})
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("dingtalk:\n  sales: SECvalue\n", encoding="utf-8")
    with pytest.raises(SecretError, match="missing at 'service'") as failure:
        resolve_secret(SecretRef(key="dingtalk.service"), {"CRM_SECRETS_FILE": str(secrets)})
    assert "SECvalue" not in str(failure.value)
    with pytest.raises(SecretError, match="exactly one"):
        SecretRef(env="A", key="b")


# --- message templates ---------------------------------------------------------------------------------


def test_a_template_renders_record_fields_dates_and_durations():
    text = render_message(
        "### {{ record.name }} 超时\n剩余 {{ sla.remaining|duration }}，截止 {{ sla.due_at|datetime('%m-%d %H:%M', 'Asia/Shanghai') }}"
        "{% for tag in record.tags %} #{{ tag }}{% endfor %} <b>raw</b>",
        {"record": {"name": "华东精密", "tags": ["制造", "A"]},
         "sla": {"remaining": dt.timedelta(minutes=-95), "due_at": dt.datetime(2026, 4, 7, 2, 30, tzinfo=dt.timezone.utc)}},
        name="lead_breach.text")
    assert text == "### 华东精密 超时\n剩余 -1 h 35 min，截止 04-07 10:30 #制造 #A <b>raw</b>"
    chinese = render_message("剩余 {{ sla.remaining|duration }}（目标 {{ sla.target|duration }}）",
                             {"sla": {"remaining": dt.timedelta(hours=7, minutes=30), "target": dt.timedelta(days=2)}},
                             name="lead_warning.text", language="zh")
    assert chinese == "剩余 7小时30分钟（目标 2天）"  # a Chinese channel's message in Chinese units


def test_undefined_names_fail_loudly_naming_template_and_line():
    with pytest.raises(TemplateRenderError, match=r"template 'lead_breach.text' line 2: .*'owner' is undefined"):
        render_message("hello\n{{ owner.name }}", {"record": {}}, name="lead_breach.text")


HOSTILE_TEMPLATES = {
    "class_mro_walk": "{{ ''.__class__.__mro__ }}",
    "cycler_globals": "{{ cycler.__init__.__globals__ }}",
    "subclasses_walk": "{{ ().__class__.__base__.__subclasses__() }}",
    "self_globals": "{{ self.__init__.__globals__ }}",
    "attr_filter_escape": "{{ record|attr('__class__') }}",
    "format_attribute_walk": "{{ '{0.__class__}'.format(record) }}",
    "lipsum_globals": "{{ lipsum.__globals__ }}",
    "string_repetition_bomb": "{{ 'x' * 100000000 }}",
    "power_bomb": "{{ 9 ** (9 ** 9) }}",
    "percent_width_bomb": "{{ '%0999999999d' % 1 }}",
    "padding_method_bomb": "{{ 'x'.ljust(1000000000) }}",
    "center_filter_bomb": "{{ 'x'|center(1000000000) }}",
    "macro_recursion_bomb": "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('x') }}",
    "set_doubling": "{% set a = 'x' %}{{ a ~ a }}",
    "loop_doubling": "{% for a in ['x' ~ 'x'] %}{% for b in [a ~ a] %}{% endfor %}{% endfor %}",
    "include_file": "{% include '/etc/passwd' %}",
    "range_loop": "{% for i in range(100000000) %}{% endfor %}",
    "list_mutation": "{{ record.tags.append('x') }}",
}


@pytest.mark.parametrize("template", HOSTILE_TEMPLATES.values(), ids=HOSTILE_TEMPLATES.keys())
def test_hostile_templates_are_refused(template):
    with pytest.raises(TemplateRenderError, match="template 'hostile'"):
        render_message(template, {"record": {"name": "x", "tags": ["a"]}}, name="hostile")


def test_template_and_output_size_are_limited():
    with pytest.raises(TemplateRenderError, match="the limit is"):
        render_message("x" * 10_000, {}, name="huge")
    with pytest.raises(TemplateRenderError, match="renders more than"):
        render_message("{% for row in rows %}{{ row }}{% endfor %}", {"rows": ["y" * 1000] * 50}, name="long")


def test_html_mail_templates_escape_record_values():
    assert render_message("<p>{{ name }}</p>", {"name": "<script>"}, autoescape=True) == "<p>&lt;script&gt;</p>"


@pytest.mark.parametrize("name", ["range", "lipsum", "cycler", "joiner", "namespace", "dict"])
def test_templates_see_only_their_context_not_jinja_globals(name):
    with pytest.raises(TemplateRenderError, match=f"'{name}' is undefined"):
        render_message(f"{{{{ {name} }}}}", {}, name="globals")


def test_a_blueprint_template_with_html_sends_mail_with_an_escaped_html_part(smtp_sink, make_engine):
    """From the blueprint to the mailbox: the template's `html:` is rendered with autoescaping
    (a record value cannot inject markup) and arrives as the mail's HTML alternative."""
    from engine.runtime.records.actors import SYSTEM
    from engine.runtime.automation.notify import enqueue_notification
    from engine.runtime.ops.users import NewUser
    runtime = make_engine({
        "app.yaml": "app: t\ninclude: ['*.yaml']\n",
        "lead.yaml": "entity: lead\nfields:\n  name: {type: string}\n",
        "channels.yaml": f"""
channels:
  office_mail: {{type: mail, host: 127.0.0.1, port: {smtp_sink.port}, sender: crm@example.com, tls: none}}
templates:
  overdue:
    title: "线索超时：{{{{ record.name }}}}"
    text: "线索 {{{{ record.name }}}} 已超时"
    html: "<p>线索 <b>{{{{ record.name }}}}</b> 已超时</p>"
"""})
    boss = runtime.users.add(NewUser("boss", "Boss", "admin", email="boss@example.com"))
    lead = runtime.records.create("lead", {"name": "<script>x</script>钱总", "owner": boss.id}, actor=SYSTEM).record
    with runtime.db.write() as connection:
        enqueue_notification(connection, runtime.schema, runtime.model, channel="office_mail", template="overdue",
                             to=["owner"], owner_id=boss.id, context={"record": lead}, key="mail-1",
                             now=runtime.clock.now())
    assert runtime.worker(environ={}).tick().delivered == 1
    ((_, recipients, data),) = smtp_sink.mails
    mail = email.message_from_bytes(data, policy=email.policy.default)
    assert recipients == ["boss@example.com"] and mail["Subject"] == "线索超时：<script>x</script>钱总"
    assert mail.get_body(("plain",)).get_content().strip() == "线索 <script>x</script>钱总 已超时"
    assert mail.get_body(("html",)).get_content().strip() == \
        "<p>线索 <b>&lt;script&gt;x&lt;/script&gt;钱总</b> 已超时</p>"
