"""Signed, expiring acknowledgement links (itsdangerous, HMAC-SHA256 with a server secret).

A link names the alarm, its facility, the person it was sent to and the notification it
came with; nothing in it is secret, but nobody without the server's secret can make one,
and a link older than its lifetime is refused. Replays of a used link are refused by the
notifier's state (the link's id is recorded with the acknowledgement).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

SALT = "lifeline-ack-link"


class LinkError(ValueError):
    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class AckLink:
    alarm_id: str
    facility_id: str
    person: str
    notification_id: str

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
                                    link.notification_id])
        return token

    def verify(self, token: str) -> AckLink:
        try:
            data = self._s.loads(token, max_age=int(self.max_age_s))
        except SignatureExpired as exc:
            raise LinkError("this link has expired", 410) from exc
        except BadSignature as exc:
            raise LinkError("this link is not valid", 403) from exc
        if not (isinstance(data, list) and len(data) == 4 and all(isinstance(x, str) for x in data)):
            raise LinkError("this link is not valid", 403)
        return AckLink(*data)
