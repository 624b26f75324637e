"""The storm grouping of one recipient's messages (services.notifier.grouping), on a clock
the test gives: what goes out at once, what is held and when it goes, how the window grows
in a storm and when the storm ends."""

from __future__ import annotations

from itertools import pairwise

import pytest

from schemas.oncall import Grouping
from services.notifier.grouping import Grouper

pytestmark = pytest.mark.unit
KEY = ("wang.lei", ("sms",))


def grouper(window: float = 30.0, burst: int = 3, top: float | None = 300.0) -> Grouper[str]:
    return Grouper(Grouping(window_s=window, burst=burst, max_window_s=top).policy)


def test_a_burst_goes_at_once_and_the_rest_waits_for_the_window() -> None:
    g = grouper()
    assert [g.offer(KEY, f"p{i}", 10.0 + i).send for i in range(3)] == [["p0"], ["p1"], ["p2"]]
    held = g.offer(KEY, "p3", 14.0)
    assert held.send == [] and held.due == pytest.approx(12.0 + 30.0)
    assert g.offer(KEY, "p4", 15.0).due is None  # the scheduled batch takes it
    assert g.flush(KEY, 30.0) == []  # not due yet: a timer that fired early changes nothing
    assert g.flush(KEY, 42.0) == ["p3", "p4"]
    assert g.flush(KEY, 42.0) == []


def test_in_a_storm_each_batch_doubles_the_window_up_to_the_longest() -> None:
    g = grouper()
    for i in range(3):
        g.offer(KEY, f"p{i}", float(i))
    t, dues = 3.0, []
    for i in range(7):
        offer = g.offer(KEY, f"s{i}", t)
        assert offer.send == [] and offer.due is not None
        dues.append(offer.due)
        assert g.flush(KEY, offer.due) == [f"s{i}"]
        t = offer.due + 1.0  # the next page comes a second after each batch
    gaps = [b - a for a, b in pairwise(dues)]
    assert gaps == [60.0, 120.0, 240.0, 300.0, 300.0, 300.0]


def test_a_quiet_window_ends_the_storm() -> None:
    g = grouper()
    for i in range(3):
        g.offer(KEY, f"p{i}", float(i))
    offer = g.offer(KEY, "s", 3.0)
    assert offer.due is not None and g.flush(KEY, offer.due) == ["s"]  # window now 60 s
    # Nothing for longer than the window and the burst's horizon: at once again.
    assert g.offer(KEY, "later", offer.due + 301.0).send == ["later"]


def test_news_never_goes_alone_at_once_and_rides_with_the_next_page() -> None:
    g = grouper()
    news = g.offer(KEY, "cleared", 0.0, news=True)
    assert news.send == [] and news.due == pytest.approx(0.0)  # nothing sent lately: now
    g2 = grouper()
    assert g2.offer(KEY, "p", 0.0).send == ["p"]
    news = g2.offer(KEY, "cleared", 1.0, news=True)
    assert news.send == [] and news.due == pytest.approx(30.0)
    assert g2.offer(KEY, "p2", 2.0).send == ["p2", "cleared"]  # the page first
    assert g2.flush(KEY, 30.0) == []  # the batch went with the page


def test_a_red_page_is_held_one_window_at_most_and_an_entry_never() -> None:
    g = grouper()
    for i in range(3):
        g.offer(KEY, f"p{i}", float(i))
    first = g.offer(KEY, "s", 3.0)
    assert first.due is not None and g.flush(KEY, first.due) == ["s"]  # window 60 s
    slow = g.offer(KEY, "yellow", first.due + 1.0)
    assert slow.due == pytest.approx(first.due + 60.0)
    red = g.offer(KEY, "red", first.due + 2.0, prompt=True)
    assert red.due == pytest.approx(first.due + 32.0)  # earlier than the batch's
    assert g.flush(KEY, first.due + 32.0) == ["yellow", "red"]
    assert g.flush(KEY, first.due + 60.0) == []  # the replaced timer finds nothing
    assert g.offer(KEY, "entry", first.due + 33.0, urgent=True).send == ["entry"]


def test_without_a_longest_window_the_window_stays_and_zero_means_no_grouping() -> None:
    g = grouper(top=None)
    for i in range(3):
        g.offer(KEY, f"p{i}", float(i))
    a = g.offer(KEY, "a", 3.0)
    assert a.due is not None and g.flush(KEY, a.due) == ["a"]
    b = g.offer(KEY, "b", a.due + 1.0)
    assert b.due == pytest.approx(a.due + 30.0)  # the window did not grow
    off = grouper(window=0.0, top=None)
    assert [off.offer(KEY, str(i), 0.0).send for i in range(5)] == [[str(i)] for i in range(5)]


def test_dropping_forgets_held_items_and_a_longest_window_below_the_window_is_refused() -> None:
    g = grouper()
    for i in range(3):
        g.offer(KEY, f"p{i}", float(i))
    g.offer(KEY, "keep", 3.0)
    g.offer(KEY, "gone", 4.0)
    assert g.drop(lambda x: x != "gone") == ["gone"]
    assert g.flush(KEY, 40.0) == ["keep"]
    with pytest.raises(ValueError, match="shorter than window_s"):
        Grouping(window_s=60, max_window_s=30)


def test_release_gives_every_held_batch_and_holds_nothing_after() -> None:
    g = grouper(burst=1)
    assert g.offer(KEY, "a", 0.0).send == ["a"]
    assert g.offer(KEY, "b", 1.0).send == [] and g.offer(KEY, "c", 2.0).send == []
    assert g.offer("other", "x", 0.0).send == ["x"]
    assert g.offer("other", "y", 0.5).send == []
    assert sorted(g.release()) == [["b", "c"], ["y"]]
    assert g.release() == [] and g.flush(KEY, 1e9) == []  # the timer that fires later
