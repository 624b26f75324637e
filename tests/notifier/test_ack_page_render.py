"""The acknowledgement page in a real browser shows the facility's Chinese name as Chinese
glyphs, not tofu boxes (issue 20).

Headless Debian Chromium loads the page from the notifier's real public site and saves a
screenshot. A probe then draws, one at a time at the same place and in the page's own
font, each distinct character of the Chinese name and an unassigned code point (always
drawn as the missing-glyph box): with a CJK font every character has its own picture and
none is the box; without one they are all the same box. The control runs Chromium with a
fontconfig that hides the CJK fonts and shows that the probe then finds tofu, so the test
fails on a machine without ``fonts-noto-cjk`` (scripts/bootstrap.sh installs it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from schemas.oncall import AckRequest, Person
from services.core.health import Counters
from services.notifier.ackpage import AckPage
from services.notifier.acks import AckSigner
from services.notifier.links import AckLink, Signer
from services.notifier.otp import CodeStore
from tests.support.oncall_helpers import HOOK, LINK_SECRET, config
from tests.support.stack_helpers import chromium

# Chromium, started by the module (no stack fixture).
pytestmark = pytest.mark.integration

NAME_ZH = "滨海园区排涝泵站1号"
ALARM: dict[str, Any] = {
    "facility_id": "DP-BH-001", "kind": "drainage", "district": "Binhai Park",
    "district_zh": "滨海园区", "facility_name": "Binhai Park pump station 1",
    "facility_name_zh": NAME_ZH, "sensor": "DP-BH-001-W1", "metric": "water_level",
    "rule": "value-upper", "category": "facility", "level": "red", "value": 5.6,
    "threshold": 5.5, "unit": "m", "event": "raised", "ts": "2026-07-01T02:00:00+00:00",
    "message": "【红色预警（I级）发布】滨海园区排涝泵站1号（Binhai Park pump station 1，滨海园区 "
               "Binhai Park）水位 5.6 m 高于红色阈值 5.5 m — red (level I) raised: water level "
               "5.6 m at or above the red threshold 5.5 m",
    "silenced": False, "suppressed_by": None, "flapping": False, "held_by_fault": None,
    "stale_since": None, "entry": None}
UNASSIGNED = "\u0378"  # no character: every font draws its missing-glyph box

PROBE = """
const [text, ref] = arguments;
let p = document.getElementById('probe');
if (!p) {
  p = document.createElement('span');
  p.id = 'probe';
  const f = getComputedStyle(document.getElementById('facility'));
  Object.assign(p.style, {position: 'fixed', left: '10px', top: '10px', fontFamily: f.fontFamily,
                          fontSize: '40px', lineHeight: '48px', color: '#000',
                          background: '#fff', padding: '4px', zIndex: 9});
  document.body.appendChild(p);
}
p.textContent = text;
return p.getBoundingClientRect().width;
"""


def chromium_render(env: dict[str, str] | None = None) -> Any:
    return chromium(env, extra=("--window-size=900,1000", "--force-device-scale-factor=1",
                                "--lang=zh-CN"))


class Quiet:
    async def publish(self, _req: AckRequest) -> None:
        raise AssertionError("showing the page must not acknowledge")

    async def send_code(self, _p: Person, _text: str, _msg: str) -> None:
        raise AssertionError("no code is asked for")


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """The real acknowledgement site (aiohttp, CSP headers) serving one red alarm."""
    q = Quiet()
    page = AckPage(config([HOOK]), Signer(LINK_SECRET, 3600), AckSigner(LINK_SECRET),
                   CodeStore(ttl_s=300, attempts=3, resend_s=30, max_per_link=3), Counters(),
                   q.publish, q.send_code, lambda _a, _f: (ALARM, {}), verdict_wait_s=0,
                   places=lambda _f: (27.9123, 120.8456, NAME_ZH))
    token = page.signer.sign(AckLink("a-1", "DP-BH-001", "ann", "n-1", "duty", False))
    server = TestServer(page.application(), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(f"/ack/{token}"))
    finally:
        await server.close()


def probe(driver: Any, text: str) -> bytes:
    """A picture of ``text`` drawn alone at a fixed place in the page's font."""
    width = driver.execute_script(PROBE, text)
    assert width > 0
    png: bytes = driver.find_element("id", "probe").screenshot_as_png
    return png


def glyph_pictures(driver: Any) -> tuple[list[bytes], bytes]:
    chars = [c for c in dict.fromkeys(NAME_ZH) if "\u4e00" <= c <= "\u9fff"]
    return [probe(driver, c) for c in chars], probe(driver, UNASSIGNED)


def load(driver: Any, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.find_elements("id", "facility"))
    driver.execute_script("return document.fonts.ready")


async def test_the_ack_page_renders_the_chinese_name_in_chinese_glyphs(
        page_url: str, tmp_path: Path) -> None:
    import asyncio

    shot = tmp_path / "ack-page.png"

    def run() -> tuple[bytes, str, str, list[bytes], bytes]:
        driver = chromium_render()
        try:
            load(driver, page_url)
            assert driver.save_screenshot(str(shot))
            title = driver.find_element("id", "facility").text
            body = driver.find_element("tag name", "body").text
            pictures, tofu = glyph_pictures(driver)
            return shot.read_bytes(), title, body, pictures, tofu
        finally:
            driver.quit()

    png, title, body, pictures, tofu = await asyncio.to_thread(run)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert title == NAME_ZH
    assert "红色预警（I级） red (level I)" in body and "value-upper" not in body
    assert "水位超上限 water level above its upper limit" in body
    # Read in the street: where it is (a map link from the coordinates), the zone named.
    assert "27.91230, 120.84560" in body and "高德地图 map" in body
    assert "(Asia/Shanghai, UTC+08:00)" in body
    # Real glyphs: each character its own picture, none of them the missing-glyph box.
    assert len(set(pictures)) == len(pictures), "Chinese characters render alike: tofu"
    assert tofu not in pictures, "Chinese characters render as the missing-glyph box"


async def test_the_probe_finds_tofu_when_no_cjk_font_is_installed(
        page_url: str, tmp_path: Path) -> None:
    """The control: the same page with only DejaVu visible to fontconfig (as on a machine
    without fonts-noto-cjk): the probe sees every Chinese character as the same box."""
    import asyncio

    def run() -> tuple[list[bytes], bytes]:
        dejavu = Path("/usr/share/fonts/truetype/dejavu")
        if not dejavu.is_dir():
            pytest.fail("fonts-dejavu-core is missing (a dependency of Debian's chromium)")
        conf = tmp_path / "fonts.conf"
        conf.write_text(f"""<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig><dir>{dejavu}</dir><cachedir>{tmp_path / "fc-cache"}</cachedir></fontconfig>
""", encoding="utf-8")
        driver = chromium_render({**os.environ, "FONTCONFIG_FILE": str(conf)})
        try:
            load(driver, page_url)
            return glyph_pictures(driver)
        finally:
            driver.quit()

    pictures, tofu = await asyncio.to_thread(run)
    assert len(set(pictures)) == 1 and pictures[0] == tofu
