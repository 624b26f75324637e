"""Local receivers that stand in for the phone network in tests: an HTTP server that
answers like a webhook endpoint, a DingTalk robot, a WeCom robot and an SMS gateway
(checking each request against the documented format), and records what arrived.

Run standalone for integration tests and benchmarks (one JSON line per request):

    python -m tests.support.receivers --port 0 --out received.jsonl --port-file port
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class Received:
    channel: str
    body: dict[str, Any]
    headers: dict[str, str]
    query: dict[str, str]
    at: float
    problems: list[str] = field(default_factory=list)

    def notification_ids(self) -> list[str]:
        if self.channel == "webhook":
            return [a["notification_id"] for a in self.body["alarms"]]
        text = json.dumps(self.body, ensure_ascii=False)
        return [text]  # robots carry text only


@dataclass
class Behaviour:
    """How the receiver answers: fail the first N requests of a channel, or always; answer
    a channel only after a delay (a slow gateway)."""

    fail_first: dict[str, int] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    delay_s: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def fail(self, channel: str) -> bool:
        self.counts[channel] = self.counts.get(channel, 0) + 1
        return channel in self.down or self.counts[channel] <= self.fail_first.get(channel, 0)


class Receiver:
    def __init__(self, secrets: dict[str, str] | None = None, out: Path | None = None) -> None:
        self.secrets = secrets or {}
        self.received: list[Received] = []
        self.behaviour = Behaviour()
        self.out = out
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.event = asyncio.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_post("/webhook", self._webhook)
        app.router.add_post("/robot/send", self._dingtalk)
        app.router.add_post("/cgi-bin/webhook/send", self._wecom)
        app.router.add_post("/sms", self._sms)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _keep(self, rec: Received) -> None:
        self.received.append(rec)
        self.event.set()
        if self.out is not None:
            with self.out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec.__dict__, ensure_ascii=False) + "\n")

    async def _read(self, request: web.Request, channel: str) -> tuple[bytes, Received]:
        raw = await request.read()
        body = json.loads(raw)
        rec = Received(channel, body, dict(request.headers), dict(request.query), time.time())
        return raw, rec

    async def _webhook(self, request: web.Request) -> web.Response:
        raw, rec = await self._read(request, "webhook")
        secret = self.secrets.get("webhook")
        if secret:
            ts = request.headers.get("X-Lifeline-Timestamp", "")
            want = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + raw,
                                        hashlib.sha256).hexdigest()
            if not hmac.compare_digest(want, request.headers.get("X-Lifeline-Signature", "")):
                rec.problems.append("bad signature")
            if abs(time.time() - int(ts or 0)) > 300:
                rec.problems.append("stale timestamp")
        if rec.body.get("type") != "lifeline.notification" or not rec.body.get("alarms"):
            rec.problems.append("not a lifeline notification")
        await asyncio.sleep(self.behaviour.delay_s.get("webhook", 0.0))
        if self.behaviour.fail("webhook"):
            return web.Response(status=503, text="down")
        self._keep(rec)
        return web.Response(status=204 if not rec.problems else 401)

    async def _dingtalk(self, request: web.Request) -> web.Response:
        _, rec = await self._read(request, "dingtalk")
        # https://open.dingtalk.com/document/robots/custom-robot-access (signed mode)
        if not rec.query.get("access_token"):
            rec.problems.append("no access_token")
        secret = self.secrets.get("dingtalk")
        if secret:
            ts = rec.query.get("timestamp", "")
            mac = hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
            if rec.query.get("sign") != base64.b64encode(mac).decode():  # query is decoded
                rec.problems.append("bad sign")
            if abs(time.time() * 1000 - int(ts or 0)) > 3600_000:
                rec.problems.append("timestamp outside one hour")
        b = rec.body
        if b.get("msgtype") != "markdown" or not {"title", "text"} <= set(b.get("markdown", {})):
            rec.problems.append("not a markdown message")
        if self.behaviour.fail("dingtalk"):
            return web.json_response({"errcode": 130101, "errmsg": "send too fast"})
        self._keep(rec)
        if rec.problems:
            return web.json_response({"errcode": 310000, "errmsg": "; ".join(rec.problems)})
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _wecom(self, request: web.Request) -> web.Response:
        _, rec = await self._read(request, "wecom")
        # https://developer.work.weixin.qq.com/document/path/91770
        if not rec.query.get("key"):
            rec.problems.append("no key")
        b = rec.body
        if b.get("msgtype") != "markdown" or not b.get("markdown", {}).get("content"):
            rec.problems.append("not a markdown message")
        elif len(b["markdown"]["content"].encode()) > 4096:
            rec.problems.append("content over 4096 bytes")
        if self.behaviour.fail("wecom"):
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        self._keep(rec)
        if rec.problems:
            return web.json_response({"errcode": 40008, "errmsg": "; ".join(rec.problems)})
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _sms(self, request: web.Request) -> web.Response:
        _, rec = await self._read(request, "sms")
        if request.headers.get("Authorization") != f"Bearer {self.secrets.get('sms', '')}":
            rec.problems.append("bad API key")
        if not {"to", "text"} <= set(rec.body):
            rec.problems.append("to and text are required")
        if self.behaviour.fail("sms"):
            return web.Response(status=500, text="gateway error")
        self._keep(rec)
        return web.json_response({"id": "m1"}, status=201 if not rec.problems else 401)


def dingtalk_sign_reference(secret: str, ts: int) -> str:
    """DingTalk's documented example, as a second implementation for tests."""
    mac = hmac.new(secret.encode("utf-8"), f"{ts}\n{secret}".encode(), digestmod=hashlib.sha256)
    return urllib.parse.quote_plus(base64.b64encode(mac.digest()))


async def _serve(port: int, out: Path, port_file: Path, secrets: dict[str, str]) -> None:
    r = await Receiver(secrets, out).start(port)
    port_file.write_text(str(r.port))  # noqa: ASYNC240 — once, at start
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--port-file", type=Path, required=True)
    ap.add_argument("--webhook-secret", default="")
    ap.add_argument("--sms-key", default="")
    a = ap.parse_args()
    secrets = {"webhook": a.webhook_secret} if a.webhook_secret else {}
    if a.sms_key:
        secrets["sms"] = a.sms_key
    asyncio.run(_serve(a.port, a.out, a.port_file, secrets))


if __name__ == "__main__":
    main()
