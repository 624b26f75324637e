"""One-time codes that bind an acknowledgement to a person.

A link posted in a group chat acts for whoever holds it. Before such a link acknowledges,
the page asks who is acting (one of the people of the alarm's team), sends a 6-digit code
to that person's own phone and accepts the acknowledgement only with the right code.

Kept in this notifier's memory, keyed by a random challenge id (the page's hidden field):
the code itself is never stored, only ``HMAC(process key, challenge|code)``, and it never
appears in logs. A code lives ``ttl_s``, allows ``attempts`` wrong entries, a new code for
the same link and person only after ``resend_s``, and at most ``max_per_link`` codes per
link (an SMS costs money and a link in a group must not become a way to flood a phone).
Several notifier workers behind one address need sticky sessions (the code is checked by
the worker that sent it) or a shared store with expiry (e.g. Redis) in place of this one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from services.notifier.errors import CodeRefused

MAX_CHALLENGES = 10_000  # outstanding codes per worker (memory bound)


class CodeVerdict(StrEnum):
    OK = "ok"
    WRONG = "wrong"  # attempts left
    EXHAUSTED = "exhausted"  # too many wrong codes: this code is void
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # no such challenge (another worker, a restart, or already used)


@dataclass
class Challenge:
    token_id: str
    person: str
    digest: bytes
    expires: float
    attempts_left: int


@dataclass(frozen=True)
class CheckResult:
    verdict: CodeVerdict
    person: str | None = None
    attempts_left: int = 0


class CodeStore:
    def __init__(self, ttl_s: float = 300.0, attempts: int = 5, resend_s: float = 30.0,
                 max_per_link: int = 5) -> None:
        self.ttl_s = ttl_s
        self.attempts = attempts
        self.resend_s = resend_s
        self.max_per_link = max_per_link
        self._key = secrets.token_bytes(32)
        self._challenges: dict[str, Challenge] = {}
        self._last_sent: dict[tuple[str, str], float] = {}  # (link, person) -> when
        self._issued: dict[str, tuple[int, float]] = {}  # link -> (codes, last expiry)

    def _digest(self, challenge: str, code: str) -> bytes:
        return hmac.new(self._key, f"{challenge}|{code}".encode(), hashlib.sha256).digest()

    def _expire(self, now: float) -> None:
        for cid in [c for c, ch in self._challenges.items() if ch.expires <= now]:
            del self._challenges[cid]
        for pair in [p for p, t in self._last_sent.items() if now - t >= self.resend_s]:
            del self._last_sent[pair]
        # A link's count is kept while any of its codes could still be used, and a day
        # after (the link itself expires within a day by default).
        for link in [k for k, (_, until) in self._issued.items() if now > until + 86_400]:
            del self._issued[link]

    def issue(self, token_id: str, person: str, now: float) -> tuple[str, str]:
        """A new code for ``person`` acting on the link ``token_id``: (challenge id,
        code). Replaces that person's earlier code for the link. Raises
        :class:`CodeRefused` when too soon, too many, or the store is full."""
        self._expire(now)
        since = self._last_sent.get((token_id, person))
        if since is not None:
            wait = self.resend_s - (now - since)
            raise CodeRefused(f"a code was sent {now - since:.0f} s ago; a new one in "
                              f"{wait:.0f} s", 429)
        count, _ = self._issued.get(token_id, (0, 0.0))
        if count >= self.max_per_link:
            raise CodeRefused("too many codes were requested for this link", 429)
        if len(self._challenges) >= MAX_CHALLENGES:
            raise CodeRefused("too many codes are outstanding; try again in a few minutes", 503)
        for cid in [c for c, ch in self._challenges.items()
                    if ch.token_id == token_id and ch.person == person]:
            del self._challenges[cid]
        challenge = secrets.token_urlsafe(18)
        code = f"{secrets.randbelow(1_000_000):06d}"
        self._challenges[challenge] = Challenge(token_id, person, self._digest(challenge, code),
                                                now + self.ttl_s, self.attempts)
        self._last_sent[(token_id, person)] = now
        self._issued[token_id] = (count + 1, now + self.ttl_s)
        return challenge, code

    def withdraw(self, challenge: str, token_id: str, person: str) -> None:
        """The code could not be sent: forget it, and let the person ask again at once."""
        self._challenges.pop(challenge, None)
        self._last_sent.pop((token_id, person), None)
        count, until = self._issued.get(token_id, (1, 0.0))
        self._issued[token_id] = (max(0, count - 1), until)

    def check(self, challenge: str, token_id: str, code: str, now: float) -> CheckResult:
        """Is ``code`` the code of ``challenge`` for this link? The right code uses the
        challenge up; a wrong one costs an attempt."""
        ch = self._challenges.get(challenge)
        if ch is None or ch.token_id != token_id:
            return CheckResult(CodeVerdict.UNKNOWN)
        if ch.expires <= now:
            del self._challenges[challenge]
            return CheckResult(CodeVerdict.EXPIRED, ch.person)
        if hmac.compare_digest(ch.digest, self._digest(challenge, code.strip())):
            del self._challenges[challenge]
            return CheckResult(CodeVerdict.OK, ch.person)
        ch.attempts_left -= 1
        if ch.attempts_left <= 0:
            del self._challenges[challenge]
            return CheckResult(CodeVerdict.EXHAUSTED, ch.person)
        return CheckResult(CodeVerdict.WRONG, ch.person, ch.attempts_left)

    def person_of(self, challenge: str, token_id: str) -> str | None:
        ch = self._challenges.get(challenge)
        return ch.person if ch is not None and ch.token_id == token_id else None

    def __len__(self) -> int:
        return len(self._challenges)
