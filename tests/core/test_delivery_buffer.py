"""DeliveryBuffer: when a consumer stops reading (full) and resumes (half empty)."""

from __future__ import annotations

from fila._core import DeliveryBuffer


def test_stop_reading_at_capacity_resume_at_half() -> None:
    buf: DeliveryBuffer[int] = DeliveryBuffer(4)
    assert (buf.capacity, buf.low) == (4, 2)
    assert buf.push([1, 2, 3]) is False
    assert buf.push([4]) is True  # full: the driver must stop reading
    buf.paused = True  # the driver did
    assert buf.push([5]) is False  # already paused: nothing more to decide
    assert list(buf.messages) == [1, 2, 3, 4, 5]
    for expected in (1, 2):
        assert buf.messages.popleft() == expected
        assert buf.should_resume() is False  # 4, then 3 left: above the low mark
    buf.messages.popleft()
    assert len(buf.messages) == 2 and buf.should_resume() is True


def test_one_push_larger_than_capacity_stops_reading() -> None:
    buf: DeliveryBuffer[int] = DeliveryBuffer(4)
    assert buf.push(list(range(10))) is True
    assert len(buf.messages) == 10  # nothing received is ever dropped


def test_never_resume_unless_paused() -> None:
    buf: DeliveryBuffer[int] = DeliveryBuffer(4)
    buf.push([1])
    assert buf.should_resume() is False
    buf.messages.clear()
    assert buf.should_resume() is False


def test_capacity_one() -> None:
    buf: DeliveryBuffer[str] = DeliveryBuffer(1)
    assert buf.low == 0
    assert buf.push(["a"]) is True
    buf.paused = True
    assert buf.should_resume() is False
    buf.messages.popleft()
    assert buf.should_resume() is True
