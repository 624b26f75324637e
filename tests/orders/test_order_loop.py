"""The closed loop of issue 19 through the real pipeline (Mosquitto → ingest → processor →
Tansu → orders service → PostgreSQL), with a local webhook standing in for the phones:

- a dust episode at a site opens a work order for the site's contractor, dispatched at
  once with a link to the order page; the contractor accepts and reports with a photo
  through the page; the order is verified from the data once the hourly PM10 has been back
  under the limit for the rule's hour, and the bureau's desk closes it on the page;
- an order past its deadline escalates (督办) to the unit's manager, then the section chief;
- an analyst's false alarm closes the order as such and counts against its sensor;
- the page refuses a forged or expired link, an unknown order, a step the state does not
  allow, an oversize or non-image upload — and changes nothing;
- the order page renders its Chinese text in Chinese glyphs (headless Chromium);
- a kill -9 of the orders service mid-lifecycle loses no order and sends no message twice.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import yaml
from PIL import Image

from schemas.alarm import AlarmCategory, AlarmEvent, AlarmEventType, alarm_id_for, event_id_for
from schemas.codec import ALARM_EVENT
from schemas.kinds import AlarmLevel, FacilityKind, Metric
from schemas.workorder import OrderState, WorkOrder, order_id_for
from services.core import topics
from services.orders.links import OrderLink, OrderSigner
from services.stack.manager import Stack, free_port
from services.stack.services import ServiceProcess
from simulators.publisher import Publisher
from tests.orders.test_orders_live import order_or_none, produce, store_call
from tests.support.pipeline import WO_SITE_UNIT, Pipeline
from tests.support.stack_helpers import report, wait_for

ROOT = Path(__file__).resolve().parents[2]
UNIT = "TEST 排水单位 test drainage unit"


class Receiver:
    """A local webhook endpoint: every message the orders service sends, with its
    delivery id (the notifier's webhook format)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        received = self.messages

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({**json.loads(body),
                                 "delivery": self.headers.get("X-Lifeline-Delivery")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def about(self, order_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if any(a.get("order_id") == order_id
                                                for a in m.get("alarms", []))]


def oncall_file(path: Path, hook: str) -> Path:
    doc = {
        "timezone": "Asia/Shanghai",
        "people": [{"id": "wo.contact", "name": "何工 He (test unit)", "phone": "13800000301"},
                   {"id": "wo.manager", "name": "吴经理 Manager Wu", "phone": "13800000302"},
                   {"id": "wo.site", "name": "陈建国 Chen (site)", "phone": "13800000303"},
                   {"id": "wo.sitemgr", "name": "韩经理 Manager Han", "phone": "13800000304"},
                   {"id": "wo.chief", "name": "徐科长 Section chief Xu", "phone": "13800000305"}],
        "channels": [{"id": "hook", "type": "webhook", "url": hook, "personal": True}],
        "teams": [{"id": "duty", "name": "Duty", "escalation": [
            {"notify": "on_duty", "channels": ["hook"]}],
            "layers": [{"name": "d", "members": ["wo.contact"],
                        "handover": "2026-11-02T08:00:00+08:00"}]}],
        "routes": [{"match": {}, "team": "duty"}],
        "units": [{"name": UNIT, "contact": "wo.contact", "manager": "wo.manager",
                   "channels": ["hook"]},
                  {"name": WO_SITE_UNIT, "contact": "wo.site", "manager": "wo.sitemgr",
                   "channels": ["hook"]}],
        "orders": {"section_chief": "wo.chief", "channels": ["hook"],
                   "escalation_step_hours": 0.003},
    }
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def loop_env(stack: Stack, pipeline_env: dict[str, str], receiver: Receiver,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    port = free_port()
    return {**pipeline_env, "LIFELINE_ORDERS_OPEN_FROM": "orange",
            "LIFELINE_ORDERS_ONCALL": str(oncall_file(
                tmp_path_factory.mktemp("oncall") / "oncall.yaml", receiver.url)),
            "LIFELINE_ORDERS_DEFAULT_OWNER_UNIT": UNIT,
            # Red and orange orders are due in ~7 s (a dust site's in a day): 督办 in a test.
            "LIFELINE_ORDERS_DEADLINES": json.dumps(
                {"hours": {"red": 0.002, "orange": 0.002, "yellow": 24, "blue": 72},
                 "by_kind": {"site": {"orange": 24, "red": 24}}}),
            "LIFELINE_ORDERS_TICK_S": "1", "LIFELINE_ORDERS_NOTICE_BACKOFF_S": "1",
            "LIFELINE_ORDERS_PUBLIC_PORT": str(port),
            "LIFELINE_ORDERS_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "LIFELINE_ORDERS_UPLOAD_MAX_BYTES": str(200_000),
            "LIFELINE_ORDERS_FALSE_ALARM_LIMIT": "1",
            # The schedule: yesterday's 日报 at the first tick (after 00:00 local).
            "LIFELINE_ORDERS_REPORTS_DIR": str(tmp_path_factory.mktemp("reports")),
            "LIFELINE_ORDERS_REPORTS_AFTER": "00:00"}


@pytest.fixture(scope="module")
def orders(stack: Stack, loop_env: dict[str, str]) -> Iterator[ServiceProcess]:
    svc = ServiceProcess("orders", loop_env, stack.logs, free_port(), instance="-loop")
    svc.start()
    svc.wait_ready(90, ready=lambda b: b and b["counters"].get("assigned_partitions", 0) > 0)
    yield svc
    svc.stop()


def alarm(fid: str, level: AlarmLevel, started: datetime, sensor: str = "L1",
          kind: FacilityKind = FacilityKind.DRAINAGE) -> AlarmEvent:
    """A facility alarm raised at ``started``: a drainage one is due in seconds here, a
    site's in a day (the module's deadlines)."""
    aid = alarm_id_for(fid, f"{fid}-{sensor}", "value-upper", started)
    return AlarmEvent(
        event_id=event_id_for(aid, AlarmEventType.RAISED, level, started), alarm_id=aid,
        event=AlarmEventType.RAISED, level=level, previous_level=None,
        category=AlarmCategory.FACILITY, facility_id=fid, kind=kind,
        sensor=f"{fid}-{sensor}", metric=Metric.WATER_LEVEL, rule="value-upper", value=2.5,
        threshold=2.0, unit="m", ts=started, message="水位超限 water level high")


def raise_alarm(stack: Stack, ev: AlarmEvent) -> str:
    produce(stack, topics.ALARMS, [(ev.facility_id.encode(), ALARM_EVENT.encode(ev))])
    return order_id_for(ev.alarm_id)


def wait_order(stack: Stack, order_id: str, ok: Any, timeout: float = 60) -> WorkOrder:
    found: list[WorkOrder] = []

    def check() -> bool:
        o = order_or_none(stack, order_id)
        if o is not None and ok(o):
            found.append(o)
            return True
        return False

    wait_for(check, timeout, what=f"order {order_id} never got there")
    return found[0]


def signer(loop_env: dict[str, str], ttl: float = 3600) -> OrderSigner:
    return OrderSigner(loop_env["LIFELINE_ORDERS_LINK_SECRET"], ttl)


def page(loop_env: dict[str, str], order_id: str, person: str, role: str = "unit") -> str:
    token = signer(loop_env).sign(OrderLink(order_id, person, role))  # type: ignore[arg-type]
    return f"{loop_env['LIFELINE_ORDERS_PUBLIC_URL']}/order/{token}"


def post(url: str, fields: dict[str, str], photos: list[tuple[str, bytes, str]] = ()
         ) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        form = aiohttp.FormData()
        for k, v in fields.items():
            form.add_field(k, v)
        for name, data, ctype in photos:
            form.add_field("photos", data, filename=name, content_type=ctype)
        async with aiohttp.ClientSession() as s, s.post(url, data=form,
                                                       allow_redirects=True) as r:
            return r.status, await r.text()
    return asyncio.run(run())


def get(url: str) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status, await r.text()
    return asyncio.run(run())


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


def dust(publisher: Publisher, start: datetime, minutes: range, value: float, seq0: int) -> int:
    topic = "lifeline/site/TEST-WO-SITE/telemetry"
    seq = seq0
    for m in minutes:
        seq += 1
        ts = int((start + timedelta(minutes=m)).timestamp() * 1000)
        publisher.publish(topic, report(seq, ts, [("TEST-WO-SITE-PM10", "pm10", value, "µg/m³")]))
    publisher.flush()
    return seq


def test_a_dust_episode_is_handled_to_the_end_through_the_page(
        pipeline: Pipeline, stack: Stack, orders: ServiceProcess, publisher: Publisher,
        receiver: Receiver, loop_env: dict[str, str]) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=4)
    seq = dust(publisher, start, range(0, 90), 320.0, 0)  # 90 min of heavy dust: orange

    def dust_order() -> WorkOrder | None:
        found = store_call(stack, lambda s: s.orders(limit=500))
        mine = [o for o in found if o.sensor_id == "TEST-WO-SITE-PM10"]
        return mine[0] if mine else None

    wait_for(lambda: dust_order() is not None, 90, what="the dust episode opened no work order")
    order = dust_order()
    assert order is not None and order.owner_unit == WO_SITE_UNIT
    order = wait_order(stack, order.order_id, lambda o: o.state is OrderState.DISPATCHED)
    assert order.assignee == "wo.site"
    wait_for(lambda: receiver.about(order.order_id), 30, what="the contractor was not told")
    msg = receiver.about(order.order_id)[0]
    assert msg["person"] == "wo.site" and "工单测试工地" in msg["text"]
    link = msg["alarms"][0]["ack_url"]
    assert link.startswith(loop_env["LIFELINE_ORDERS_PUBLIC_URL"] + "/order/")

    status, body = get(link)
    assert status == 200 and "工单测试工地" in body and "测试区" in body
    assert "Asia/Shanghai" in body and "uri.amap.com" in body and "value-upper" not in body
    status, body = post(link, {"action": "accept"})
    assert status == 200 and 'id="done"' in body, body[:500]
    status, body = post(link, {"action": "report", "note": "已开启喷淋并覆盖裸土 spray on, "
                                                          "bare soil covered"},
                        [("site.jpg", jpeg(), "image/jpeg")])
    assert status == 200 and 'id="done"' in body, body[:500]
    order = wait_order(stack, order.order_id, lambda o: o.state is OrderState.REPORTED)
    assert len(order.evidence) == 1
    status, body = get(link)
    assert f"/photo/{order.evidence[0]}" in body

    # A kill -9 of the processor mid-lifecycle: its alarm state comes back from the changelog.
    pipeline.restart("processor")
    # The site is clean again: the hourly mean falls under 150 and stays an hour → cleared →
    # verified from the data (not by a person).
    dust(publisher, start, range(90, 240), 40.0, seq)
    order = wait_order(stack, order.order_id, lambda o: o.state is OrderState.VERIFIED, 120)
    history = store_call(stack, lambda s: s.history(order.order_id))
    assert [e.actor for e in history if e.action == "verify"] == ["verifier"]

    # The analyst's link to the page, from the CLI (`lifeline orders link`).
    out = subprocess.run([sys.executable, "-m", "services.cli", "orders", "link", order.order_id,
                          "--person", "wo.chief", "--role", "desk"], env=loop_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    desk = out.stdout.strip()
    assert desk.startswith(loop_env["LIFELINE_ORDERS_PUBLIC_URL"] + "/order/")
    assert post(page(loop_env, order.order_id, "wo.site"), {"action": "close"})[0] == 409
    status, body = post(desk, {"action": "close", "note": "销号 closed"})
    assert status == 200, body[:500]
    order = wait_order(stack, order.order_id, lambda o: o.state is OrderState.CLOSED)
    # One message, to the contractor, for the whole loop (no escalation: a day to go).
    assert [m["person"] for m in receiver.about(order.order_id)] == ["wo.site"]


def test_an_overdue_order_escalates_to_the_manager_then_the_chief(
        stack: Stack, orders: ServiceProcess, receiver: Receiver) -> None:
    order_id = raise_alarm(stack, alarm("TEST-WO-ESC", AlarmLevel.ORANGE, datetime.now(UTC)))
    wait_order(stack, order_id, lambda o: o.escalation == 2, 90)
    wait_for(lambda: len(receiver.about(order_id)) >= 3, 30, what="not every escalation was sent")
    msgs = receiver.about(order_id)
    assert [m["person"] for m in msgs] == ["wo.contact", "wo.manager", "wo.chief"]
    assert "督办" in msgs[1]["title"] and "Overdue" in msgs[1]["title"]
    notices = store_call(stack, lambda s: s.notices(order_id))
    assert [n["status"] for n in notices] == ["sent"] * 3
    time.sleep(3)  # further ticks escalate no more
    assert len(receiver.about(order_id)) == 3


def test_a_false_alarm_is_closed_as_such_and_counted_against_its_sensor(
        stack: Stack, orders: ServiceProcess, loop_env: dict[str, str]) -> None:
    ev = alarm("TEST-WO-FA", AlarmLevel.ORANGE, datetime.now(UTC), kind=FacilityKind.SITE)
    order_id = raise_alarm(stack, ev)
    wait_order(stack, order_id, lambda o: o.state is OrderState.DISPATCHED)
    env = {**loop_env}
    out = subprocess.run([sys.executable, "-m", "services.cli", "orders", "false-alarm",
                          order_id, "--by", "wo.chief", "--reason", "传感器被淹 gauge submerged"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    o = wait_order(stack, order_id, lambda o: o.state is OrderState.FALSE_ALARM)
    assert o.false_alarm_reason == "传感器被淹 gauge submerged"
    counts = store_call(stack, lambda s: s.false_alarms(days=30))
    assert counts.get("TEST-WO-FA-L1") == 1
    # At the limit (1 here) the sensor is suspect: a health warning naming it.
    wait_for(lambda: "sensor.TEST-WO-FA-L1" in (orders.health()[1] or {}).get("warnings", {}),
             20, what="no health warning for the suspect sensor")
    out = subprocess.run([sys.executable, "-m", "services.cli", "orders", "false-alarms"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "TEST-WO-FA-L1" in out.stdout, out.stderr


def test_the_page_refuses_bad_requests_and_changes_nothing(
        stack: Stack, orders: ServiceProcess, loop_env: dict[str, str]) -> None:
    ev = alarm("TEST-WO-BAD", AlarmLevel.ORANGE, datetime.now(UTC), kind=FacilityKind.SITE)
    order_id = raise_alarm(stack, ev)
    before = wait_order(stack, order_id, lambda o: o.state is OrderState.DISPATCHED)
    url = page(loop_env, order_id, "wo.contact")
    base = loop_env["LIFELINE_ORDERS_PUBLIC_URL"]
    assert get(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"))[0] == 403  # forged
    other = OrderSigner("another-secret-of-sufficient-length", 3600)
    assert get(f"{base}/order/{other.sign(OrderLink(order_id, 'wo.contact', 'unit'))}")[0] == 403
    with mock.patch("itsdangerous.timed.time.time", return_value=time.time() - 8 * 86400):
        old = signer(loop_env).sign(OrderLink(order_id, "wo.contact", "unit"))  # 8 days ago
    status, body = get(f"{base}/order/{old}")
    assert status == 410 and "expired" in body
    assert get(page(loop_env, "WO-0000000000000000", "wo.contact"))[0] == 404
    # A step the state does not allow (report before accept is allowed? no: dispatched →
    # accept only), a desk step from a unit link, a stranger's unit link.
    assert post(url, {"action": "close"})[0] == 409
    assert post(url, {"action": "verify"})[0] == 409
    assert post(page(loop_env, order_id, "wo.site"), {"action": "accept"})[0] == 409
    assert post(url, {"action": "accept"})[0] == 200
    big = jpeg((2000, 2000)) + b"\0" * 200_000
    assert post(url, {"action": "report", "note": "x"}, [("big.jpg", big, "image/jpeg")]
                )[0] == 413
    assert post(url, {"action": "report", "note": "x"},
                [("x.jpg", b"%PDF-1.4 not an image", "image/jpeg")])[0] == 415
    assert post(url, {"action": "report"})[0] == 400  # a report needs a note
    after = store_call(stack, lambda s: s.order(order_id))
    assert after.state is OrderState.ACCEPTED and after.evidence == ()
    assert after.events == before.events + 1  # the accept only


def test_the_contractor_accepts_and_reports_in_a_browser_and_chinese_renders(
        stack: Stack, orders: ServiceProcess, loop_env: dict[str, str], tmp_path: Path) -> None:
    """Headless Chromium: the page renders its Chinese in Chinese glyphs (a screenshot), and
    the person accepts, then reports with a photo chosen in the file input."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.notifier.test_ack_page_render import chromium_render, glyph_pictures, load

    # A step's POST reloads the page: an element found just before may be gone when read.
    stale = (StaleElementReferenceException,)

    # The site of the registry (its names and coordinates on the page), another alarm of it.
    ev = alarm("TEST-WO-SITE", AlarmLevel.ORANGE, datetime.now(UTC), sensor="CJK",
               kind=FacilityKind.SITE)
    order_id = raise_alarm(stack, ev)
    wait_order(stack, order_id, lambda o: o.state is OrderState.DISPATCHED)
    url = page(loop_env, order_id, "wo.site")
    photo = tmp_path / "site.png"
    Image.new("RGB", (80, 60), (200, 120, 30)).save(photo, "PNG")
    driver = chromium_render()
    try:
        load(driver, url)
        shot = tmp_path / "order.png"
        driver.save_screenshot(str(shot))
        body = driver.find_element("tag name", "body").text
        pictures, tofu = glyph_pictures(driver)
        driver.find_element("id", "do-accept").click()
        WebDriverWait(driver, 30, ignored_exceptions=stale).until(
            lambda d: d.find_elements("id", "done"))
        driver.find_element("css selector", "#form-report textarea[name=note]").send_keys(
            "已清扫路面并开启喷淋 road swept, spray on")
        driver.find_element("css selector", "#form-report input[name=photos]").send_keys(
            str(photo))
        driver.find_element("id", "do-report").click()
        WebDriverWait(driver, 30, ignored_exceptions=stale).until(
            lambda d: "反馈" in (d.find_elements("id", "done") or [None])[0].text
            if d.find_elements("id", "done") else False)
        after = driver.find_element("tag name", "body").text
    finally:
        driver.quit()
    assert "工单测试工地" in body and "截止" in body and "Asia/Shanghai" in body
    assert "高德地图" in body and "测试区" in body
    assert shot.stat().st_size > 10_000
    assert len(set(pictures)) == len(pictures) and tofu not in pictures
    assert "road swept" in after
    o = wait_order(stack, order_id, lambda o: o.state is OrderState.REPORTED)
    assert len(o.evidence) == 1 and o.report_note == "已清扫路面并开启喷淋 road swept, spray on"


def test_a_kill_9_mid_lifecycle_loses_no_order_and_sends_no_message_twice(
        stack: Stack, orders: ServiceProcess, receiver: Receiver) -> None:
    started = datetime.now(UTC)
    ids = [raise_alarm(stack, alarm(f"TEST-WO-K{i}", AlarmLevel.RED, started)) for i in range(5)]
    time.sleep(0.5)
    orders.kill()
    orders.start()
    orders.wait_ready(90, ready=lambda b: b and b["counters"].get("assigned_partitions", 0) > 0)
    for oid in ids:
        wait_order(stack, oid, lambda o: o.escalation == 2, 120)
    wait_for(lambda: all(len(receiver.about(o)) >= 3 for o in ids), 60, what="messages missing")
    time.sleep(3)
    for oid in ids:
        msgs = receiver.about(oid)
        assert [m["person"] for m in msgs] == ["wo.contact", "wo.manager", "wo.chief"], oid
        assert len({m["delivery"] for m in msgs}) == 3


def test_yesterdays_report_is_written_on_schedule(
        pipeline: Pipeline, orders: ServiceProcess, loop_env: dict[str, str]) -> None:
    folder = Path(loop_env["LIFELINE_ORDERS_REPORTS_DIR"])
    yesterday = (datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date()
                 - timedelta(days=1)).isoformat()
    pdf = folder / f"lifeline-daily-{yesterday}.pdf"
    wait_for(lambda: pdf.exists(), 60, what="no scheduled daily report")
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.with_suffix(".html").exists()
    # (Only the service writes into that folder; its counter restarted with the kill -9.)
    assert "reports_written" in orders.counters()


def test_the_daily_report_of_the_run_lists_it_all(
        stack: Stack, orders: ServiceProcess, loop_env: dict[str, str], tmp_path: Path) -> None:
    import pypdfium2 as pdfium

    found = store_call(stack, lambda s: s.orders(limit=1000))
    mine = {o.facility_id: o for o in found if o.facility_id.startswith("TEST-WO-")}
    assert {"TEST-WO-SITE", "TEST-WO-ESC", "TEST-WO-FA"} <= set(mine)
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
    out = subprocess.run([sys.executable, "-m", "services.cli", "report", "daily", "--date",
                          today, "--out", str(tmp_path)], env=loop_env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    pdf = tmp_path / f"lifeline-daily-{today}.pdf"
    html_text = (tmp_path / f"lifeline-daily-{today}.html").read_text(encoding="utf-8")
    doc = pdfium.PdfDocument(str(pdf))
    text = "".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
    for page_no in range(len(doc)):
        assert doc[page_no].render(scale=0.5).to_pil().getbbox() is not None
    flat = text.replace("\r", "").replace("\n", "")
    for fid in ("TEST-WO-SITE", "TEST-WO-ESC", "TEST-WO-FA"):
        assert mine[fid].order_id in flat and mine[fid].order_id in html_text, fid
    assert "日报" in flat and "工单测试工地" in html_text
