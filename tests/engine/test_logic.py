"""compute_delta: hand-computed answers, and independence from batch boundaries."""

from __future__ import annotations

import copy

import pytest

from engine.config import EngineSettings
from engine.events import Event, encode_event
from engine.generator import generate_events
from engine.logic import (
    REBASE_AFTER_HALF_LIVES,
    PartitionMeta,
    StateDelta,
    UserState,
    compute_delta,
    decayed,
    merge_weights,
    needs_history,
)
from engine.pipeline import BatchProcessor, RawRecord
from engine.state.memory import MemoryStore
from engine.verify import compare_partition

T0 = 1_700_000_000.0
DEFAULTS = EngineSettings(cooccurrence_rows="on")  # these tests pin the co-occurrence rows


def ev(
    eid: str, item: str, kind: str = "view", ts: float = T0, user: str = "u", session: str | None = None
) -> Event:
    return Event(eid, ts, user, item, kind, session_id=session)


def delta_of(
    events: list[Event],
    settings: EngineSettings = DEFAULTS,
    users: dict[str, UserState] | None = None,
    meta: PartitionMeta | None = None,
) -> StateDelta:
    records = [(offset, event) for offset, event in enumerate(events)]
    return compute_delta(0, records, users or {}, meta or PartitionMeta(), settings)


def pairs(delta: StateDelta) -> dict[tuple[str, str], float]:
    return {(a, b): w for a, row in delta.cooccurrence.items() for b, w in row.items()}


# --- co-occurrence ------------------------------------------------------------------------------


def test_cooccurrence_type_weights_and_distance_decay() -> None:
    delta = delta_of(
        [ev("1", "a", "view"), ev("2", "b", "click"), ev("3", "c", "add_to_cart"), ev("4", "d", "purchase")]
    )
    expected = {
        ("a", "b"): 1.0,  # click 1 x distance-1 factor 1
        ("b", "c"): 3.0,  # add_to_cart 3 x 1
        ("a", "c"): 3.0 * 0.8,  # x decay for distance 2
        ("c", "d"): 5.0,
        ("b", "d"): 5.0 * 0.8,
        ("a", "d"): 5.0 * 0.8 * 0.8,
    }
    expected.update({(b, a): w for (a, b), w in list(expected.items())})
    assert pairs(delta) == pytest.approx(expected)


def test_cooccurrence_window_and_custom_decay() -> None:
    settings = EngineSettings(cooccurrence_window=2, cooccurrence_decay=0.5, cooccurrence_rows="on")
    delta = delta_of([ev(str(i), item) for i, item in enumerate("abcd")], settings)
    assert pairs(delta) == pytest.approx(
        {
            ("a", "b"): 1.0,
            ("b", "a"): 1.0,
            ("b", "c"): 1.0,
            ("c", "b"): 1.0,
            ("a", "c"): 0.5,
            ("c", "a"): 0.5,
            ("c", "d"): 1.0,
            ("d", "c"): 1.0,
            ("b", "d"): 0.5,
            ("d", "b"): 0.5,
        }
    )  # a-d: distance 3 is outside a window of 2


def test_self_pairs_are_skipped_but_still_count_as_distance() -> None:
    delta = delta_of([ev("1", "a"), ev("2", "a"), ev("3", "b"), ev("4", "a", "purchase")])
    # b: history [a, a] -> 1 + 0.8; second-to-last a: history [b, a, a] -> 5 (b), self skipped.
    assert pairs(delta) == pytest.approx({("a", "b"): 1.8 + 5.0, ("b", "a"): 1.8 + 5.0})
    assert "a" not in delta.cooccurrence["a"]


def test_cooccurrence_pairs_with_prior_history() -> None:
    users = {"u": UserState(history=["y", "x"])}  # most recent first
    delta = delta_of([ev("1", "a", "click")], users=users)
    assert pairs(delta) == pytest.approx({("a", "y"): 1.0, ("y", "a"): 1.0, ("a", "x"): 0.8, ("x", "a"): 0.8})
    assert users["u"].history == ["y", "x"]  # the prior state is not modified


def test_a_delta_reads_prior_histories_only_where_it_says_so(generated: list[Event]) -> None:
    # Where needs_history is False a store may leave histories out: the delta is the same.
    events = [e for e in generated[:300] if e.user_id in ("u1", "u2", "u3")]
    prior = {user: UserState(history=[f"h{n}" for n in range(7)], session_id="s") for user in ("u1", "u2")}
    bare = {user: UserState(session_id="s") for user in prior}
    settings = EngineSettings()
    assert not needs_history(settings, None)
    assert delta_of(events, settings, prior) == delta_of(events, settings, bare)
    assert needs_history(DEFAULTS, None)  # the co-occurrence rows pair with prior items
    assert delta_of(events, DEFAULTS, prior) != delta_of(events, DEFAULTS, bare)


def test_the_pipeline_loads_histories_only_where_the_delta_reads_them() -> None:
    asked: list[bool] = []

    class Recording(MemoryStore):
        def load_many(self, wanted, history=True):  # type: ignore[no-untyped-def]
            asked.append(history)
            return super().load_many(wanted, history)

    record = RawRecord(0, 0, encode_event(ev("1", "a")))
    for settings in (EngineSettings(), DEFAULTS):
        BatchProcessor(Recording(1, settings), settings).process(0, [record])
    assert asked == [False, True]


def test_users_do_not_pair_with_each_other() -> None:
    delta = delta_of([ev("1", "a", user="u1"), ev("2", "b", user="u2"), ev("3", "c", user="u1")])
    assert set(pairs(delta)) == {("a", "c"), ("c", "a")}
    assert delta.history == {"u1": ["a", "c"], "u2": ["b"]}


# --- history and purchases ----------------------------------------------------------------------


def test_history_is_oldest_first_in_the_delta_and_truncation_limits_pairs() -> None:
    settings = EngineSettings(history_length=2, cooccurrence_rows="on")
    delta = delta_of([ev(str(i), item) for i, item in enumerate("abcd")], settings)
    assert delta.history == {"u": ["a", "b", "c", "d"]}  # the delta carries every item
    # d sees only the truncated history [c, b]: no a-d pair although the window is 5.
    assert pairs(delta) == pytest.approx(
        {
            ("a", "b"): 1.0,
            ("b", "a"): 1.0,
            ("b", "c"): 1.0,
            ("c", "b"): 1.0,
            ("a", "c"): 0.8,
            ("c", "a"): 0.8,
            ("c", "d"): 1.0,
            ("d", "c"): 1.0,
            ("b", "d"): 0.8,
            ("d", "b"): 0.8,
        }
    )


def test_store_keeps_most_recent_first_truncated_history() -> None:
    settings = EngineSettings(history_length=3, cooccurrence_rows="on")
    store = MemoryStore(1, settings)
    store.apply(delta_of([ev(str(i), item) for i, item in enumerate("abcde")], settings))
    assert store.profiles(0, ["u"])["u"].history == ["e", "d", "c"]


def test_purchases() -> None:
    delta = delta_of(
        [ev("1", "a"), ev("2", "b", "purchase"), ev("3", "c", "add_to_cart"), ev("4", "a", "purchase")]
    )
    assert delta.purchases == {"u": ["b", "a"]}
    assert delta.history == {"u": ["a", "b", "c", "a"]}


def test_offsets_and_counters() -> None:
    events = [ev("1", "a"), ev("2", "b")]
    delta = compute_delta(3, [(10, events[0]), (12, events[1])], {}, PartitionMeta(watermark=9), DEFAULTS, 2)
    assert (delta.partition, delta.expected_watermark, delta.last_offset) == (3, 9, 12)
    assert (delta.applied, delta.duplicates, delta.invalid) == (2, 0, 2)
    explicit = compute_delta(3, [(10, events[0])], {}, PartitionMeta(9), DEFAULTS, last_offset=15)
    assert explicit.last_offset == 15


def test_empty_batch_advances_the_watermark_only() -> None:
    meta = PartitionMeta(watermark=7, popularity_epoch=T0)
    delta = compute_delta(1, [], {}, meta, DEFAULTS, invalid=2, last_offset=9)
    assert (delta.expected_watermark, delta.last_offset, delta.invalid, delta.applied) == (7, 9, 2, 0)
    assert delta.popularity_epoch == T0 and delta.popularity_rescale == 1.0
    assert not (delta.history or delta.cooccurrence or delta.popularity or delta.sessions or delta.seen)
    assert compute_delta(1, [], {}, PartitionMeta(watermark=7), DEFAULTS).last_offset == 7


# --- duplicates ---------------------------------------------------------------------------------


def test_in_batch_duplicates_are_counted_and_not_applied() -> None:
    delta = delta_of([ev("e1", "a", ts=T0), ev("e2", "b", ts=T0 + 1), ev("e1", "c", "purchase", ts=T0 + 2)])
    assert (delta.applied, delta.duplicates) == (2, 1)
    assert delta.history == {"u": ["a", "b"]}
    assert delta.purchases == {}
    assert set(delta.popularity) == {"a", "b"}
    assert set(pairs(delta)) == {("a", "b"), ("b", "a")}
    assert delta.seen == {"u": [("e1", T0), ("e2", T0 + 1)]}
    assert delta.sessions["u"][1] == T0 + 1


def test_previously_seen_ids_are_counted_and_not_applied() -> None:
    users = {"u": UserState(history=["x"], seen={"e0"}), "v": UserState(seen={"e9"})}
    delta = delta_of([ev("e0", "a"), ev("e1", "b"), ev("e9", "c", user="v")], users=users)
    assert (delta.applied, delta.duplicates) == (1, 2)
    assert delta.seen == {"u": [("e1", T0)]}
    assert delta.history == {"u": ["b"], "v": []}  # v is touched although nothing of theirs applied
    assert set(delta.popularity) == {"b"}
    assert "v" not in delta.sessions
    assert set(pairs(delta)) == {("b", "x"), ("x", "b")}  # "a" never entered the history


# --- sessions -----------------------------------------------------------------------------------


def test_explicit_session_id() -> None:
    delta = delta_of([ev("1", "a", ts=T0, session="s1"), ev("2", "b", ts=T0 + 5000, session="s1")])
    assert delta.sessions == {"u": ("s1", T0 + 5000)}  # explicit ids ignore the gap


def test_explicit_session_keeps_latest_timestamp_for_out_of_order_events() -> None:
    delta = delta_of([ev("1", "a", ts=T0 + 10, session="s1"), ev("2", "b", ts=T0 + 3, session="s1")])
    assert delta.sessions == {"u": ("s1", T0 + 10)}
    switched = delta_of([ev("1", "a", ts=T0 + 10, session="s1"), ev("2", "b", ts=T0 + 3, session="s2")])
    assert switched.sessions == {"u": ("s2", T0 + 3)}  # a new session starts at its own event


def test_gap_derived_sessions() -> None:
    gap = DEFAULTS.session_gap_s
    first = delta_of([ev("1", "a", ts=T0), ev("2", "b", ts=T0 + 100), ev("3", "c", ts=T0 + 100 + gap)])
    assert first.sessions == {"u": (f"u@{int(T0)}", T0 + 100 + gap)}  # exactly the gap: same session
    later = T0 + 100 + gap + 0.5
    second = delta_of([ev("1", "a", ts=T0), ev("2", "b", ts=T0 + 100), ev("3", "c", ts=later)])
    assert second.sessions == {"u": (f"u@{int(later)}", later)}


def test_sessions_continue_from_prior_state() -> None:
    prior = {"u": UserState(session_id="old", session_last_ts=T0 - 10)}
    assert delta_of([ev("1", "a", ts=T0)], users=prior).sessions == {"u": ("old", T0)}
    stale = {"u": UserState(session_id="old", session_last_ts=T0 - DEFAULTS.session_gap_s - 1)}
    assert delta_of([ev("1", "a", ts=T0)], users=stale).sessions == {"u": (f"u@{int(T0)}", T0)}
    # An implicit event inside an explicit session continues it.
    explicit = delta_of([ev("1", "a", ts=T0, session="s7"), ev("2", "b", ts=T0 + 5)])
    assert explicit.sessions == {"u": ("s7", T0 + 5)}


# --- popularity ---------------------------------------------------------------------------------

HL = 100.0
POP = EngineSettings(popularity_half_life_s=HL)


def test_first_batch_sets_the_epoch_to_its_newest_event() -> None:
    delta = delta_of(
        [ev("1", "a", "view", ts=T0), ev("2", "b", "purchase", ts=T0 + HL), ev("3", "a", ts=T0 + HL)], POP
    )
    assert delta.popularity_epoch == T0 + HL and delta.popularity_rescale == 1.0
    assert delta.popularity == pytest.approx({"a": 0.5 + 1.0, "b": 5.0})


def test_forward_decay_relative_to_a_stored_epoch() -> None:
    meta = PartitionMeta(watermark=-1, popularity_epoch=T0)
    delta = delta_of([ev("1", "a", "add_to_cart", ts=T0 + 2 * HL), ev("2", "b", ts=T0 - HL)], POP, meta=meta)
    assert delta.popularity_epoch == T0 and delta.popularity_rescale == 1.0
    assert delta.popularity == pytest.approx({"a": 3.0 * 4.0, "b": 0.5})


def test_no_rebase_up_to_the_threshold() -> None:
    newest = T0 + REBASE_AFTER_HALF_LIVES * HL
    delta = delta_of([ev("1", "a", ts=newest)], POP, meta=PartitionMeta(popularity_epoch=T0))
    assert delta.popularity_epoch == T0 and delta.popularity_rescale == 1.0
    assert delta.popularity["a"] == pytest.approx(2.0**REBASE_AFTER_HALF_LIVES)


def test_epoch_rebase_rescales_stored_scores() -> None:
    newest = T0 + 61 * HL
    delta = delta_of(
        [ev("1", "a", ts=newest - HL), ev("2", "b", "purchase", ts=newest)],
        POP,
        meta=PartitionMeta(popularity_epoch=T0),
    )
    assert delta.popularity_epoch == newest
    assert delta.popularity_rescale == pytest.approx(2.0**-61)
    assert delta.popularity == pytest.approx({"a": 0.5, "b": 5.0})


def test_rebase_preserves_the_decayed_value_of_stored_scores() -> None:
    store = MemoryStore(1, POP)
    store.apply(delta_of([ev("1", "a", "purchase", ts=T0)], POP))
    assert store.snapshot(0).popularity == {"a": 5.0}
    later = T0 + 70 * HL
    meta, users = store.load(0, {"u": ["2"]})
    store.apply(compute_delta(0, [(1, ev("2", "b", ts=later))], users, meta, POP))
    snap = store.snapshot(0)
    assert snap.popularity_epoch == later
    assert snap.popularity["a"] == pytest.approx(5.0 * 2.0**-70)
    assert snap.popularity["b"] == 1.0
    assert decayed(5.0, T0, later, HL) == pytest.approx(snap.popularity["a"])


def test_decayed_and_merge_weights() -> None:
    assert decayed(8.0, T0, T0 + 2 * HL, HL) == pytest.approx(2.0)
    assert decayed(8.0, T0, T0 + 2000 * HL, HL) == 0.0  # no underflow error
    assert merge_weights([{"a": 1.0, "b": 2.0}, {"a": 0.5}, {}]) == {"a": 1.5, "b": 2.0}


# --- pipeline: replays and batch boundaries -----------------------------------------------------


def records_for(events: list[Event], partitions: int) -> dict[int, list[RawRecord]]:
    """Route by user, add invalid records, tombstones and replays (duplicates), number the offsets.

    A replay follows its original directly, so it is a duplicate under any dedup window, whether
    or not a batch boundary falls between the two.
    """
    values: dict[int, list[bytes | None]] = {p: [] for p in range(partitions)}
    for index, event in enumerate(events):
        rows = values[int(event.user_id[1:]) % partitions]
        rows.append(encode_event(event))
        if index % 53 == 0:
            rows.append(encode_event(event))
        if index % 97 == 0:
            rows.append(b'{"not": "an event"}')
        if index % 211 == 0:
            rows.append(None)
    return {
        p: [RawRecord(p, offset, value) for offset, value in enumerate(vals)] for p, vals in values.items()
    }


def run_batches(records: dict[int, list[RawRecord]], settings: EngineSettings, size: int) -> MemoryStore:
    store = MemoryStore(len(records), settings, trim=False)
    processor = BatchProcessor(store, settings)
    for partition, rows in records.items():
        for start in range(0, len(rows), size):
            processor.process(partition, rows[start : start + size])
    return store


@pytest.fixture(scope="module")
def generated() -> list[Event]:
    return generate_events(1500, n_users=40, n_items=120, seed=11)


@pytest.mark.parametrize(
    "settings",
    [
        EngineSettings(cooccurrence_rows="on"),
        # Short half-life: many epoch rebases; short history and dedup window: lots of trimming.
        EngineSettings(
            popularity_half_life_s=60.0,
            history_length=3,
            dedup_window=4,
            cooccurrence_window=2,
            cooccurrence_rows="on",
        ),
    ],
    ids=["defaults", "rebase-and-trim"],
)
def test_batch_boundaries_do_not_change_the_final_state(
    generated: list[Event], settings: EngineSettings
) -> None:
    records = records_for(generated, 2)
    reference = run_batches(records, settings, size=10**9)
    ref0 = reference.snapshot(0)
    total = sum(reference.snapshot(p).applied for p in range(2))
    assert total == len(generated)  # every replayed record was recognised as a duplicate
    assert sum(reference.snapshot(p).duplicates for p in range(2)) == len(range(0, len(generated), 53))
    invalid = len(range(0, len(generated), 97)) + len(range(0, len(generated), 211))
    assert sum(reference.snapshot(p).invalid for p in range(2)) == invalid
    assert ref0.cooccurrence and ref0.popularity and ref0.sessions
    for size in (1, 7, 64, 500):
        other = run_batches(records, settings, size)
        for p in range(2):
            assert compare_partition(p, reference.snapshot(p), other.snapshot(p), settings) == []
            assert other.snapshot(p).watermark == len(records[p]) - 1


def test_batch_boundaries_change_the_epoch_but_not_the_decayed_scores(generated: list[Event]) -> None:
    settings = EngineSettings(popularity_half_life_s=60.0)
    records = records_for(generated, 1)
    whole, split = run_batches(records, settings, 10**9), run_batches(records, settings, 13)
    (top_w, *rest_w), (top_s, *rest_s) = whole.trending(10), split.trending(10)
    # Scores are expressed at each store's epoch (a common factor); ranks and ratios agree.
    assert [i for i, _ in [top_w, *rest_w]] == [i for i, _ in [top_s, *rest_s]]
    assert [w / top_w[1] for _, w in rest_w] == pytest.approx([w / top_s[1] for _, w in rest_s], rel=1e-9)


def test_replaying_an_applied_batch_changes_nothing(generated: list[Event]) -> None:
    records = records_for(generated[:200], 1)[0]
    store = run_batches({0: records}, DEFAULTS, 50)
    before = copy.deepcopy(store.snapshot(0))
    outcome = BatchProcessor(store, DEFAULTS).process(0, records[:50])
    assert outcome.already_applied == 50 and outcome.applied == 0 and outcome.events == []
    assert store.snapshot(0) == before
    # A batch straddling the watermark applies only the records past it.
    extra = [RawRecord(0, len(records), encode_event(ev("new", "zz", ts=T0, user="u1")))]
    outcome = BatchProcessor(store, DEFAULTS).process(0, records[-3:] + extra)
    assert (outcome.already_applied, outcome.applied) == (3, 1)
    assert store.snapshot(0).history["u1"][0] == "zz"
