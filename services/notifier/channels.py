"""Channels: how a message reaches a person. Each sender speaks one documented format.

- webhook: ``POST`` of :meth:`Message.as_json` with ``X-Lifeline-Timestamp`` (seconds),
  ``X-Lifeline-Delivery`` (the message's id, the same on retries: receivers can drop repeats) and
  ``X-Lifeline-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` — the scheme
  of Stripe and GitHub webhooks, so receivers can reject forgeries and replays.
- DingTalk custom robot: ``POST <url>?access_token=…`` with a ``markdown`` message and
  ``at.atMobiles``; signed mode adds ``timestamp`` and ``sign`` =
  base64(HMAC-SHA256(secret, "<timestamp>\\n<secret>")), URL-encoded. ``errcode`` 0 is success.
- WeCom group robot: ``POST <url>?key=…`` with a ``markdown`` message (``<@userid>``
  mentions); ``errcode`` 0 is success.
- e-mail: SMTP with STARTTLS, implicit TLS or none, and optional authentication (aiosmtplib).
- SMS: ``POST <url>`` JSON ``{"to", "text", "id"}`` with ``Authorization: Bearer <key>`` —
  the shape of most HTTP SMS gateways; 2xx is success.

Secrets come from the environment variables the on-call file names; they never appear
in logs or audit records (URLs are logged without their query string).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import aiohttp
import aiosmtplib

from schemas.oncall import Channel, ChannelType, Person
from services.notifier.errors import ChannelError
from services.notifier.messages import Message


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return urllib.parse.quote_plus(base64.b64encode(mac.digest()).decode())


class Senders:
    def __init__(self, session: aiohttp.ClientSession,
                 env: Mapping[str, str] | None = None) -> None:
        self.session = session
        self.env = os.environ if env is None else env

    def _secret(self, name: str | None, channel: Channel, what: str) -> str | None:
        if name is None:
            return None
        value = self.env.get(name)
        if not value:
            raise ChannelError(f"channel {channel.id}: {what} variable {name} is not set",
                               retryable=False)
        return value

    async def send(self, channel: Channel, person: Person, msg: Message) -> str:
        """Deliver ``msg`` to ``person`` on ``channel``; returns a short description."""
        if channel.type is ChannelType.WEBHOOK:
            return await self._webhook(channel, msg)
        if channel.type is ChannelType.DINGTALK:
            return await self._dingtalk(channel, person, msg)
        if channel.type is ChannelType.WECOM:
            return await self._wecom(channel, person, msg)
        if channel.type is ChannelType.EMAIL:
            return await self._email(channel, person, msg)
        return await self._sms(channel, person, msg)

    async def _post(self, channel: Channel, url: str, body: bytes,
                    headers: dict[str, str]) -> tuple[int, str]:
        shown = url.split("?", 1)[0]
        try:
            async with self.session.post(
                    url, data=body, headers={"Content-Type": "application/json; charset=utf-8",
                                             **headers},
                    timeout=aiohttp.ClientTimeout(total=channel.timeout_s)) as r:
                text = await r.text()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChannelError(f"{shown}: {type(exc).__name__}: {exc}"[:300]) from exc
        if status >= 500 or status == 429:
            raise ChannelError(f"{shown}: HTTP {status}")
        if status >= 300:
            raise ChannelError(f"{shown}: HTTP {status}: {text[:200]}", retryable=False)
        return status, text

    async def _webhook(self, channel: Channel, msg: Message) -> str:
        assert channel.url is not None
        body = json.dumps(msg.as_json(), ensure_ascii=False).encode()
        ts = str(int(time.time()))
        headers = {"X-Lifeline-Timestamp": ts, "X-Lifeline-Delivery": msg.delivery_id}
        secret = self._secret(channel.secret_env, channel, "secret")
        if secret:
            headers["X-Lifeline-Signature"] = webhook_signature(secret, ts, body)
        status, _ = await self._post(channel, channel.url, body, headers)
        return f"HTTP {status}"

    @staticmethod
    def _robot_result(text: str, what: str) -> str:
        try:
            answer: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise ChannelError(f"{what}: not JSON: {text[:100]!r}") from exc
        code = answer.get("errcode")
        if code != 0:
            # 130101 (DingTalk) / 45009 (WeCom): sending too fast — worth retrying.
            raise ChannelError(f"{what}: errcode {code}: {answer.get('errmsg')}",
                               retryable=code in (130101, 45009, -1))
        return "errcode 0"

    async def _dingtalk(self, channel: Channel, person: Person, msg: Message) -> str:
        assert channel.url is not None
        token = self._secret(channel.token_env, channel, "token") or ""
        query = {"access_token": token}
        secret = self._secret(channel.secret_env, channel, "secret")
        url = f"{channel.url}?{urllib.parse.urlencode(query)}"
        if secret:
            ts = int(time.time() * 1000)
            url += f"&timestamp={ts}&sign={dingtalk_sign(secret, ts)}"
        text = msg.markdown + (f"\n\n@{person.phone}" if person.phone else "")
        body = {"msgtype": "markdown", "markdown": {"title": msg.title, "text": text},
                "at": {"atMobiles": [person.phone] if person.phone else [], "isAtAll": False}}
        _, answer = await self._post(channel, url, json.dumps(body, ensure_ascii=False).encode(),
                                     {})
        return self._robot_result(answer, "dingtalk")

    async def _wecom(self, channel: Channel, person: Person, msg: Message) -> str:
        assert channel.url is not None
        key = self._secret(channel.token_env, channel, "key") or ""
        url = f"{channel.url}?{urllib.parse.urlencode({'key': key})}"
        content = msg.markdown + (f"\n<@{person.wecom_user}>" if person.wecom_user else "")
        body = {"msgtype": "markdown", "markdown": {"content": content[:4096]}}
        _, answer = await self._post(channel, url, json.dumps(body, ensure_ascii=False).encode(),
                                     {})
        return self._robot_result(answer, "wecom")

    async def _sms(self, channel: Channel, person: Person, msg: Message) -> str:
        if not person.phone:
            raise ChannelError(f"{person.id} has no phone number", retryable=False)
        return await self.sms_text(channel, person.phone, msg.text, msg.delivery_id)

    async def sms_text(self, channel: Channel, phone: str, text: str, message_id: str) -> str:
        """One SMS of ``text`` to ``phone`` (also the one-time codes of the ack page: the
        text is never logged, and errors carry only the gateway's status and answer)."""
        assert channel.url is not None
        key = self._secret(channel.token_env, channel, "API key")
        text = text if len(text) <= 500 else text[:497] + "…"
        body = {"to": phone, "text": text, "id": message_id}
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        status, _ = await self._post(channel, channel.url, json.dumps(body, ensure_ascii=False)
                                     .encode(), headers)
        return f"HTTP {status}"

    async def _email(self, channel: Channel, person: Person, msg: Message) -> str:
        if not person.email:
            raise ChannelError(f"{person.id} has no e-mail address", retryable=False)
        assert channel.smtp_host is not None and channel.sender is not None
        em = EmailMessage()
        em["From"] = channel.sender
        em["To"] = person.email
        em["Subject"] = msg.title
        em["X-Lifeline-Delivery"] = msg.delivery_id
        em.set_content(msg.text)
        password = self._secret(channel.secret_env, channel, "SMTP password")
        tls = None
        if channel.smtp_security != "none":
            try:
                tls = ssl.create_default_context(cafile=channel.smtp_ca_file)
            except OSError as exc:
                raise ChannelError(f"smtp {channel.smtp_host}: CA file: {exc}",
                                   retryable=False) from exc
        try:
            await aiosmtplib.send(
                em, hostname=channel.smtp_host, port=channel.smtp_port,
                username=channel.smtp_username, password=password,
                use_tls=channel.smtp_security == "tls",
                start_tls=channel.smtp_security == "starttls", tls_context=tls,
                timeout=channel.timeout_s)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise ChannelError(f"smtp {channel.smtp_host}: authentication failed: {exc.code}",
                               retryable=False) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ChannelError(f"smtp {channel.smtp_host}: {type(exc).__name__}: {exc}"[:300]
                               ) from exc
        return f"smtp {channel.smtp_host}"
