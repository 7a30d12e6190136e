"""The state-store contract: the in-memory store and the Redis store behave identically.

Every test runs against both backends; the Redis one talks to the embedded stack's real server.
Expected values are written out by hand, so a test that passes on both backends pins the same
observable behaviour on each.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from engine.config import EngineSettings
from engine.errors import WatermarkConflict
from engine.events import Event, encode_event
from engine.generator import generate_events
from engine.logic import PartitionMeta, StateDelta, UserState, compute_delta
from engine.pipeline import BatchProcessor, RawRecord
from engine.state.base import PartitionSnapshot, RecsInputs, StateStore, UserProfile
from engine.state.memory import MemoryStore
from engine.state.redis_store import RedisSettings, RedisStore
from engine.verify import compare_partition

# The co-occurrence rows kept (as where they rank) so that their contract is tested; see
# test_without_cooccurrence_rows_neighbours_are_rule_rows for the default with the session model.
SETTINGS = EngineSettings(max_neighbours=3, history_length=4, dedup_window=5, cooccurrence_rows="on")
HL = SETTINGS.popularity_half_life_s
T0 = 1_700_000_000.0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.stack)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if backend == "memory":
        yield MemoryStore(2, SETTINGS)
        return
    url = request.getfixturevalue("redis_url")
    redis_store = RedisStore(RedisSettings(url=url, key_prefix="t"), partitions=2, engine=SETTINGS)
    try:
        yield redis_store
    finally:
        redis_store.close()


def ev(
    eid: str, item: str, kind: str = "view", ts: float = T0, user: str = "u1", session: str | None = None
) -> Event:
    return Event(eid, ts, user, item, kind, session_id=session)


def apply_events(
    store: StateStore, partition: int, events: list[Event], first_offset: int | None = None
) -> StateDelta:
    """Load, compute and apply one batch the way the worker does."""
    wanted: dict[str, list[str]] = {}
    for event in events:
        wanted.setdefault(event.user_id, []).append(event.event_id)
    meta, users = store.load(partition, wanted)
    start = meta.watermark + 1 if first_offset is None else first_offset
    delta = compute_delta(partition, list(enumerate(events, start)), users, meta, SETTINGS)
    store.apply(delta)
    return delta


def frozen(snapshot: PartitionSnapshot) -> PartitionSnapshot:
    """A copy that later writes cannot change (the memory store hands out its live state)."""
    return copy.deepcopy(snapshot)


def comparable(snapshot: PartitionSnapshot) -> dict[str, object]:
    """Everything of a snapshot but the user vectors (numpy arrays do not compare with ==)."""
    fields = (
        "watermark",
        "applied",
        "duplicates",
        "invalid",
        "popularity_epoch",
        "history",
        "purchases",
        "seen",
        "sessions",
        "cooccurrence",
        "popularity",
    )
    return {name: getattr(snapshot, name) for name in fields}


def empty_user(state: UserState) -> bool:
    return (state.history, state.seen, state.session_id, state.session_last_ts, state.vector) == (
        [],
        set(),
        None,
        None,
        None,
    )


class TestStateStoreContract:
    def test_empty_store(self, store: StateStore) -> None:
        meta, users = store.load(0, {"u1": ["e1", "e2"], "u2": []})
        assert (meta.watermark, meta.popularity_epoch) == (-1, None)
        assert set(users) == {"u1", "u2"} and all(empty_user(s) for s in users.values())
        assert store.watermarks() == {0: -1, 1: -1}
        assert store.profiles(1, ["u1"]) == {"u1": UserProfile()}
        assert store.neighbours(["a"], 5) == {"a": {}}
        assert store.neighbours([], 5) == {}
        assert store.trending(5) == []
        assert store.locate_user("u1") is None
        assert store.recs_digests(0, ["u1"]) == {"u1": None}
        assert store.recs_digests(0, []) == {}
        assert comparable(store.snapshot(0)) == comparable(PartitionSnapshot())

    def test_apply_then_read(self, store: StateStore) -> None:
        apply_events(store, 0, [ev("e1", "a", ts=T0), ev("e2", "b", "purchase", ts=T0 + 10)])
        apply_events(
            store,
            1,
            [
                ev("e3", "a", "click", ts=T0 + 20, user="u2", session="s9"),
                ev("e4", "c", ts=T0 + 30, user="u2", session="s9"),
            ],
        )
        assert store.watermarks() == {0: 1, 1: 1}

        meta, users = store.load(0, {"u1": ["e1", "zz"], "new": ["e3"]})
        assert (meta.watermark, meta.popularity_epoch) == (1, T0 + 10)
        u1 = users["u1"]
        assert (u1.history, u1.seen, u1.session_id, u1.session_last_ts) == (
            ["b", "a"],
            {"e1"},
            f"u1@{int(T0)}",
            T0 + 10,
        )
        assert empty_user(users["new"])  # e3 was seen, but for u2 in partition 1
        meta1, users1 = store.load(1, {"u2": ["e3", "e4", "e1"]})
        assert meta1.popularity_epoch == T0 + 30
        assert (users1["u2"].seen, users1["u2"].session_id, users1["u2"].session_last_ts) == (
            {"e3", "e4"},
            "s9",
            T0 + 30,
        )

        profiles = store.profiles(0, ["u1", "u2"])
        assert profiles["u1"] == UserProfile(
            ["b", "a"], {"b"}, session_id=f"u1@{int(T0)}", session_ts=T0 + 10
        )
        assert profiles["u2"] == UserProfile()  # u2 lives in partition 1
        assert store.profiles(1, ["u2"])["u2"] == UserProfile(
            ["c", "a"], set(), session_id="s9", session_ts=T0 + 30
        )
        assert store.locate_user("u1") == 0 and store.locate_user("u2") == 1
        assert store.locate_user("nobody") is None

        # Neighbours merge over partitions: a-b (purchase 5) in partition 0, a-c (view 1) in 1.
        assert store.neighbours(["a", "b", "a", "zz"], 5) == {
            "a": {"b": 5.0, "c": 1.0},
            "b": {"a": 5.0},
            "zz": {},
        }
        assert store.neighbours(["a"], 1) == {"a": {"b": 5.0}}

        # Trending is merged at the newest epoch (T0 + 30) with the default one-day half-life.
        def at_now(weight: float, ts: float) -> float:
            return weight * 2.0 ** ((ts - (T0 + 30)) / HL)

        expected = {"b": at_now(5, T0 + 10), "a": at_now(1, T0) + at_now(1, T0 + 20), "c": 1.0}
        trending = store.trending(10)
        assert [item for item, _ in trending] == ["b", "a", "c"]
        assert dict(trending) == pytest.approx(expected, rel=1e-12)
        assert [item for item, _ in store.trending(2)] == ["b", "a"]

        snap = store.snapshot(0)
        assert (snap.watermark, snap.applied, snap.duplicates, snap.invalid) == (1, 2, 0, 0)
        assert snap.purchases == {"u1": {"b"}}
        assert snap.seen == {"u1": {"e1": T0, "e2": T0 + 10}}

    def test_recs_digests(self, store: StateStore) -> None:
        store.set_recs_digests({0: {"u1": "abc", "u3": "x"}, 1: {"u1": "p1"}})
        store.set_recs_digests({0: {}})
        store.set_recs_digests({})
        store.set_recs_digests({0: {"u3": "y"}})
        assert store.recs_digests(0, ["u1", "u2", "u3"]) == {"u1": "abc", "u2": None, "u3": "y"}
        assert store.recs_digests(1, ["u1", "u3"]) == {"u1": "p1", "u3": None}

    def test_recs_inputs_equal_the_single_reads(self, store: StateStore) -> None:
        assert store.recs_inputs({}, 5) == RecsInputs({}, {}, [])
        apply_events(store, 0, [ev("e1", "a", ts=T0), ev("e2", "b", "purchase", ts=T0 + 10)])
        apply_events(store, 1, [ev("e3", "c", user="u2", ts=T0 + 20), ev("e4", "a", user="u2", ts=T0 + 30)])
        store.set_recs_digests({0: {"u1": "d1"}, 1: {"u2": "d2"}})
        users = {0: ["u1", "nobody"], 1: ["u2"]}
        inputs = store.recs_inputs(users, 2)
        assert inputs.profiles == {p: store.profiles(p, group) for p, group in users.items()}
        assert inputs.profiles[0]["u1"].purchased == {"b"} and inputs.profiles[1]["u2"].history == ["a", "c"]
        assert inputs.digests == {0: {"u1": "d1", "nobody": None}, 1: {"u2": "d2"}}
        assert inputs.trending == store.trending(2) and len(inputs.trending) == 2
        assert store.recs_inputs({1: []}, 1) == RecsInputs({1: {}}, {1: {}}, store.trending(1))
        # 0 trending items: none read (a Redis range 0..-1 would have been the whole row)
        assert store.trending(0) == [] and store.recs_inputs(users, 0).trending == []
        assert store.recs_inputs(users, 0).profiles == inputs.profiles

    def test_recs_inputs_leave_out_the_histories_asked_for(self, store: StateStore) -> None:
        apply_events(store, 0, [ev("e1", "a", ts=T0), ev("e2", "b", "purchase", ts=T0 + 10)])
        apply_events(store, 0, [ev("e3", "c", user="u3", ts=T0 + 20)])
        apply_events(store, 1, [ev("e4", "a", user="u2", ts=T0 + 30)])
        users = {0: ["u1", "nobody", "u3"], 1: ["u2"]}
        skipped = {"u1", "u2", "nobody"}
        whole = store.recs_inputs(users, 2)
        part = store.recs_inputs(users, 2, without_history=skipped)
        assert whole.profiles[0]["u1"].history == ["b", "a"] and part.profiles[0]["u3"].history == ["c"]
        for partition, group in whole.profiles.items():
            for user, profile in group.items():
                kept = [] if user in skipped else profile.history
                assert part.profiles[partition][user] == replace(profile, history=kept), user
        assert (part.digests, part.trending) == (whole.digests, whole.trending)

    def test_counters_accumulate(self, store: StateStore) -> None:
        delta = apply_events(store, 0, [ev("e1", "a"), ev("e1", "a"), ev("e2", "b")])
        assert (delta.applied, delta.duplicates) == (2, 1)
        store.apply(
            StateDelta(
                0,
                delta.last_offset,
                delta.last_offset + 4,
                invalid=3,
                popularity_epoch=delta.popularity_epoch,
            )
        )
        apply_events(store, 0, [ev("e2", "b"), ev("e3", "c")])
        snap = store.snapshot(0)
        assert (snap.watermark, snap.applied, snap.duplicates, snap.invalid) == (8, 3, 2, 3)
        assert snap.popularity_epoch == T0

    def test_many_partitions_in_one_call_read_and_write_like_one_at_a_time(self, store: StateStore) -> None:
        apply_events(store, 0, [ev("e1", "a", ts=T0), ev("e2", "b", ts=T0 + 1)])
        wanted = {0: {"u1": ["e2", "e5"], "u9": []}, 1: {"u2": ["e3"]}}
        assert store.load_many(wanted) == {p: store.load(p, users) for p, users in wanted.items()}
        assert store.load_many({}) == {}
        loaded = store.load_many({0: {"u1": ["e3"]}, 1: {"u2": ["e4"]}})
        fresh = compute_delta(
            1, [(0, ev("e4", "c", user="u2", ts=T0 + 2))], loaded[1][1], loaded[1][0], SETTINGS
        )
        stale = compute_delta(  # written against partition 0 as it was before e1, e2
            0, [(0, ev("e3", "d", ts=T0 + 3))], {"u1": UserState()}, PartitionMeta(-1, None), SETTINGS
        )
        before = frozen(store.snapshot(0))
        conflicts = store.apply_many([stale, fresh])
        assert isinstance(conflicts[0], WatermarkConflict) and conflicts[1] is None
        assert comparable(store.snapshot(0)) == comparable(before)  # nothing of the stale one
        assert store.watermarks() == {0: 1, 1: 0}
        assert store.profiles(1, ["u2"])["u2"].history == ["c"]
        assert store.apply_many([]) == []

    def test_stale_watermark_conflicts_and_writes_nothing(self, store: StateStore) -> None:
        first = apply_events(store, 0, [ev("e1", "a", ts=T0), ev("e2", "b", ts=T0 + 1)])
        before = frozen(store.snapshot(0))
        stale = compute_delta(
            0,
            [(2, ev("e3", "c", "purchase", ts=T0 + 2))],
            {"u1": UserState(["b", "a"])},
            PartitionMeta(first.expected_watermark, None),
            SETTINGS,
        )
        with pytest.raises(WatermarkConflict, match="partition 0: watermark is 1, expected -1"):
            store.apply(stale)
        ahead = StateDelta(
            0,
            5,
            9,
            applied=1,
            history={"u1": ["zz"]},
            popularity={"zz": 1.0},
            cooccurrence={"zz": {"a": 1.0}},
            popularity_rescale=0.5,
            popularity_epoch=T0 + 9,
        )
        with pytest.raises(WatermarkConflict):
            store.apply(ahead)
        assert comparable(store.snapshot(0)) == comparable(before)
        assert store.watermarks() == {0: 1, 1: -1}
        profile = store.profiles(0, ["u1"])["u1"]
        assert (profile.history, profile.purchased, profile.session_ts) == (["b", "a"], set(), T0 + 1)
        # The conflict is per partition: partition 1 still accepts its first batch.
        apply_events(store, 1, [ev("e9", "a", user="u2")])
        assert store.watermarks() == {0: 1, 1: 0}

    def test_history_trimming(self, store: StateStore) -> None:
        apply_events(store, 0, [ev(f"e{i}", f"i{i}", ts=T0 + i) for i in range(6)])
        assert store.profiles(0, ["u1"])["u1"].history == ["i5", "i4", "i3", "i2"]
        apply_events(store, 0, [ev("e6", "i6", ts=T0 + 6), ev("e7", "i2", ts=T0 + 7)])
        assert store.profiles(0, ["u1"])["u1"].history == ["i2", "i6", "i5", "i4"]
        # A batch of duplicates only leaves the history alone.
        apply_events(store, 0, [ev("e7", "i2", ts=T0 + 7)])
        assert store.snapshot(0).history == {"u1": ["i2", "i6", "i5", "i4"]}
        meta, users = store.load(0, {"u1": []})
        assert users["u1"].history == ["i2", "i6", "i5", "i4"] and meta.watermark == 8

    def test_dedup_window_trimming(self, store: StateStore) -> None:
        apply_events(store, 0, [ev(f"e{i}", "a", ts=T0 + i) for i in range(7)])
        ids = [f"e{i}" for i in range(7)]
        assert set(store.snapshot(0).seen["u1"]) == set(ids[2:])  # the 5 newest by timestamp
        _, users = store.load(0, {"u1": ids})
        assert users["u1"].seen == set(ids[2:])
        # Equal timestamps: the larger ids are kept, as a Redis sorted set orders them.
        apply_events(store, 1, [ev(f"x{i}", "a", ts=T0, user="u2") for i in "abcdefg"])
        assert set(store.snapshot(1).seen["u2"]) == {f"x{i}" for i in "cdefg"}
        # An id that fell out of the window is applied again.
        delta = apply_events(store, 0, [ev("e0", "a", ts=T0 + 100), ev("e6", "a", ts=T0 + 100)])
        assert (delta.applied, delta.duplicates) == (1, 1)

    def test_a_load_without_histories_leaves_only_them_out(self, store: StateStore) -> None:
        apply_events(store, 0, [ev("e1", "a", ts=T0), ev("e2", "b", "purchase", ts=T0 + 1)])
        wanted = {"u1": ["e1", "e3"], "nobody": ["x"]}
        meta, full = store.load(0, wanted)
        meta_bare, bare = store.load(0, wanted, history=False)
        assert full["u1"].history == ["b", "a"] and meta_bare == meta
        for user in wanted:
            assert bare[user].history == []
            full[user].history = []
            assert bare[user] == full[user]
        assert store.load_many({0: wanted}, history=False) == {0: (meta, bare)}

    def test_the_whole_window_is_loaded_only_when_a_checked_id_could_leave_it(
        self, store: StateStore
    ) -> None:
        apply_events(store, 0, [ev(f"e{i}", "a", ts=T0 + i) for i in range(4)])  # 4 of 5 held
        stored = {f"e{i}": T0 + i for i in range(4)}
        cases = [
            (["n1"], None),  # nothing found or repeated: the ids alone decide
            (["n1", "n2", "n3"], None),  # 4 + 3 > 5, but no id to check
            (["e1", "n1"], stored),  # e1 found, and 4 + 2 > 5
            (["e1"], None),  # found, but 4 + 1 fits
            (["n1", "n1"], stored),  # repeated, and 4 + 2 > 5
        ]
        for ids, want in cases:
            _, users = store.load(0, {"u1": ids})
            assert users["u1"].window == want, ids
        # a user with nothing stored whose batch repeats an id past the window's size
        _, users = store.load(0, {"u9": [f"x{i}" for i in range(5)] + ["x0"]})
        assert users["u9"].window == {} and users["u9"].seen == set()

    @pytest.mark.parametrize("size", [1, 3, 8])
    def test_dedup_does_not_depend_on_batch_boundaries(self, store: StateStore, size: int) -> None:
        # Replays of ids 2 to 9 events back (the window holds 5), repeats within any batch, and
        # equal timestamps, for two users of one partition.
        events: list[Event] = []
        for n in range(40):
            user = f"u{n % 2}"
            events.append(ev(f"{user}-{n}", f"i{n % 7}", ts=T0 + n // 3, user=user))
            if n % 3 == 0 and n >= 10:
                earlier = [e for e in events if e.user_id == user]
                events.append(earlier[-(2 + n % 9)])  # that user's event 2 to 10 events back
        records = [RawRecord(0, offset, encode_event(e)) for offset, e in enumerate(events)]
        reference = MemoryStore(2, SETTINGS)
        BatchProcessor(reference, SETTINGS).process(0, records)
        processor = BatchProcessor(store, SETTINGS)
        for start in range(0, len(records), size):
            processor.process(0, records[start : start + size])
        expected, actual = reference.snapshot(0), store.snapshot(0)
        assert compare_partition(0, expected, actual, SETTINGS) == []
        assert (actual.applied, actual.duplicates) == (expected.applied, expected.duplicates)
        assert 0 < expected.duplicates < len(events) - 40  # some replays were applied again

    def test_neighbour_trimming_keeps_the_strongest(self, store: StateStore) -> None:
        six = {f"n{i}": float(i) for i in range(1, 7)}
        store.apply(StateDelta(0, -1, 0, cooccurrence={"x": dict(six)}, popularity_epoch=T0))
        assert store.snapshot(0).cooccurrence["x"] == six  # 2 x max_neighbours: not trimmed yet
        store.apply(StateDelta(0, 0, 1, cooccurrence={"x": {"n0": 0.5, "n1": 3.5}}, popularity_epoch=T0))
        # 7 entries > 6: trimmed to the 3 strongest (n1 grew to 4.5 and survives).
        assert store.snapshot(0).cooccurrence["x"] == {"n6": 6.0, "n5": 5.0, "n1": 4.5}
        assert store.neighbours(["x"], 10) == {"x": {"n6": 6.0, "n5": 5.0, "n1": 4.5}}
        assert store.neighbours(["x"], 2) == {"x": {"n6": 6.0, "n5": 5.0}}
        # Ties are cut the same way on both backends: the larger ids stay.
        ties = {k: 1.0 for k in "abcdefg"}
        store.apply(StateDelta(0, 1, 2, cooccurrence={"y": ties}, popularity_epoch=T0))
        assert store.snapshot(0).cooccurrence["y"] == {"e": 1.0, "f": 1.0, "g": 1.0}
        assert store.neighbours(["y"], 2) == {"y": {"f": 1.0, "g": 1.0}}

    def test_popularity_rescale(self, store: StateStore) -> None:
        store.apply(StateDelta(0, -1, 0, popularity={"a": 8.0, "b": 2.0}, popularity_epoch=T0))
        store.apply(
            StateDelta(
                0,
                0,
                1,
                popularity={"b": 1.0, "c": 3.0},
                popularity_epoch=T0 + 2 * HL,
                popularity_rescale=0.25,
            )
        )
        snap = store.snapshot(0)
        assert snap.popularity == {"a": 2.0, "b": 1.5, "c": 3.0}
        assert snap.popularity_epoch == T0 + 2 * HL
        assert store.trending(2) == [("c", 3.0), ("a", 2.0)]
        # A rescale without increments, and one through compute_delta's rebase.
        store.apply(StateDelta(0, 1, 2, popularity_epoch=T0 + 3 * HL, popularity_rescale=0.5))
        assert store.snapshot(0).popularity == {"a": 1.0, "b": 0.75, "c": 1.5}
        later = T0 + 3 * HL + 61 * HL
        delta = apply_events(store, 0, [ev("e1", "c", "purchase", ts=later)])
        assert delta.popularity_rescale == 2.0**-61
        snap = store.snapshot(0)
        assert snap.popularity == {"a": 2.0**-61, "b": 0.75 * 2.0**-61, "c": 1.5 * 2.0**-61 + 5.0}
        assert snap.popularity_epoch == later

    def test_a_delta_without_popularity_epoch_keeps_the_stored_one(
        self, store: StateStore, backend: str, request: pytest.FixtureRequest
    ) -> None:
        store.apply(StateDelta(0, -1, 0, popularity={"a": 2.0}, popularity_epoch=T0))
        store.apply(StateDelta(0, 0, 1, invalid=1))  # StateDelta's default: no epoch
        assert store.load(0, {})[0].popularity_epoch == T0
        assert store.trending(5) == [("a", 2.0)]

    def test_trending_decays_partitions_to_the_newest_epoch(self, store: StateStore) -> None:
        store.apply(StateDelta(0, -1, 0, popularity={"a": 4.0}, popularity_epoch=T0))
        store.apply(StateDelta(1, -1, 0, popularity={"b": 3.0, "a": 1.0}, popularity_epoch=T0 + 2 * HL))
        assert store.trending(5) == [("b", 3.0), ("a", 2.0)]  # a: 4 x 2^-2 + 1

    def test_user_vectors(self, store: StateStore) -> None:
        vector = np.array([0.5, -1.25, 3.0], dtype=np.float32)
        store.apply(
            StateDelta(
                0, -1, 0, history={"u1": ["a"]}, user_vectors={"u1": (vector, "v1")}, popularity_epoch=T0
            )
        )
        profile = store.profiles(0, ["u1"])["u1"]
        assert profile.vector_version == "v1" and profile.vector is not None
        np.testing.assert_array_equal(profile.vector, vector)
        _, users = store.load(0, {"u1": []})
        assert users["u1"].vector_version == "v1"
        np.testing.assert_array_equal(users["u1"].vector, vector)
        assert store.profiles(0, ["u2"])["u2"].vector is None

    def test_ids_of_any_text_and_each_users_own_vector_round_trip(self, store: StateStore) -> None:
        # Text that a JSON or protocol encoding could bend: quotes, escapes, control characters,
        # NUL, non-ASCII, and strings that read as JSON literals or numbers.
        names = [
            'q"uote',
            "back\\slash",
            "tab\there",
            "nul\x00id",
            "é-ü",
            "ストア",
            "emoji-😀",
            "null",
            "1e5",
            "-0",
        ]
        user = {name: f"u-{name}" for name in names}
        vector = {name: np.full(3, n + 0.5, dtype=np.float32) for n, name in enumerate(names)}
        store.apply(
            StateDelta(
                0,
                -1,
                0,
                applied=len(names),
                history={user[name]: [f"i-{name}", names[-1 - n]] for n, name in enumerate(names)},
                purchases={user[names[0]]: names[:3]},
                seen={user[name]: [(f"e-{name}", T0 + n)] for n, name in enumerate(names)},
                sessions={user[name]: (f"s-{name}", T0) for name in names},
                user_vectors={user[name]: (vector[name], "v1") for name in names},
                popularity=dict.fromkeys(names, 1.0),
                popularity_epoch=T0,
            )
        )
        profiles = store.profiles(0, list(user.values()))
        for n, name in enumerate(names):
            assert profiles[user[name]].history == [names[-1 - n], f"i-{name}"]
            np.testing.assert_array_equal(profiles[user[name]].vector, vector[name])
        assert profiles[user[names[0]]].purchased == set(names[:3])
        snap = store.snapshot(0)
        assert snap.seen == {user[name]: {f"e-{name}": T0 + n} for n, name in enumerate(names)}
        assert snap.sessions == {user[name]: (f"s-{name}", T0) for name in names}
        assert {item for item, _ in store.trending(len(names))} == set(names)
        # the batch read finds each stored id among a user's asked-for ones, and only those
        _, users = store.load(0, {user[name]: [f"e-{name}", f"other-{name}"] for name in names})
        assert all(users[user[name]].seen == {f"e-{name}"} for name in names)

    def test_neighbours_merge_partitions_before_the_cut(
        self, store: StateStore, backend: str, request: pytest.FixtureRequest
    ) -> None:
        store.apply(StateDelta(0, -1, 0, cooccurrence={"x": {"a": 5.0, "b": 4.0}}, popularity_epoch=T0))
        store.apply(StateDelta(1, -1, 0, cooccurrence={"x": {"c": 5.0, "b": 4.0}}, popularity_epoch=T0))
        assert store.neighbours(["x"], 3) == {"x": {"b": 8.0, "a": 5.0, "c": 5.0}}
        assert store.neighbours(["x"], 1) == {"x": {"b": 8.0}}

    def test_without_cooccurrence_rows_neighbours_are_rule_rows(
        self, backend: str, request: pytest.FixtureRequest
    ) -> None:
        # The default with the session model on: no co-occurrence rows are written, and an item's
        # neighbours (what cold items' vectors are made of) are the items that followed it.
        settings = EngineSettings()
        assert settings.session_model == "sessions" and not settings.keeps_cooccurrence
        if backend == "memory":
            target: StateStore = MemoryStore(2, settings)
        else:
            url = request.getfixturevalue("redis_url")
            target = RedisStore(RedisSettings(url=url, key_prefix="rules"), partitions=2, engine=settings)
        processor = BatchProcessor(target, settings)
        s1 = [ev(f"e{n}", item, ts=T0 + n, session="s1") for n, item in enumerate("abc")]
        s2 = [ev(f"f{n}", item, ts=T0 + n, user="u2", session="s2") for n, item in enumerate("ac")]
        processor.process(0, [RawRecord(0, n, encode_event(e)) for n, e in enumerate(s1)])
        processor.process(1, [RawRecord(1, n, encode_event(e)) for n, e in enumerate(s2)])
        assert target.snapshot(0).cooccurrence == {} and target.snapshot(1).cooccurrence == {}
        # a->b 1 and a->c 1/2 (two steps) in partition 0, a->c 1 in partition 1, merged
        assert target.neighbours(["a", "c", "zz"], 5) == {"a": {"c": 1.5, "b": 1.0}, "c": {}, "zz": {}}
        assert target.neighbours(["a"], 1) == {"a": {"c": 1.5}}

    def test_trending_merges_partitions_before_the_cut(
        self, store: StateStore, backend: str, request: pytest.FixtureRequest
    ) -> None:
        store.apply(StateDelta(0, -1, 0, popularity={"a": 5.0, "b": 4.0}, popularity_epoch=T0))
        store.apply(StateDelta(1, -1, 0, popularity={"c": 5.0, "b": 4.0}, popularity_epoch=T0))
        assert store.trending(3) == [("b", 8.0), ("a", 5.0), ("c", 5.0)]
        assert store.trending(1) == [("b", 8.0)]

    def test_generated_stream_gives_identical_state(self, store: StateStore) -> None:
        records = generated_records()
        reference = MemoryStore(2, SETTINGS)
        for target in (reference, store):
            processor = BatchProcessor(target, SETTINGS)
            for partition, rows in records.items():
                for start in range(0, len(rows), 101):
                    processor.process(partition, rows[start : start + 101])
        users = {f"u{n}" for n in range(50)}
        items = {f"i{n}" for n in range(200)}
        for p in range(2):
            expected, actual = reference.snapshot(p), store.snapshot(p)
            assert compare_partition(p, expected, actual, SETTINGS) == []
            assert comparable(actual) == comparable(expected)
            assert actual.cooccurrence and all(len(row) <= 6 for row in actual.cooccurrence.values())
            assert store.profiles(p, users) == reference.profiles(p, users)
        assert expected.applied > 1000 and expected.duplicates > 0 and expected.invalid > 0
        assert store.watermarks() == reference.watermarks()
        # Whole rows (at most 2 x max_neighbours) and all items: exact on every backend.
        assert store.neighbours(sorted(items), 6) == reference.neighbours(sorted(items), 6)
        assert store.trending(len(items)) == reference.trending(len(items))
        assert {u: store.locate_user(u) for u in users} == {u: reference.locate_user(u) for u in users}


def generated_records() -> dict[int, list[RawRecord]]:
    """3000 generated events routed by user to 2 partitions, with replays and invalid records."""
    values: dict[int, list[bytes | None]] = {0: [], 1: []}
    for index, event in enumerate(generate_events(3000, n_users=50, n_items=200)):
        rows = values[int(event.user_id[1:]) % 2]
        rows.append(encode_event(event))
        if index % 41 == 0:
            rows.append(encode_event(event))  # a replay: a duplicate under any window
        if index % 137 == 0:
            rows.append(b"not json")
    return {
        p: [RawRecord(p, offset, value) for offset, value in enumerate(rows)] for p, rows in values.items()
    }
