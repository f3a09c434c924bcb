"""The SRT buffers and loss list: ranges, rings, and sequence numbers that wrap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ghostream.srt.buffers import LossList, ReceiveBuffer, SendBuffer, unwrap
from ghostream.srt.packet import SEQ_MASK


def test_unwrap_continues_across_the_31_bit_wrap() -> None:
    near = SEQ_MASK - 5  # extended numbers start at the wire value
    assert unwrap(SEQ_MASK, near) == SEQ_MASK
    assert unwrap(0, near) == SEQ_MASK + 1
    assert unwrap(10, near) == SEQ_MASK + 11
    # A retransmission from before the wrap, seen after it.
    assert unwrap(SEQ_MASK - 100, SEQ_MASK + 50) == SEQ_MASK - 100


def test_a_burst_is_one_range_and_filling_it_splits_it() -> None:
    loss = LossList()
    loss.append(100, 1099)
    assert list(loss.ranges()) == [(100, 1099)]
    assert len(loss) == 1000
    assert loss.remove(500)
    assert not loss.remove(500)
    assert list(loss.ranges()) == [(100, 499), (501, 1099)]
    assert loss.remove(100) and loss.remove(1099)
    assert list(loss.ranges()) == [(101, 499), (501, 1098)]
    # A gap right after the last one merges with it.
    loss.append(1099, 1200)
    assert list(loss.ranges()) == [(101, 499), (501, 1200)]
    assert len(loss) == 1000 - 3 + 102


def test_delivery_and_drop_requests_cut_the_loss_list() -> None:
    loss = LossList()
    for first in range(0, 100, 10):
        loss.append(first, first + 4)
    assert loss.remove_range(12, 31) == 3 + 5 + 2
    assert list(loss.ranges())[:3] == [(0, 4), (10, 11), (32, 34)]
    loss.remove_below(33)
    assert loss.first == 33
    assert loss.range_at(34) == (33, 34)
    assert loss.range_at(35) is None
    assert len(loss) == sum(b - a + 1 for a, b in loss.ranges())


@given(
    gaps=st.lists(st.tuples(st.integers(0, 20), st.integers(1, 30)), min_size=1, max_size=20),
    operations=st.lists(
        st.tuples(st.sampled_from(["remove", "range", "below"]), st.integers(0, 1000)),
        max_size=40,
    ),
)
def test_loss_list_agrees_with_a_set_of_sequence_numbers(gaps, operations) -> None:
    loss = LossList()
    model: set[int] = set()
    top = 0
    for skip, length in gaps:
        first = top + skip
        loss.append(first, first + length - 1)
        model.update(range(first, first + length))
        top = first + length
    for operation, seq in operations:
        if operation == "remove":
            assert loss.remove(seq) == (seq in model)
            model.discard(seq)
        elif operation == "range":
            gone = model & set(range(seq, seq + 25))
            assert loss.remove_range(seq, seq + 24) == len(gone)
            model -= gone
        else:
            loss.remove_below(seq)
            model = {s for s in model if s >= seq}
        assert {s for a, b in loss.ranges() for s in range(a, b + 1)} == model
        assert len(loss) == len(model)
        assert loss.first == (min(model) if model else None)


def test_receive_ring_grows_and_keeps_what_it_holds() -> None:
    head = SEQ_MASK - 10  # the ring spans the wire's wrap
    buffer = ReceiveBuffer(head)
    buffer.put(head + 1, b"b", 2.0)
    buffer.put(head + 5000, b"far", 3.0)  # far beyond the initial ring
    buffer.put(head, b"a", 1.0)
    assert head + 5000 in buffer and head + 2 not in buffer
    assert buffer.count == 3
    assert buffer.play_time(head + 5000) == 3.0
    assert buffer.pop_head() == b"a"
    assert buffer.pop_head() == b"b"
    buffer.skip_to(head + 5000)
    assert buffer.pop_head() == b"far"
    assert buffer.count == 0


def test_send_ring_acknowledges_drops_and_answers_only_what_it_holds() -> None:
    buffer = SendBuffer(SEQ_MASK - 1)
    for i in range(300):
        buffer.append(bytes([i % 256]), now=float(i))
    base = SEQ_MASK - 1
    assert len(buffer) == 300
    assert buffer.get(base + 299) == bytes([299 % 256])
    assert buffer.get(base + 300) is None
    buffer.acknowledge(base + 100)
    assert buffer.get(base + 99) is None
    assert buffer.oldest_sent() == 100.0
    buffer.drop_sent_before(149.0)
    assert buffer.base == base + 150
    # An acknowledgement beyond what was sent releases only what was sent.
    buffer.acknowledge(base + 10**6)
    assert len(buffer) == 0 and buffer.oldest_sent() is None
