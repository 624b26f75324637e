"""Trust boundaries of the notifier's web: Faust's built-in views are off (health port:
/health and /counters only), the acknowledgement page has a port of its own, and a link
posted in a shared channel acknowledges only with a one-time code sent to the acting
person's own phone."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from schemas.oncall import AckRequest, OnCallConfig, Person
from services.core.health import Counters
from services.notifier import ackpage
from services.notifier.ackpage import AckPage, PublicSite
from services.notifier.acks import AckSigner
from services.notifier.channels import ChannelError
from services.notifier.links import AckLink, LinkError, Signer
from services.notifier.otp import CodeStore, CodeVerdict
from services.stack.manager import free_port
from tests.support.oncall_helpers import HOOK, LINK_SECRET, SMS, build_notifier, config

BUILTIN = ["/", "/table/", "/table/oncall_state/", "/table/oncall_state/F-1/",
           "/table/alarm_state/F-1/", "/router/", "/router/oncall_state/F-1/", "/graph/",
           "/assignment/", "/performance/", "/stats/"]


async def client_for(web_app: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(web_app))
    await client.start_server()
    return client


# ------------------------------------------------------------ Faust's web: health only


async def test_a_plain_faust_app_would_serve_its_tables(tmp_path: Any) -> None:
    """The control: these URLs are Faust's built-in views (so the 404s below mean off)."""
    app = faust.App("lifeline-control", web_enabled=True, datadir=str(tmp_path),
                    autodiscover=False)
    client = await client_for(await app.web.wsgi())
    try:
        for path in ("/table/", "/router/", "/"):
            assert (await client.get(path)).status == 200, path
    finally:
        await client.close()


async def test_notifier_health_port_serves_health_and_counters_only(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    n = build_notifier(monkeypatch, tmp_path)
    client = await client_for(await n.app.web.wsgi())
    try:
        for path in BUILTIN:
            assert (await client.get(path)).status == 404, path
        token = n.signer.sign(AckLink("a-1", "F-1", "ann", "n-1", "duty", False))
        assert (await client.get(f"/ack/{token}")).status == 404  # not on the health port
        assert (await client.post(f"/ack/{token}", data={"action": "acknowledge"})
                ).status in (404, 405)
        health = await client.get("/health")
        assert health.status == 200 and (await health.json())["service"] == "notifier"
        counters = await (await client.get("/counters")).json()
        assert counters["acks_forged"] == 0 and "codes_sent" in counters
    finally:
        await client.close()
    # … and the public page, a site of its own started with the worker, serves the
    # acknowledgement page and nothing else.
    [site] = [c for c in n.app._extra_services if issubclass(c, PublicSite)]
    assert (site().host, site().port) == ("127.0.0.1", 18085)
    public = await client_for(n.page.application())
    try:
        assert (await public.get(f"/ack/{token}")).status == 200
        for path in ("/health", "/counters", *BUILTIN):
            r = await public.get(path)
            assert r.status == 404, path
            assert r.headers["X-Frame-Options"] == "DENY"  # every answer, 404s too
    finally:
        await public.close()


async def test_processor_serves_no_table_either(tmp_path: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from services.processor.app import build
    from services.processor.config import ProcessorConfig
    from tests.support.engine_helpers import make_registry, sensor

    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    proc = build(ProcessorConfig(), make_registry(sensor("L", "water_level", rng=(0, 7))))
    client = await client_for(await proc.app.web.wsgi())
    try:
        for path in BUILTIN:
            assert (await client.get(path)).status == 404, path
        assert (await client.get("/health")).status in (200, 503)
    finally:
        await client.close()


async def test_public_site_runs_on_its_own_port() -> None:
    page = make_page(Fakes(), oncall())
    port = free_port()
    site = PublicSite(page.application, "127.0.0.1", port)
    await site.start()
    try:
        async with ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/ack/not-a-token") as r:
                assert r.status == 403 and r.headers["Referrer-Policy"] == "no-referrer"
            async with s.get(f"http://127.0.0.1:{port}/health") as r:
                assert r.status == 404
    finally:
        await site.stop()


# ------------------------------------------------------------ the page and its codes


def oncall(**extra: Any) -> OnCallConfig:
    """The test configuration with an SMS channel and eve, who has no phone, on duty."""
    data = config([HOOK, SMS], **extra).model_dump(mode="json", by_alias=True)
    data["people"].append({"id": "eve", "name": "Eve"})
    data["teams"][0]["layers"][0]["members"].append("eve")
    return OnCallConfig.model_validate(data)


class Fakes:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.published: list[AckRequest] = []
        self.sms: list[tuple[str, str, str]] = []
        self.fail_sms = False
        self.logged: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, req: AckRequest) -> None:
        self.published.append(req)

    async def send_code(self, person: Person, text: str, msg_id: str) -> None:
        if self.fail_sms:
            raise ChannelError(f"http://gw/sms: HTTP 400: bad text {text!r}", retryable=False)
        assert person.phone
        self.sms.append((person.phone, text, msg_id))

    def code(self) -> str:
        m = re.search(r"code: (\d{6})\b", self.sms[-1][1])
        assert m
        return m.group(1)

    def episode(self, _alarm: str, _facility: str) -> tuple[dict[str, Any] | None,
                                                              dict[str, Any]]:
        return None, {}


def make_page(f: Fakes, cfg: OnCallConfig, **codes: Any) -> AckPage:
    return AckPage(cfg, Signer(LINK_SECRET, 3600), AckSigner(LINK_SECRET),
                   CodeStore(**{"ttl_s": 300, "attempts": 3, "resend_s": 30,
                                "max_per_link": 3, **codes}),
                   Counters(), f.publish, f.send_code, f.episode, clock=lambda: f.now,
                   verdict_wait_s=0)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    f = Fakes()

    class Log:
        def _keep(self, event: str, **kw: Any) -> None:
            f.logged.append((event, kw))

        info = warning = error = _keep

    monkeypatch.setattr(ackpage, "log", Log())
    return f


@pytest.fixture
async def page(fakes: Fakes) -> AsyncIterator[tuple[AckPage, TestClient[Any, Any]]]:
    p = make_page(fakes, oncall())
    client = await client_for(p.application())
    yield p, client
    await client.close()


def shared_link(p: AckPage, person: str = "ann", nid: str = "n-1") -> tuple[AckLink, str]:
    link = AckLink("a-1", "F-1", person, nid, "duty", True)
    return link, p.signer.sign(link)


async def test_a_personal_link_acknowledges_as_its_addressee(
        page: tuple[AckPage, TestClient[Any, Any]], fakes: Fakes) -> None:
    p, client = page
    link = AckLink("a-1", "F-1", "ann", "n-1", "duty", False)
    token = p.signer.sign(link)
    r = await client.get(f"/ack/{token}")
    body = await r.text()
    assert r.status == 200 and 'id="acknowledge"' in body and "send_code" not in body
    assert r.headers["Cache-Control"] == "no-store"
    r = await client.post(f"/ack/{token}", data={"action": "resolve", "comment": "fixed"})
    assert r.status == 200 and 'id="done"' in await r.text()
    [req] = fakes.published
    assert (req.by, req.action.value, req.via, req.second_factor, req.token_id) == (
        "ann", "resolve", "link", None, link.token_id)
    assert p.ack_signer.problem(req) is None
    r = await client.post(f"/ack/{token}", data={"action": "acknowledge"})
    assert r.status == 409 and len(fakes.published) == 1


async def test_links_forged_or_expired_are_refused(
        page: tuple[AckPage, TestClient[Any, Any]], fakes: Fakes) -> None:
    p, client = page
    _, token = shared_link(p)
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert (await client.get(f"/ack/{forged}")).status == 403
    assert (await client.post(f"/ack/{forged}", data={"action": "send_code",
                                                        "person": "ann"})).status == 403
    expired = Signer(LINK_SECRET, 0.5)
    p.signer = expired
    import asyncio

    await asyncio.sleep(1.1)
    assert (await client.get(f"/ack/{token}")).status == 410
    assert fakes.published == [] and fakes.sms == []


async def test_a_shared_link_asks_who_acts_and_needs_the_right_code(
        page: tuple[AckPage, TestClient[Any, Any]], fakes: Fakes) -> None:
    p, client = page
    link, token = shared_link(p)
    r = await client.get(f"/ack/{token}")
    body = await r.text()
    assert r.status == 200 and 'id="send_code"' in body and 'id="acknowledge"' not in body
    for who in ("ann", "bob", "chief", "boss"):  # the team and the people it escalates to
        assert f'value="{who}"' in body
    assert "尾号 …0002" in body and "13800000002" not in body  # phones are masked
    assert 'value="eve"' not in body and "no phone number" in body  # eve cannot receive one
    # No code: nothing happens.
    r = await client.post(f"/ack/{token}", data={"action": "acknowledge"})
    assert r.status == 403 and "one-time code is required" in await r.text()
    r = await client.post(f"/ack/{token}", data={"action": "acknowledge",
                                                  "challenge": "made-up", "code": "123456"})
    assert r.status == 403
    # Bob, a colleague in the group, acts: the code goes to his phone.
    r = await client.post(f"/ack/{token}", data={"action": "send_code", "person": "bob"})
    body = await r.text()
    assert r.status == 200 and 'id="code_sent"' in body
    [(phone, text, msg_id)] = fakes.sms
    code = fakes.code()
    assert phone == "13800000002" and code not in body and msg_id and "F-1" in text
    challenge = re.search(r'name="challenge" value="([^"]+)"', body)
    assert challenge
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = await client.post(f"/ack/{token}", data={"action": "acknowledge", "code": wrong,
                                                  "challenge": challenge.group(1)})
    assert r.status == 403 and "2 attempt(s) left" in await r.text()
    assert fakes.published == []
    r = await client.post(f"/ack/{token}", data={"action": "acknowledge", "code": code,
                                                  "challenge": challenge.group(1),
                                                  "comment": "on it"})
    assert r.status == 200 and 'id="done"' in await r.text()
    [req] = fakes.published
    assert (req.by, req.addressee, req.via, req.second_factor, req.comment, req.token_id) == (
        "bob", "ann", "link", "sms", "on it", link.token_id)
    assert p.ack_signer.problem(req) is None
    # The link is used now: no more codes, no second acknowledgement.
    assert (await client.post(f"/ack/{token}", data={"action": "send_code",
                                                      "person": "bob"})).status == 409
    assert len(fakes.sms) == 1
    # Codes never reach the logs.
    assert fakes.logged and all(code not in repr(kw) for _, kw in fakes.logged)
    assert [e for e, _ in fakes.logged] == ["oncall.code_refused", "oncall.code_sent",
                                            "oncall.code_refused", "oncall.ack_received"]


async def test_a_code_expires(page: tuple[AckPage, TestClient[Any, Any]],
                              fakes: Fakes) -> None:
    p, client = page
    _, token = shared_link(p)
    r = await client.post(f"/ack/{token}", data={"action": "send_code", "person": "ann"})
    challenge = re.search(r'name="challenge" value="([^"]+)"', await r.text())
    assert challenge
    fakes.now += 301
    r = await client.post(f"/ack/{token}", data={"action": "acknowledge", "code": fakes.code(),
                                                  "challenge": challenge.group(1)})
    assert r.status == 410 and "expired" in await r.text()
    assert fakes.published == []


async def test_wrong_codes_use_up_the_code_and_requests_are_limited(
        page: tuple[AckPage, TestClient[Any, Any]], fakes: Fakes) -> None:
    p, client = page
    _, token = shared_link(p)

    async def send(person: str = "ann") -> tuple[int, str]:
        r = await client.post(f"/ack/{token}", data={"action": "send_code", "person": person})
        body = await r.text()
        m = re.search(r'name="challenge" value="([^"]+)"', body)
        return r.status, m.group(1) if m else ""

    status, challenge = await send()
    assert status == 200
    code = fakes.code()
    wrong = f"{(int(code) + 7) % 1_000_000:06d}"
    statuses = []
    for _ in range(3):
        r = await client.post(f"/ack/{token}", data={"action": "acknowledge", "code": wrong,
                                                      "challenge": challenge})
        statuses.append(r.status)
    assert statuses == [403, 403, 429]
    r = await client.post(f"/ack/{token}", data={"action": "acknowledge", "code": code,
                                                  "challenge": challenge})
    assert r.status == 403 and fakes.published == []  # the right code comes too late
    # A new code only after the resend delay; at most 3 per link.
    assert (await send())[0] == 429
    fakes.now += 31
    assert (await send())[0] == 200
    assert (await send("bob"))[0] == 200
    fakes.now += 31
    assert (await send())[0] == 429  # the link's three codes are spent
    assert len(fakes.sms) == 3


async def test_who_cannot_receive_a_code_is_told_so(
        page: tuple[AckPage, TestClient[Any, Any]], fakes: Fakes) -> None:
    p, client = page
    _, token = shared_link(p)
    r = await client.post(f"/ack/{token}", data={"action": "send_code", "person": "eve"})
    assert r.status == 400 and "has no phone number" in await r.text()
    r = await client.post(f"/ack/{token}", data={"action": "send_code", "person": "mallory"})
    assert r.status == 400  # not a person of the list
    assert fakes.sms == []


async def test_a_code_that_could_not_be_sent_is_withdrawn_and_never_logged(
        page: tuple[AckPage, TestClient[Any, Any]], fakes: Fakes) -> None:
    p, client = page
    _, token = shared_link(p)
    fakes.fail_sms = True
    r = await client.post(f"/ack/{token}", data={"action": "send_code", "person": "ann"})
    assert r.status == 502 and p.counters.get("codes_failed") == 1
    [(event, kw)] = fakes.logged
    assert event == "oncall.code_not_sent" and "******" in kw["error"]
    assert not re.search(r"\d{6}", kw["error"])
    fakes.fail_sms = False
    r = await client.post(f"/ack/{token}", data={"action": "send_code", "person": "ann"})
    assert r.status == 200  # at once: the failed one did not count


async def test_without_an_sms_channel_a_shared_link_says_how_to_acknowledge(
        fakes: Fakes) -> None:
    p = make_page(fakes, config([HOOK]))
    client = await client_for(p.application())
    try:
        _, token = shared_link(p)
        body = await (await client.get(f"/ack/{token}")).text()
        assert 'id="nocode"' in body and "lifeline oncall ack" in body
        assert 'id="acknowledge"' not in body
        r = await client.post(f"/ack/{token}", data={"action": "send_code", "person": "ann"})
        assert r.status == 503 and fakes.sms == []
    finally:
        await client.close()


def test_code_store_checks_in_constant_form_and_forgets_used_codes() -> None:
    store = CodeStore(ttl_s=60, attempts=2, resend_s=0, max_per_link=10)
    challenge, code = store.issue("link", "ann", 0.0)
    assert len(code) == 6 and code.isdigit() and len(store) == 1
    assert store.check(challenge, "other-link", code, 1.0).verdict is CodeVerdict.UNKNOWN
    result = store.check(challenge, "link", f" {code} ", 1.0)
    assert (result.verdict, result.person) == (CodeVerdict.OK, "ann")
    assert store.check(challenge, "link", code, 2.0).verdict is CodeVerdict.UNKNOWN
    first, _ = store.issue("link", "ann", 3.0)
    second, code2 = store.issue("link", "ann", 4.0)  # replaces the first
    assert store.check(first, "link", code2, 5.0).verdict is CodeVerdict.UNKNOWN
    assert store.check(second, "link", code2, 5.0).verdict is CodeVerdict.OK
    # Only a keyed digest is kept, never the code.
    assert all(code2 not in vars(ch).values() for ch in store._challenges.values())


# ------------------------------------------------------------ links and the on-call file


def test_links_say_whether_they_went_to_a_shared_channel() -> None:
    from itsdangerous import URLSafeTimedSerializer

    from services.notifier.delivery import Deliverer
    from services.notifier.escalation import Notification
    from services.notifier.links import SALT

    cfg = config([HOOK, SMS, {"id": "room", "type": "dingtalk", "url": "http://x/robot",
                              "token_env": "T"}])
    signer = Signer(LINK_SECRET, 3600)

    async def emit(_rec: Any) -> None:
        return None

    d = Deliverer(cfg, None, signer, "https://lifeline.example.org/", emit, Counters())

    def link(channels: list[str]) -> AckLink:
        n = Notification("n-1", "page", "a-1", "F-1", "duty", 0, 0, "ann", channels, 0, {})
        url = d.ack_url(n)
        assert url.startswith("https://lifeline.example.org/ack/")
        return signer.verify(url.rsplit("/", 1)[1])

    assert link(["sms"]) == AckLink("a-1", "F-1", "ann", "n-1", "duty", False)
    assert link(["room", "sms"]).shared and link(["hook"]).shared
    # A link of the notifier before this change (four fields) is shared.
    raw = URLSafeTimedSerializer(LINK_SECRET, salt=SALT,
                                 signer_kwargs={"digest_method": hashlib.sha256})
    old = raw.dumps(["a", "F-1", "ann", "n"])
    assert signer.verify(old) == AckLink("a", "F-1", "ann", "n", "", True)
    with pytest.raises(LinkError, match="not valid"):
        signer.verify(raw.dumps(["a", "F-1", "ann", "n", "t", 2]))


def test_oncall_file_rules_for_personal_channels_and_codes() -> None:
    from pydantic import ValidationError

    cfg = oncall()
    code_channel = cfg.code_sms_channel()
    assert code_channel is not None and code_channel.id == "sms"
    assert cfg.step_is_personal(["sms"]) and not cfg.step_is_personal(["hook", "sms"])
    assert not cfg.step_is_personal([]) and not cfg.step_is_personal(["gone"])
    assert cfg.team_people("duty") == ["ann", "bob", "eve", "chief", "boss"]
    assert any("eve have no phone" in w for w in cfg.warnings())
    personal_hook = config([{**HOOK, "personal": True}])
    assert personal_hook.step_is_personal(["hook"])
    assert not any("one-time codes" in w for w in personal_hook.warnings())
    assert any("one-time codes" in w for w in config([HOOK]).warnings())
    with pytest.raises(ValidationError, match="group robot cannot be personal"):
        config([HOOK, {"id": "dt", "type": "dingtalk", "url": "http://x", "token_env": "T",
                       "personal": True}])
    with pytest.raises(ValidationError, match="not an sms channel"):
        config([HOOK, SMS], code_channel="hook")
    with pytest.raises(ValidationError, match="unknown channel"):
        config([HOOK, SMS], code_channel="fax")


def test_public_port_must_differ_from_the_health_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from services.notifier.config import NotifierSettings

    monkeypatch.setenv("LIFELINE_STATE_DIR", "/nonexistent-lifeline-state")
    assert (NotifierSettings().health_port, NotifierSettings().public_port) == (18084, 18085)
    monkeypatch.setenv("LIFELINE_NOTIFIER_PUBLIC_PORT", "18084")
    with pytest.raises(ValidationError, match="must differ"):
        NotifierSettings()
