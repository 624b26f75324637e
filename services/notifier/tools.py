"""What ``lifeline oncall`` does: who is on duty, acknowledge from the command line, and
the audit trail of one alarm.

A command-line acknowledgement is signed like the page's (services.notifier.acks), with
the key derived from ``LIFELINE_NOTIFIER_LINK_SECRET``: whoever may acknowledge from the
shell holds the notifier's secret (the local stack writes it to its ``stack.env``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas import codec
from schemas.oncall import AckAction, AckRequest, OnCallConfig
from schemas.storage import Field, Measurement, Tag, qualified
from services.core import topics
from services.core.influx import query, quote_str
from services.core.kafka import producer_kwargs
from services.core.settings import InfluxSettings, KafkaSettings, load
from services.notifier.acks import AckSigner, cli_token_id
from services.notifier.rota import on_duty, resolve_target, schedule


def who(cfg: OnCallConfig, at: datetime, hours: float = 0, version: str | None = None
        ) -> list[dict[str, Any]]:
    """Per team: who is on duty at ``at``, who a page raised then goes to first (the
    notifier's own resolution, :func:`~services.notifier.rota.resolve_target` of the team's
    first step) and, with ``hours``, the handovers that follow. ``version`` (the file's
    digest, as the notifier's ``/health`` shows under ``config.oncall.version``) is added to
    every row: when it differs from the notifier's, the notifier runs another file."""
    out = []
    for team in cfg.teams:
        person = on_duty(team, at, cfg.zone)
        row: dict[str, Any] = {"team": team.id, "name": team.name_zh or team.name,
                               "on_duty": person,
                               "on_duty_name": cfg.person(person).name if person else None,
                               "first_page": resolve_target(cfg, team,
                                                            team.escalation[0].notify, at)}
        if version is not None:
            row["version"] = version
        if hours > 0:
            row["schedule"] = [
                {"from": sh.starts.astimezone(cfg.zone).isoformat(timespec="minutes"),
                 "to": sh.ends.astimezone(cfg.zone).isoformat(timespec="minutes"),
                 "person": sh.person}
                for sh in schedule(team, at, at + timedelta(hours=hours), cfg.zone)]
        out.append(row)
    return out


async def find_facility(influx: InfluxSettings, alarm_id: str) -> str | None:
    q = (f'SELECT "{Field.ALARM_ID}", "{Tag.FACILITY}" FROM '  # noqa: S608 — quoted literal
         f'{qualified(Measurement.ALARM_EVENT)} '
         f'WHERE "{Field.ALARM_ID}" = {quote_str(alarm_id)} LIMIT 1')
    series = await query(influx, q)
    if not series:
        return None
    cols = series[0]["columns"]
    return str(series[0]["values"][0][cols.index(Tag.FACILITY)])


def cli_signer() -> AckSigner:
    """The signer of command-line acknowledgements (SystemExit without the secret)."""
    from services.notifier.config import NotifierSettings

    secret = load(NotifierSettings).link_secret.get_secret_value()
    try:
        return AckSigner(secret)
    except ValueError as exc:
        raise SystemExit(f"{exc} (the notifier applies only signed acknowledgements)") from exc


async def send_ack(kafka: KafkaSettings, alarm_id: str, facility_id: str, by: str,
                   comment: str, action: AckAction, signer: AckSigner | None = None
                   ) -> AckRequest:
    req = (signer or cli_signer()).sign(AckRequest(
        alarm_id=alarm_id, facility_id=facility_id, action=action, by=by, comment=comment,
        via="cli", token_id=cli_token_id(), ts=datetime.now(UTC)))
    producer = AIOKafkaProducer(**producer_kwargs(kafka, "lifeline-oncall-cli"))
    try:
        await producer.start()
    except BaseException:  # an unreachable broker: close it, or it complains when collected
        await producer.stop()
        raise
    try:
        await producer.send_and_wait(topics.ACKS, codec.ACK_REQUEST.encode(req),
                                     key=facility_id.encode())
    finally:
        await producer.stop()
    return req


async def history(influx: InfluxSettings, alarm_id: str, days: int = 90) -> list[dict[str, Any]]:
    """Every audit record of the alarm, oldest first (from InfluxDB's ``oncall``)."""
    q = (f'SELECT * FROM {qualified(Measurement.ONCALL)} '  # noqa: S608 — quoted literal
         f'WHERE "{Field.ALARM_ID}" = {quote_str(alarm_id)} '
         f"AND time > now() - {int(days)}d ORDER BY time ASC")
    rows = []
    for s in await query(influx, q):
        cols = s["columns"]
        for v in s["values"]:
            rec = {c: x for c, x in zip(cols, v, strict=True) if x is not None}
            rec["time"] = datetime.fromtimestamp(rec["time"] / 1000, UTC).isoformat(
                timespec="milliseconds")
            rows.append(rec)
    return rows
