"""Grouping of one recipient's messages in an alarm storm, on a clock the caller gives.

A recipient (person and channel list) gets up to ``burst`` pages at once within
``max_window_s`` (default ``window_s``) — latency matters most for the first pages of
incidents, and separate incidents seconds apart are not held back. Beyond that the
recipient is in a storm: what
comes is collected and goes out as one message, and each message that carried a held batch
makes the next window twice as long, up to ``max_window_s`` — so a typhoon's hours of
alarms cost a duty engineer a message every few minutes, not one every 30 s. A whole
window with nothing offered ends the storm.

- News (an alarm cleared, someone else acknowledged it) never goes out on its own at once:
  it waits for the window and rides with the next message.
- A *prompt* item (a red alarm's first page) is held ``window_s`` at most, storm or not.
- Life-safety pages (``urgent``: a confined-space entry) are never held.

Pure: the notifier's delivery (services.notifier.delivery) runs it on the monotonic clock
with a timer per held batch; the paging replay of a scenario (simulators.paging) runs the
same decisions on the scenario's clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


@dataclass
class _Recipient(Generic[T]):
    sent: deque[float] = field(default_factory=deque)  # when recent messages went out
    held: list[T] = field(default_factory=list)
    due: float | None = None  # when the held batch goes out
    window: float = 0.0  # the current window (``window_s`` when calm)
    storm: bool = False  # a page had to be held: pages wait for the window too
    last_offer: float = -math.inf
    last_out: float = -math.inf  # the last message out


@dataclass(frozen=True)
class Offer(Generic[T]):
    """What to do with an offered item: ``send`` these items now, as one message (the
    offered item first, then what was held for the recipient); and, when ``due`` is set,
    schedule a flush of the recipient at that time."""

    send: list[T]
    due: float | None = None


class Grouper(Generic[T]):
    def __init__(self, policy: Callable[[], tuple[float, int, float]]) -> None:
        # ``policy`` gives (window_s, burst, max_window_s) at each use: a reload changes it.
        self.policy = policy
        self._recipients: dict[Hashable, _Recipient[T]] = {}

    def offer(self, key: Hashable, item: T, now: float, *, urgent: bool = False,
              prompt: bool = False, news: bool = False) -> Offer[T]:
        base, burst, top = self.policy()
        r = self._recipients.setdefault(key, _Recipient())
        if base <= 0 or urgent:
            return Offer([item])
        if r.window < base or r.window > top or (
                not r.held and now - max(r.last_offer, r.last_out) >= r.window):
            r.window, r.storm = base, False  # calm again (or the policy changed)
        r.last_offer = now
        while r.sent and now - r.sent[0] >= top:
            r.sent.popleft()
        if not news and not r.storm and len(r.sent) < burst:
            items, r.held, r.due = [item, *r.held], [], None
            r.sent.append(now)
            r.last_out = now
            return Offer(items)
        r.held.append(item)
        r.storm = r.storm or not news
        due = max(now, r.last_out + r.window)
        if prompt:
            due = min(due, now + base)
        if r.due is not None and r.due <= due:
            return Offer([])  # the batch already scheduled takes it
        r.due = due
        return Offer([], due)

    def flush(self, key: Hashable, now: float) -> list[T]:
        """The recipient's held batch, to go out now as one message — empty when nothing is
        held or the batch is due later (a timer that an earlier due replaced)."""
        r = self._recipients.get(key)
        if r is None or not r.held or r.due is None or now < r.due - 0.001:
            return []
        base, _burst, top = self.policy()
        items, r.held, r.due = r.held, [], None
        r.sent.append(now)
        r.last_out = now
        r.window = min(top, max(base, 2 * r.window))
        return items

    def release(self) -> list[list[T]]:
        """Every recipient's held batch, each to go out now as one message (shutdown: the
        timers that would send them fire after the worker is gone)."""
        out: list[list[T]] = []
        for r in self._recipients.values():
            if r.held:
                out.append(r.held)
                r.held, r.due = [], None
        return out

    def drop(self, keep: Callable[[T], bool]) -> list[T]:
        """Forget held items ``keep`` rejects; returns them."""
        dropped: list[T] = []
        for r in self._recipients.values():
            dropped += [x for x in r.held if not keep(x)]
            r.held = [x for x in r.held if keep(x)]
        return dropped


class _Notified(Protocol):
    kind: str
    alarm: dict[str, object]


def grouping_flags(n: _Notified) -> dict[str, bool]:
    """How a notification (services.notifier.escalation.Notification) is grouped: an entry
    page is urgent; a red alarm's page (not a repeat) is prompt; a clear or an update is
    news."""
    return {"urgent": n.kind == "entry",
            "prompt": n.kind == "page" and n.alarm.get("level") == "red",
            "news": n.kind in ("cleared", "update")}
