"""The work orders' parts without a stack: who is told what (notices), signed links, the
photo check, the on-call file's units, and that every owner unit of the example registry
has its people."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from schemas.kinds import AlarmLevel, FacilityKind
from schemas.oncall import OnCallConfig, OnCallError, load_oncall
from schemas.registry import load_registry
from schemas.texts import local_time
from schemas.workorder import OrderAction, OrderEvent, WorkOrder, apply, event_id_for, order_id_for
from services.orders.links import OrderLink, OrderLinkError, OrderSigner
from services.orders.notices import notices_for
from services.orders.page import Refused, check_photo
from tests.conftest import EXAMPLE_REGISTRY, ROOT

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
UNIT = "温州湾建工集团 Wenzhou Bay Construction Group"
ONCALL = ROOT / "deploy" / "oncall" / "wenzhou-bay.yaml"


def opened() -> WorkOrder:
    oid = order_id_for("a-1")
    ev = OrderEvent(event_id=event_id_for(oid, OrderAction.OPEN, T0, "system"), order_id=oid,
                    action=OrderAction.OPEN, at=T0, actor="system", alarm_id="a-1",
                    facility_id="CS-KG-001", sensor_id="CS-KG-001-PM10", rule="mean-upper",
                    level=AlarmLevel.ORANGE, kind=FacilityKind.SITE, district="Konggang",
                    owner_unit=UNIT, deadline=T0 + timedelta(hours=4))
    return apply(None, ev)


def step(order: WorkOrder, action: OrderAction, at: datetime, **kw: object) -> tuple[OrderEvent,
                                                                                   WorkOrder]:
    ev = OrderEvent(event_id=event_id_for(order.order_id, action, at, "system"),
                    order_id=order.order_id, action=action, at=at, actor="system", **kw)
    return ev, apply(order, ev)


def cfg() -> OnCallConfig:
    return load_oncall(ONCALL)


def link(order: WorkOrder, person: str) -> str:
    return f"https://x/order/{order.order_id}/{person}"


def test_every_owner_unit_of_the_example_registry_has_a_contact_and_a_manager() -> None:
    units = {f.owner_unit for f in load_registry(EXAMPLE_REGISTRY).facilities if f.owner_unit}
    c = cfg()
    assert units and all(c.unit(u) is not None for u in units), units - {u.name for u in c.units}
    assert c.orders is not None and c.orders.section_chief == "xu.chief"


def test_dispatch_escalations_and_return_tell_the_right_people() -> None:
    c = cfg()
    ev, order = step(opened(), OrderAction.DISPATCH, T0, assignee="kg1.chen")
    [n] = notices_for(ev, order, c, None, link)
    assert (n.person, n.kind, n.channels) == ("kg1.chen", "dispatched", ("sms", "email"))
    assert "2026-12-01 20:00 (Asia/Shanghai, UTC+08:00)" in n.text
    assert n.link == link(order, "kg1.chen") and n.link not in n.text  # added per channel
    ev1, order = step(order, OrderAction.ESCALATE, T0 + timedelta(hours=5), escalation=1)
    [m] = notices_for(ev1, order, c, None, link, overdue_count=3)
    assert m.person == "kg1.mgr" and "1.0 h" in m.text and "第3次" in m.text
    ev2, order = step(order, OrderAction.ESCALATE, T0 + timedelta(hours=7), escalation=2)
    assert [x.person for x in notices_for(ev2, order, c, None, link)] == ["xu.chief"]
    _, order = step(order, OrderAction.ACCEPT, T0 + timedelta(hours=8))
    _, order = step(order, OrderAction.REPORT, T0 + timedelta(hours=9), note="洒水")
    ev3, order = step(order, OrderAction.RETURN_, T0 + timedelta(hours=10), reason="仍超标")
    [r] = notices_for(ev3, order, c, None, link)
    assert r.person == "kg1.chen" and "仍超标" in r.text
    ev4, order = step(order, OrderAction.COMMENT, T0 + timedelta(hours=11), note="x")
    assert notices_for(ev4, order, c, None, link) == []
    assert notices_for(ev, order, None, None, link) == []  # no on-call file: nobody


def test_a_unit_not_in_the_file_escalates_to_the_desk() -> None:
    order = opened().model_copy(update={"owner_unit": "somebody else"})
    ev, order = step(order, OrderAction.ESCALATE, T0 + timedelta(hours=5), escalation=1)
    assert [n.person for n in notices_for(ev, order, cfg(), None, link)] == ["xu.chief"]


def test_local_time_names_the_zone() -> None:
    from zoneinfo import ZoneInfo
    assert local_time(T0, ZoneInfo("Asia/Shanghai")) == "2026-12-01 16:00 (Asia/Shanghai, UTC+08:00)"


def test_links_are_signed_and_expire() -> None:
    s = OrderSigner("x" * 32, 3600)
    token = s.sign(OrderLink("WO-1", "kg1.chen", "unit"))
    assert s.verify(token) == OrderLink("WO-1", "kg1.chen", "unit")
    with pytest.raises(OrderLinkError) as e:
        OrderSigner("y" * 32, 3600).verify(token)
    assert e.value.status == 403
    with pytest.raises(OrderLinkError):
        s.verify(token[:-2] + "zz")
    with pytest.raises(ValueError, match="16 characters"):
        OrderSigner("short", 3600)


def _image(fmt: str, size: tuple[int, int] = (20, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, fmt)
    return buf.getvalue()


def test_photos_are_checked_by_decoding_them() -> None:
    assert check_photo(_image("JPEG"), 10**6) == ("image/jpeg", 20, 10)
    assert check_photo(_image("PNG"), 10**6)[0] == "image/png"
    assert check_photo(_image("WEBP"), 10**6)[0] == "image/webp"
    for bad, status in ((b"", 415), (b"GIF89a nonsense", 415), (b"\x89PNG\r\n\x1a\n" + b"0" * 50, 415),
                        (_image("GIF"), 415), (_image("JPEG"), 413)):
        with pytest.raises(Refused) as e:
            check_photo(bad, 100 if status == 413 else 10**6)
        assert e.value.status == status


def test_units_must_name_known_people_and_channels() -> None:
    data = cfg().model_dump(mode="json", by_alias=True)
    data["units"][0]["manager"] = "nobody"
    with pytest.raises(ValueError, match="unknown person nobody"):
        OnCallConfig.model_validate(data)
    data = cfg().model_dump(mode="json", by_alias=True)
    data["units"].append(dict(data["units"][0]))
    with pytest.raises(ValueError, match="listed twice"):
        OnCallConfig.model_validate(data)
    assert issubclass(OnCallError, ValueError)


class _Senders:
    """Records what would be sent (the channels' formats are the notifier's own tests)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def send(self, channel: object, person: object, msg: object) -> str:
        self.sent.append((channel.id, person.id, msg.text))  # type: ignore[attr-defined]
        return "ok"


async def test_a_shared_channel_gets_a_link_that_only_shows_the_order() -> None:
    from services.orders.notices import Outbox

    data = cfg().model_dump(mode="json", by_alias=True)
    c = OnCallConfig.model_validate(data)
    senders = _Senders()
    box = Outbox(lambda: c, senders, view_link=lambda o, p: f"https://x/view/{o}/{p}")  # type: ignore[arg-type]
    row = {"notice_id": "n1", "order_id": "WO-1", "kind": "dispatched", "person": "kg1.chen",
           "channels": ["email", "sms"], "title": "t", "text": "body",
           "link": "https://x/act/WO-1/kg1.chen"}
    assert (await box.send(row))[0]
    # e-mail is shared (not personal) in the example file: a view-only link
    assert senders.sent[-1][0] == "email" and "https://x/view/WO-1/kg1.chen" in senders.sent[-1][2]
    assert "act" not in senders.sent[-1][2]
    row["channels"] = ["sms"]
    assert (await box.send(row))[0]
    assert "https://x/act/WO-1/kg1.chen" in senders.sent[-1][2]


def test_the_page_lets_a_link_act_only_for_its_people() -> None:
    from services.core.health import Counters
    from services.orders.config import OrdersSettings
    from services.orders.page import OrderPage

    order = opened()
    _, order = step(order, OrderAction.DISPATCH, T0, assignee="kg1.chen")
    c = cfg()
    page = OrderPage(OrdersSettings(), None, OrderSigner("x" * 32, 60), lambda: None,  # type: ignore[arg-type]
                     lambda: load_registry(EXAMPLE_REGISTRY), lambda: c, Counters())
    assert page._may(OrderLink(order.order_id, "kg1.chen", "unit"), order) == {OrderAction.ACCEPT}
    assert page._may(OrderLink(order.order_id, "kg1.mgr", "unit"), order) == {OrderAction.ACCEPT}
    assert page._may(OrderLink(order.order_id, "kg2.lin", "unit"), order) == set()  # other unit
    assert page._may(OrderLink(order.order_id, "kg1.chen", "view"), order) == set()
    assert page._may(OrderLink(order.order_id, "xu.chief", "desk"), order) == {
        OrderAction.FALSE_ALARM}
    assert page._may(OrderLink(order.order_id, "gone.person", "desk"), order) == set()
