"""Signed, expiring acknowledgement links (itsdangerous, HMAC-SHA256 with a server secret).

A link names the alarm, its facility, the person it was sent to, the notification it came
with, the team whose chain sent it, and whether it went to a shared channel; nothing in it
is secret, but nobody without the server's secret can make one, and a link older than its
lifetime is refused. Replays of a used link are refused by the notifier's state (the link's
id is recorded with the acknowledgement).

A link sent on a step whose channels are not all personal (a DingTalk or WeCom group, a
webhook, e-mail) is *shared*: whoever opens it must say who they are and enter a one-time
code sent to their own phone before it acknowledges (services.notifier.ackpage). Links
made before that existed (four fields) count as shared.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from services.notifier.errors import LinkError

SALT = "lifeline-ack-link"


@dataclass(frozen=True)
class AckLink:
    alarm_id: str
    facility_id: str
    person: str
    notification_id: str
    team: str = ""
    shared: bool = True  # False only when every channel of the step reaches the person alone

    @property
    def token_id(self) -> str:
        """A short id of the link (recorded when it is used; replays are refused)."""
        return hashlib.sha256(f"{self.notification_id}|{self.person}".encode()).hexdigest()[:24]


class Signer:
    def __init__(self, secret: str, max_age_s: float) -> None:
        if len(secret) < 16:
            raise ValueError("the acknowledgement link secret needs at least 16 characters")
        self._s = URLSafeTimedSerializer(secret, salt=SALT, signer_kwargs={"digest_method": hashlib.sha256})
        self.max_age_s = max_age_s

    def sign(self, link: AckLink) -> str:
        token: str = self._s.dumps([link.alarm_id, link.facility_id, link.person,
                                    link.notification_id, link.team, int(link.shared)])
        return token

    def verify(self, token: str) -> AckLink:
        try:
            data = self._s.loads(token, max_age=int(self.max_age_s))
        except SignatureExpired as exc:
            raise LinkError("this link has expired", 410) from exc
        except BadSignature as exc:
            raise LinkError("this link is not valid", 403) from exc
        if not isinstance(data, list):
            raise LinkError("this link is not valid", 403)
        if len(data) == 4 and all(isinstance(x, str) for x in data):
            return AckLink(*data)  # a link of an earlier notifier: shared
        if (len(data) == 6 and all(isinstance(x, str) for x in data[:5])
                and data[5] in (0, 1) and not isinstance(data[5], bool)):
            return AckLink(data[0], data[1], data[2], data[3], data[4], bool(data[5]))
        raise LinkError("this link is not valid", 403)
