"""On-call: who is called for which alarm, how, and what happened.

Three contracts live here:

- :class:`OnCallConfig` — a YAML file (``LIFELINE_ONCALL``) validated by these models:
  people and their contacts, channels, teams with rotas and escalation chains, and the
  routes from alarms to teams, and the ``urgent_channels`` of life-safety pages (an alarm
  during a confined-space entry pages the crew leader, who is not in the file, by SMS).
  Like the registry, it is data with provenance, not code.
- :class:`AckRequest` — the value of Kafka topic ``lifeline.acks`` (key = facility id):
  someone acknowledged or resolved an alarm, from the acknowledgement page or the CLI.
  Every acknowledgement is signed (``signature``, HMAC-SHA256 over all its other fields,
  services.notifier.acks); the notifier applies only those whose signature verifies.
- :class:`OnCallRecord` — the value of ``lifeline.oncall`` (key = facility id): the audit
  trail. Every notification, delivery attempt, acknowledgement and escalation step.

Rotas follow the layered model of the on-call tools operators know: a team has one or
more layers; a layer hands over between its members every ``shift_hours`` from its
``handover`` instant and may be restricted to a daily local-time window (a night layer
``20:00``–``08:00`` crosses midnight); where several layers are active, the later one
wins; an override (holiday cover, a swap) beats every layer.
"""

from __future__ import annotations

import uuid
from datetime import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from schemas.common import Contract, Identifier, Timestamp, TimeZoneName, load_yaml_model
from schemas.errors import LifelineError
from schemas.kinds import AlarmLevel, FacilityKind

_NAMESPACE = uuid.UUID("2c7d0c5e-6a7f-4a53-9d1b-0c0b9d6f3a11")


class OnCallError(LifelineError, ValueError):
    """The on-call file is missing, not YAML, or violates the schema."""


Category = Literal["facility", "sensor", "gateway", "district"]
ALL_CATEGORIES: tuple[Category, ...] = ("facility", "sensor", "gateway", "district")


class ChannelType(StrEnum):
    WEBHOOK = "webhook"  # generic JSON, HMAC-SHA256 signed
    DINGTALK = "dingtalk"  # DingTalk custom group robot (optionally in signed mode)
    WECOM = "wecom"  # WeCom (企业微信) group robot
    EMAIL = "email"  # SMTP
    SMS = "sms"  # an SMS gateway over HTTP (JSON POST)


class Channel(Contract):
    """One way of reaching people. Secrets are never in this file: ``secret_env`` names the
    environment variable that holds the channel's secret (robot token/key, HMAC secret,
    SMTP password, SMS API key)."""

    id: Identifier
    type: ChannelType
    url: str | None = Field(default=None, description="Endpoint (webhook, robots, SMS gateway). "
                            "Robots: the URL without the access token / key.")
    secret_env: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$",
                                   description="Environment variable holding the secret.")
    token_env: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$",
                                  description="Robots: variable holding the access token "
                                              "(DingTalk) or key (WeCom); SMS: API key.")
    # e-mail
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_ca_file: str | None = Field(default=None, description="PEM file of the CA that "
                                     "signed the SMTP server's certificate (a private CA); "
                                     "default: the system's CAs. Certificates are always "
                                     "verified.")
    sender: str | None = None
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    personal: bool | None = Field(default=None, description=(
        "Messages on this channel reach the addressee alone (default: true for sms, false "
        "otherwise; group robots cannot be personal). An acknowledgement link sent on a "
        "step whose channels are not all personal asks for a one-time code sent to the "
        "acting person's own phone."))

    @property
    def is_personal(self) -> bool:
        return self.personal if self.personal is not None else self.type is ChannelType.SMS

    @model_validator(mode="after")
    def _check(self) -> Channel:
        if self.personal and self.type in (ChannelType.DINGTALK, ChannelType.WECOM):
            raise ValueError(f"channel {self.id}: a group robot cannot be personal (everyone "
                             "in the group reads its messages)")
        if self.type is ChannelType.EMAIL:
            if not self.smtp_host or not self.sender:
                raise ValueError(f"channel {self.id}: e-mail needs smtp_host and sender")
        elif not self.url:
            raise ValueError(f"channel {self.id}: a {self.type} channel needs url")
        if self.type in (ChannelType.DINGTALK, ChannelType.WECOM) and not self.token_env:
            raise ValueError(f"channel {self.id}: a robot needs token_env")
        return self


class Person(Contract):
    id: Identifier
    name: str
    phone: str | None = Field(default=None, pattern=r"^\+?[0-9]{5,15}$")
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    wecom_user: str | None = None


class RotaLayer(Contract):
    """Members take turns of ``shift_hours``, the first from ``handover`` on."""

    name: str
    members: Annotated[list[Identifier], Field(min_length=1)]
    handover: Timestamp = Field(description="An instant at which members[0]'s turn starts.")
    shift_hours: Annotated[float, Field(gt=0, le=24 * 28)] = 24.0
    daily_from: time | None = Field(default=None, description="Local time the layer applies "
                                    "from each day (with daily_to; may cross midnight).")
    daily_to: time | None = None

    @model_validator(mode="after")
    def _check(self) -> RotaLayer:
        if (self.daily_from is None) != (self.daily_to is None):
            raise ValueError(f"layer {self.name}: daily_from and daily_to go together")
        return self


class Override(Contract):
    person: Identifier
    starts: Timestamp
    ends: Timestamp
    reason: str = ""

    @model_validator(mode="after")
    def _check(self) -> Override:
        if self.ends <= self.starts:
            raise ValueError("an override needs starts before ends")
        return self


class Step(Contract):
    """One step of an escalation chain.

    ``notify``: ``on_duty`` (the team's person on duty), ``person:ID``, or ``team:ID``
    (that team's person on duty). The message goes out on the first of ``channels`` that
    delivers (the others are fall-backs). Unacknowledged after ``wait_s``, the step is
    repeated ``repeat`` times, then the chain moves on; the last step repeats every
    ``wait_s`` until someone acknowledges — nobody is left unpaged.
    """

    notify: Annotated[str, Field(pattern=r"^(on_duty|person:[A-Za-z0-9_.\-]+|team:[A-Za-z0-9_.\-]+)$")]
    channels: Annotated[list[Identifier], Field(min_length=1)]
    wait_s: Annotated[float, Field(gt=0, le=86400)] = 600.0
    repeat: Annotated[int, Field(ge=0, le=10)] = 0


class Team(Contract):
    id: Identifier
    name: str
    name_zh: str | None = None
    layers: Annotated[list[RotaLayer], Field(min_length=1)]
    overrides: list[Override] = Field(default_factory=list)
    escalation: Annotated[list[Step], Field(min_length=1)]
    start_step: dict[AlarmLevel, int] = Field(
        default_factory=dict, description="A level may start the chain at a later step "
                                          "(0-based), e.g. red: 1 pages the section chief at once.")

    def first_step(self, level: AlarmLevel | None) -> int:
        if level is None:
            return 0
        return min(self.start_step.get(level, 0), len(self.escalation) - 1)


class Match(Contract):
    """All given fields must match (an empty match matches everything)."""

    district: list[str] | None = None
    kind: list[FacilityKind] | None = None
    facility: list[Identifier] | None = None
    category: list[Category] | None = None
    min_level: AlarmLevel | None = None


class Route(Contract):
    match: Match = Field(default_factory=Match)
    team: Identifier
    continue_: bool = Field(default=False, alias="continue",
                            description="Also try the routes after this one.")


class Grouping(Contract):
    """Alarm storms: a recipient gets at most ``burst`` messages at once per ``window_s``;
    what comes after waits for the window and goes out as one message listing it all. While
    the storm lasts each window that carried something is twice the one before, up to
    ``max_window_s``; a window with nothing held ends the storm (services.notifier.grouping)."""

    window_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=30.0, description="The grouping window (0: no grouping).")
    burst: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3, description="Messages a recipient may get at once within one window "
                               "(separate incidents seconds apart are not held back).")
    max_window_s: Annotated[float, Field(ge=0, le=3600)] | None = Field(
        default=None, description="The longest window in a storm (default: ``window_s``, "
                                  "the window does not grow).")
    max_listed: Annotated[int, Field(ge=1, le=500)] = 20

    @model_validator(mode="after")
    def _windows(self) -> Grouping:
        if self.max_window_s is not None and self.max_window_s < self.window_s:
            raise ValueError(f"max_window_s ({self.max_window_s:g}) is shorter than "
                             f"window_s ({self.window_s:g})")
        return self

    def policy(self) -> tuple[float, int, float]:
        """(window_s, burst, max_window_s) for services.notifier.grouping.Grouper."""
        return self.window_s, self.burst, (self.window_s if self.max_window_s is None
                                           else self.max_window_s)


class Unit(Contract):
    """An owner unit (权属单位) that receives work orders (issue 19; decision 0022).
    ``name`` is the registry's ``owner_unit`` of its facilities, exactly."""

    name: Annotated[str, Field(min_length=1, max_length=80)]
    contact: Identifier = Field(description="The person an order is dispatched to (accepts, "
                                            "reports what was done).")
    manager: Identifier = Field(description="The unit's manager: the first 督办 (escalation) "
                                            "of an overdue order.")
    channels: Annotated[list[Identifier], Field(min_length=1)] = Field(
        description="How the unit's people are reached, first that delivers.")


class OrderDesk(Contract):
    """The bureau's side of work orders: who is escalated to past the unit's manager."""

    section_chief: Identifier = Field(description="The second 督办: the bureau's section chief.")
    channels: Annotated[list[Identifier], Field(min_length=1)]
    escalation_step_hours: Annotated[float, Field(gt=0, le=24 * 7)] = Field(
        default=2.0, description="Hours past the deadline before the section chief is "
                                 "escalated to (the manager is at the deadline).")


class OnCallConfig(Contract):
    version: int = 1
    timezone: TimeZoneName = "Asia/Shanghai"
    people: Annotated[list[Person], Field(min_length=1)]
    channels: Annotated[list[Channel], Field(min_length=1)]
    teams: Annotated[list[Team], Field(min_length=1)]
    routes: Annotated[list[Route], Field(min_length=1)]
    grouping: Grouping = Field(default_factory=Grouping)
    page_categories: list[Category] = Field(
        default_factory=lambda: list(ALL_CATEGORIES),
        description="Alarm categories that page anyone (the others are only recorded).")
    urgent_channels: list[Identifier] = Field(
        default_factory=list,
        description="Life-safety pages (an alarm during a confined-space entry, 井下作业): the "
                    "channels to try at once, most urgent first. Empty: each team's first "
                    "escalation step's channels. The crew leader, who is not in this file, is "
                    "reached only on the sms channels among them.")
    code_channel: Identifier | None = Field(
        default=None,
        description="The sms channel that sends one-time codes to confirm who acknowledges "
                    "from a link posted in a shared channel (default: the first sms channel).")
    units: list[Unit] = Field(default_factory=list, description=(
        "Owner units that receive work orders, by the registry's owner_unit name."))
    orders: OrderDesk | None = Field(default=None, description=(
        "The bureau's work-order desk (the section chief escalated to)."))

    @model_validator(mode="after")
    def _refs(self) -> OnCallConfig:
        people = {p.id for p in self.people}
        channels = {c.id for c in self.channels}
        teams = {t.id for t in self.teams}
        for name, ids in (("person", [p.id for p in self.people]),
                          ("channel", [c.id for c in self.channels]),
                          ("team", [t.id for t in self.teams])):
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise ValueError(f"duplicate {name} ids: {sorted(dup)}")
        for t in self.teams:
            for layer in t.layers:
                for m in layer.members:
                    if m not in people:
                        raise ValueError(f"team {t.id}, layer {layer.name}: unknown person {m}")
            for o in t.overrides:
                if o.person not in people:
                    raise ValueError(f"team {t.id}: override for unknown person {o.person}")
            for i, s in enumerate(t.escalation):
                for c in s.channels:
                    if c not in channels:
                        raise ValueError(f"team {t.id}, step {i}: unknown channel {c}")
                what, _, ref = s.notify.partition(":")
                if what == "person" and ref not in people:
                    raise ValueError(f"team {t.id}, step {i}: unknown person {ref}")
                if what == "team" and ref not in teams:
                    raise ValueError(f"team {t.id}, step {i}: unknown team {ref}")
            for level, step in t.start_step.items():
                if not 0 <= step < len(t.escalation):
                    raise ValueError(f"team {t.id}: start_step for {level} is {step}, the chain "
                                     f"has {len(t.escalation)} steps")
        for r in self.routes:
            if r.team not in teams:
                raise ValueError(f"route to unknown team {r.team}")
        for c in self.urgent_channels:
            if c not in channels:
                raise ValueError(f"urgent_channels: unknown channel {c}")
        if len(set(self.urgent_channels)) != len(self.urgent_channels):
            raise ValueError("urgent_channels: a channel is listed twice")
        names = [u.name for u in self.units]
        if len(set(names)) != len(names):
            raise ValueError("units: a unit is listed twice")
        for u in self.units:
            for ref in (u.contact, u.manager):
                if ref not in people:
                    raise ValueError(f"unit {u.name}: unknown person {ref}")
            for c in u.channels:
                if c not in channels:
                    raise ValueError(f"unit {u.name}: unknown channel {c}")
        if self.orders is not None:
            if self.orders.section_chief not in people:
                raise ValueError(f"orders: unknown person {self.orders.section_chief}")
            for c in self.orders.channels:
                if c not in channels:
                    raise ValueError(f"orders: unknown channel {c}")
        if self.code_channel is not None:
            if self.code_channel not in channels:
                raise ValueError(f"code_channel: unknown channel {self.code_channel}")
            if self.channel(self.code_channel).type is not ChannelType.SMS:
                raise ValueError(f"code_channel: {self.code_channel} is not an sms channel")
        return self

    def code_sms_channel(self) -> Channel | None:
        """The sms channel one-time codes go out on (None: the file has no sms channel)."""
        if self.code_channel is not None:
            return self.channel(self.code_channel)
        return next((c for c in self.channels if c.type is ChannelType.SMS), None)

    def step_is_personal(self, channel_ids: list[str]) -> bool:
        """Whether a message on these channels reaches its addressee alone (then its
        acknowledgement link needs no one-time code)."""
        by_id = {c.id: c for c in self.channels}
        return bool(channel_ids) and all(c in by_id and by_id[c].is_personal
                                         for c in channel_ids)

    def team_people(self, team_id: str) -> list[str]:
        """Who may act for a team: its rota members, overrides, the people its escalation
        names and the members of the teams it escalates to (first appearance first)."""
        team = next((t for t in self.teams if t.id == team_id), None)
        if team is None:
            return []
        out = [m for layer in team.layers for m in layer.members]
        out += [o.person for o in team.overrides]
        for step in team.escalation:
            what, _, ref = step.notify.partition(":")
            if what == "person":
                out.append(ref)
            elif what == "team" and ref != team_id:
                other = self.team(ref)
                out += [m for layer in other.layers for m in layer.members]
                out += [o.person for o in other.overrides]
        return list(dict.fromkeys(out))

    def phone_channels(self, ids: list[str]) -> list[str]:
        """The channels among ``ids`` that address a phone number (an ad-hoc crew leader)."""
        return [c for c in ids if self.channel(c).type is ChannelType.SMS]

    def warnings(self) -> list[str]:
        """What is valid but unsafe: life-safety pages that could not reach anyone's phone.
        (Not an error: the demo replaces every channel by a webhook, and a notifier that
        refuses to start pages nobody.)"""
        out: list[str] = []
        if self.urgent_channels:
            if not self.phone_channels(self.urgent_channels):
                out.append("urgent_channels has no sms channel: the crew leader of a "
                           "confined-space entry cannot be paged")
        else:
            first = [c for t in self.teams for c in t.escalation[0].channels]
            if not self.phone_channels(first):
                out.append("urgent_channels is empty and no team's first step has an sms "
                           "channel: the crew leader of a confined-space entry cannot be paged")
        shared = sorted({t.id for t in self.teams for s in t.escalation
                         if not self.step_is_personal(s.channels)})
        if shared and self.code_sms_channel() is None:
            out.append(f"teams {', '.join(shared)} page on shared channels and there is no sms "
                       "channel for one-time codes: their links cannot acknowledge (use "
                       "`lifeline oncall ack`)")
        phoneless = sorted(p.id for p in self.people if not p.phone)
        if shared and phoneless:
            out.append(f"{', '.join(phoneless)} have no phone: they cannot confirm an "
                       "acknowledgement from a link posted in a shared channel")
        return out

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def person(self, pid: str) -> Person:
        return next(p for p in self.people if p.id == pid)

    def unit(self, name: str) -> Unit | None:
        """The owner unit of that registry ``owner_unit`` name (None: not in this file)."""
        return next((u for u in self.units if u.name == name), None)

    def team(self, tid: str) -> Team:
        return next(t for t in self.teams if t.id == tid)

    def channel(self, cid: str) -> Channel:
        return next(c for c in self.channels if c.id == cid)


def load_oncall(path: str | Path) -> OnCallConfig:
    return load_yaml_model(path, OnCallConfig, OnCallError, "on-call file")


# ---------------------------------------------------------------- messages on Kafka


class AckAction(StrEnum):
    ACKNOWLEDGE = "acknowledge"  # "I am on it": the escalation stops
    RESOLVE = "resolve"  # "handled": the escalation stops and the alarm shows as handled
    # Either way, a worse level afterwards re-opens the alarm and pages again.


SecondFactor = Literal["sms"]


class AckRequest(Contract):
    """Someone answered. Key on ``lifeline.acks``: the facility id.

    ``signature`` covers every other field (services.notifier.acks: HMAC-SHA256 with a key
    derived from the notifier's link secret); an unsigned, forged or altered record is
    recorded as ``ignored`` and changes nothing."""

    alarm_id: Annotated[str, Field(min_length=1, max_length=100)]
    facility_id: Identifier
    action: AckAction = AckAction.ACKNOWLEDGE
    by: Annotated[str, Field(min_length=1, max_length=100)]
    comment: Annotated[str, Field(max_length=2000)] = ""
    via: Literal["link", "cli", "api"] = "link"
    token_id: str | None = Field(default=None, max_length=100, description=(
        "The link's id, or a random id of a command-line acknowledgement: a record whose "
        "id was used before in the episode is refused (replays)."))
    addressee: str | None = Field(default=None, max_length=100, description=(
        "Links: the person the link was sent to (``by`` may be a colleague who proved who "
        "they are with a one-time code)."))
    second_factor: SecondFactor | None = Field(default=None, description=(
        "How ``by`` was confirmed: ``sms`` — a one-time code sent to their own phone was "
        "entered on the page; null — not asked (a link sent only to the person's own "
        "phone, or the command line)."))
    ts: Timestamp
    signature: str | None = Field(default=None, max_length=200, description=(
        "v1=<hex HMAC-SHA256> over the canonical JSON of every other field."))


class RecordType(StrEnum):
    NOTIFICATION = "notification"  # decided: who, which step, which alarms
    ATTEMPT = "attempt"  # one try on one channel, with its outcome
    DELIVERED = "delivered"  # the notification reached a channel
    FAILED = "failed"  # every channel of the step failed
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    ESCALATED = "escalated"  # moved to the next step (or repeated the step)
    REOPENED = "reopened"  # a worse level re-opened an acknowledged or resolved alarm
    STOPPED = "stopped"  # escalation over: acknowledged, resolved or cleared
    IGNORED = "ignored"  # an ack that changed nothing (duplicate, replayed, unknown alarm, forged)
    UNROUTED = "unrouted"  # no route matched: nobody paged (a health warning while active)


class OnCallRecord(Contract):
    """One line of the audit trail. Key on ``lifeline.oncall``: the facility id."""

    record_id: str
    type: RecordType
    ts: Timestamp = Field(description="Wall-clock time of the record.")
    alarm_id: str
    facility_id: Identifier
    notification_id: str | None = None
    sensor: str | None = Field(default=None, description="The alarm's sensor (or facility).")
    rule: str | None = None
    category: Category | None = None
    facility_kind: FacilityKind | None = None
    kind: Literal["page", "repeat", "cleared", "update", "entry"] | None = None
    team: str | None = None
    step: int | None = None
    repeat: int | None = None
    person: str | None = Field(default=None, description="A person id of the on-call file, "
                               "or crew:<phone> for the crew leader of a confined-space entry.")
    channel: str | None = Field(default=None, description="Deliveries: the channel id. "
                                "Acknowledgements: how it came (link, link+sms-code, cli).")
    level: AlarmLevel | None = None
    ok: bool | None = None
    detail: str = ""
    state_ts: Timestamp | None = Field(default=None, description="Acks: the time at which the "
                                       "acknowledgement is written beside the alarm's state.")


def notification_id_for(alarm_id: str, kind: str, step: int, repeat: int) -> str:
    """Deterministic: the same episode, step and repeat always give the same id."""
    return str(uuid.uuid5(_NAMESPACE, f"{alarm_id}|{kind}|{step}|{repeat}"))


def record_id_for(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join(str(p) for p in parts)))

