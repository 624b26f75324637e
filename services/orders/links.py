"""Signed, expiring links to the order page (itsdangerous, HMAC-SHA256 with the server's
secret): a link names the order, the person it was sent to and what that person may do —
``unit`` (the owner unit's people: accept, start, report), ``desk`` (the bureau's: verify,
return, close, mark a false alarm) or ``view`` (a link sent on a shared channel: it only
shows the order). Nothing in it is secret, but nobody without the
server's secret can make one, and one older than its lifetime is refused. Unlike an
acknowledgement link it is used for several steps (accept, then report), by its one person.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from schemas.errors import LifelineError
from schemas.workorder import OrderAction

SALT = "lifeline-order-link"
Role = Literal["unit", "desk", "view"]
ROLE_ACTIONS: dict[str, frozenset[OrderAction]] = {
    # A link that went out on a shared channel (a group robot, e-mail): it shows the order,
    # it acts for nobody — whoever reads the group must not verify or close as the chief.
    "view": frozenset(),
    "unit": frozenset({OrderAction.ACCEPT, OrderAction.START, OrderAction.REPORT}),
    "desk": frozenset({OrderAction.VERIFY, OrderAction.RETURN_, OrderAction.CLOSE,
                       OrderAction.FALSE_ALARM}),
}


class OrderLinkError(LifelineError, ValueError):
    def __init__(self, text: str, status: int) -> None:
        super().__init__(text)
        self.status = status


@dataclass(frozen=True)
class OrderLink:
    order_id: str
    person: str
    role: Role


class OrderSigner:
    def __init__(self, secret: str, max_age_s: float) -> None:
        if len(secret) < 16:
            raise ValueError("LIFELINE_ORDERS_LINK_SECRET needs at least 16 characters "
                             "(`lifeline stack up` makes one for the local stack)")
        self._s = URLSafeTimedSerializer(secret, salt=SALT,
                                         signer_kwargs={"digest_method": hashlib.sha256})
        self.max_age_s = max_age_s

    def sign(self, link: OrderLink) -> str:
        token: str = self._s.dumps([link.order_id, link.person, link.role])
        return token

    def verify(self, token: str) -> OrderLink:
        try:
            data = self._s.loads(token, max_age=int(self.max_age_s))
        except SignatureExpired as exc:
            raise OrderLinkError("this link has expired 链接已过期", 410) from exc
        except BadSignature as exc:
            raise OrderLinkError("this link is not valid 链接无效", 403) from exc
        if (not isinstance(data, list) or len(data) != 3 or not all(isinstance(x, str) for x in data)
                or data[2] not in ROLE_ACTIONS):
            raise OrderLinkError("this link is not valid 链接无效", 403)
        return OrderLink(data[0], data[1], data[2])
