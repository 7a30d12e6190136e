"""The session model kept in Redis scores exactly like the in-memory one and the evaluation model.

Three implementations of one model must agree: :class:`SessionKNN` fed event by event (what
``streamrec eval`` measures), the memory store fed by batch deltas, and Redis fed by the batch Lua
script and read back through :func:`engine.state.redis_sessions.partial_model`.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Iterator

import pytest

from engine.config import EngineSettings
from engine.evaluation.base import Context, top_k
from engine.events import Event
from engine.logic import compute_delta
from engine.sessionknn import PRESETS, SessionKNN, SessionKNNConfig, session_of
from engine.state.base import StateStore
from engine.state.memory import MemoryStore
from engine.state.redis_store import RedisSettings, RedisStore

PARTITIONS = 3
T0 = 1_700_000_000.0


def session_events(n_sessions: int = 400, seed: int = 7) -> list[Event]:
    """Sessions over 60 items with popular items and repeated clicks, in time order."""
    rng = random.Random(seed)
    events: list[Event] = []
    ts = T0
    for s in range(n_sessions):
        user = f"u{rng.randrange(120)}"
        sid = f"s{s}"
        item = rng.randrange(60)
        for _ in range(rng.randint(1, 8)):
            ts += rng.uniform(1, 600)
            # walk to a nearby item, or jump to a popular one
            item = (item + rng.randint(-3, 3)) % 60 if rng.random() < 0.7 else rng.choice((0, 1, 2, 3))
            events.append(Event(f"e{len(events)}", ts, user, f"i{item}", "click", session_id=sid))
    return events


def interleaved_events(n_events: int = 900, open_sessions: int = 12, seed: int = 3) -> list[Event]:
    """Many sessions open at once, each event in a random one of them (a session ends after 1-9
    events and a new one takes its place): one batch holds several events of a session, and a
    small session cap evicts sessions that come back later."""
    rng = random.Random(seed)
    started = 0
    open_now: list[list[str | int]] = []  # [session, events left]
    events: list[Event] = []
    ts = T0
    while len(events) < n_events:
        while len(open_now) < open_sessions:
            open_now.append([f"s{started}", rng.randint(1, 9)])
            started += 1
        slot = open_now[rng.randrange(len(open_now))]
        ts += rng.uniform(1, 30)
        item = rng.randrange(40) if rng.random() < 0.8 else rng.choice((0, 1, 2))
        events.append(
            Event(f"e{len(events)}", ts, f"u{started % 97}", f"i{item}", "click", session_id=str(slot[0]))
        )
        slot[1] = int(slot[1]) - 1
        if slot[1] == 0:
            open_now.remove(slot)
    return events


def feed(
    store: StateStore,
    events: list[Event],
    settings: EngineSettings,
    batch: int = 37,
    partitions: int = PARTITIONS,
) -> None:
    """Route by user to partitions and apply in batches, the way the worker does."""
    routed: dict[int, list[Event]] = {}
    for event in events:
        routed.setdefault(int(event.user_id[1:]) % partitions, []).append(event)
    offsets = dict.fromkeys(routed, 0)
    # interleave partitions batch by batch, as a worker polling all of them would
    pending = {p: list(rows) for p, rows in routed.items()}
    while any(pending.values()):
        for p, rows in pending.items():
            chunk, pending[p] = rows[:batch], rows[batch:]
            if not chunk:
                continue
            wanted: dict[str, list[str]] = {}
            for event in chunk:
                wanted.setdefault(event.user_id, []).append(event.event_id)
            meta, users = store.load(p, wanted)
            records = list(enumerate(chunk, offsets[p]))
            offsets[p] += len(chunk)
            store.apply(compute_delta(p, records, users, meta, settings))


@pytest.fixture(params=["sessions", "users"])
def preset(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def redis_store(redis_url: str, preset: str) -> Iterator[RedisStore]:
    store = RedisStore(
        RedisSettings(url=redis_url, key_prefix="sm"), PARTITIONS, EngineSettings(session_model=preset)
    )
    try:
        yield store
    finally:
        store.close()


def contexts_of(events: list[Event], preset: str) -> list[Context]:
    """Requests at many points of the stream: a sequence so far, asked for just after its last event."""
    sequences: dict[str, list[str]] = {}
    contexts = []
    for n, event in enumerate(events):
        key = event.user_id if preset == "users" else event.session_id
        assert key is not None
        sequences.setdefault(key, []).append(event.item_id)
        if n % 7 == 0:
            contexts.append(Context(event.user_id, tuple(sequences[key]), event.ts + 1, key))
    return contexts


def assert_same_scores(expected: dict[str, float], actual: dict[str, float]) -> None:
    assert expected.keys() == actual.keys()
    for item, value in expected.items():
        assert math.isclose(actual[item], value, rel_tol=1e-9, abs_tol=1e-12), item


@pytest.mark.stack
def test_redis_session_model_scores_like_the_in_memory_model(redis_store: RedisStore, preset: str) -> None:
    settings = EngineSettings(session_model=preset)
    events = session_events()
    reference = SessionKNN(PRESETS[preset])
    reference.learn(events)
    memory = MemoryStore(PARTITIONS, settings)
    feed(memory, events, settings)
    feed(redis_store, events, settings)

    contexts = contexts_of(events, preset)
    assert len(contexts) > 100
    memory_model = memory.session_model(contexts)
    assert memory_model is not None
    ranked_lists = 0
    for context in contexts:
        expected = reference.scores(context)
        assert_same_scores(expected, memory_model.scores(context))
        partial = redis_store.session_model([context])
        assert partial is not None
        assert_same_scores(expected, partial.scores(context))
        ranked = top_k(expected, 20)
        assert top_k(partial.scores(context), 20) == ranked
        ranked_lists += bool(ranked)
    assert ranked_lists > 100
    # One read for many contexts serves each of them like a read of its own.
    shared = redis_store.session_model(contexts[:40])
    assert shared is not None
    for context in contexts[:40]:
        assert_same_scores(reference.scores(context), shared.scores(context))


@pytest.mark.stack
def test_session_items_are_kept_per_session(redis_store: RedisStore, preset: str) -> None:
    settings = EngineSettings(session_model=preset)
    events = session_events(60)
    feed(redis_store, events, settings)
    key = events[-1].user_id if preset == "users" else events[-1].session_id
    assert key is not None
    partition = int(events[-1].user_id[1:]) % PARTITIONS
    expected = [e.item_id for e in events if (e.user_id if preset == "users" else e.session_id) == key][
        -PRESETS[preset].max_session_length :
    ]
    assert redis_store.session_items({key: partition}) == {key: expected}


@pytest.mark.stack
def test_whole_model_loaded_from_redis_then_fed_scores_like_the_in_memory_model(
    redis_store: RedisStore, preset: str
) -> None:
    """The worker's replica: loaded from Redis mid-stream, then fed the touches of later deltas."""
    settings = EngineSettings(session_model=preset)
    events = session_events()
    half = len(events) // 2
    reference = SessionKNN(PRESETS[preset])
    reference.learn(events)
    feed(redis_store, events[:half], settings)
    replica = redis_store.whole_session_model()
    assert replica is not None
    assert len(replica.sessions) > 50
    replica.learn(events[half:])  # what the worker's later writes teach it
    contexts = contexts_of(events, preset)
    for context in contexts:
        expected = reference.scores(context)
        assert_same_scores(expected, replica.scores(context))
        assert top_k(replica.scores(context), 20) == top_k(expected, 20)
    assert replica.n_sessions == reference.n_sessions
    assert replica.item_count == reference.item_count


@pytest.mark.stack
def test_whole_model_of_an_empty_store_is_empty(redis_store: RedisStore) -> None:
    model = redis_store.whole_session_model()
    assert model is not None
    assert not model.sessions and not model.item_sessions and model.n_sessions == 0


def one_partition_store(
    redis_url: str, prefix: str, config: SessionKNNConfig
) -> tuple[RedisStore, EngineSettings]:
    """A one-partition Redis store running the session model ``config``, and its settings."""
    settings = EngineSettings(session_model="sessions")
    store = RedisStore(RedisSettings(url=redis_url, key_prefix=prefix), 1, settings)
    store.session_config = config
    return store, settings


@pytest.mark.stack
@pytest.mark.parametrize(
    ("stream", "max_sessions", "max_item_sessions"),
    [("one at a time", 25, 500), ("one at a time", 25, 4), ("interleaved", 12, 4)],
)
def test_redis_evicts_sessions_like_the_in_memory_model(
    redis_url: str, stream: str, max_sessions: int, max_item_sessions: int
) -> None:
    """With one partition the per-partition session cap is the model's: evicted sessions leave
    the item index in Redis exactly as in memory (also when evictions and the item cap meet
    inside one batch, where the script keeps the index sizes itself)."""
    config = PRESETS["sessions"].with_(max_sessions=max_sessions, max_item_sessions=max_item_sessions)
    store, settings = one_partition_store(redis_url, "ev", config)
    try:
        events = session_events(150) if stream == "one at a time" else interleaved_events()
        feed(store, events, settings, batch=200, partitions=1)  # evictions and re-adds in one batch
        reference = SessionKNN(config)
        reference.learn(events)
        loaded = store.whole_session_model()
        assert loaded is not None
        assert list(loaded.sessions.items()) == list(reference.sessions.items())
        assert {i: list(s) for i, s in loaded.item_sessions.items()} == {
            i: list(s) for i, s in reference.item_sessions.items()
        }
        indexed = set().union(*loaded.item_sessions.values())
        # a small item cap may push a kept session out of every index; an evicted one is never left
        assert (
            indexed == set(reference.sessions)
            if max_item_sessions > 8
            else indexed <= set(reference.sessions)
        )
    finally:
        store.close()


def redis_rule_rows(events: list[Event], config: SessionKNNConfig) -> dict[str, dict[str, float]]:
    """The rule rows the Lua script must leave for ``events`` on one partition: the model's rule
    steps over each session's kept items, a row trimmed past twice its cap the way Redis ranks
    (weakest first, ties by member bytes), not as the in-memory model breaks ties."""
    rows: dict[str, dict[str, float]] = {}
    kept: OrderedDict[str, list[str]] = OrderedDict()  # by last activity (timestamps increase)
    for event in events:
        sid = session_of(event)
        if sid in kept:
            kept.move_to_end(sid)
        elif len(kept) == config.max_sessions:
            kept.popitem(last=False)
        seq = kept.setdefault(sid, [])
        for distance, prev in enumerate(reversed(seq[-config.sr_steps :]), 1):
            row = rows.setdefault(prev, {})
            new = event.item_id not in row
            row[event.item_id] = row.get(event.item_id, 0.0) + distance**-config.sr_distance_power
            if new and len(row) > 2 * config.max_rules:
                strongest = sorted(row.items(), key=lambda kv: (kv[1], kv[0].encode()))[-config.max_rules :]
                rows[prev] = dict(strongest)
        seq.append(event.item_id)
        del seq[: -config.max_session_length]
    return rows


@pytest.mark.stack
@pytest.mark.parametrize(("stream", "max_sessions"), [("one at a time", 500_000), ("interleaved", 6)])
def test_redis_rules_follow_each_sessions_last_items_and_row_caps(
    redis_url: str, stream: str, max_sessions: int
) -> None:
    """Sessions kept shorter than the rule span, rows trimmed often, several events of a session
    in one batch, sessions evicted and coming back: the script's own copies of session items and
    row sizes must give the rows that reading both back from Redis at every event would."""
    config = PRESETS["sessions"].with_(
        max_session_length=3, sr_steps=5, max_rules=2, sr_distance_power=0.7, max_sessions=max_sessions
    )
    store, settings = one_partition_store(redis_url, "rules", config)
    try:
        events = session_events(150) if stream == "one at a time" else interleaved_events()
        feed(store, events, settings, partitions=1)
        expected = redis_rule_rows(events, config)
        assert any(len(row) > config.max_rules for row in expected.values())
        actual = {}
        for key in store.client.scan_iter(match="rules:{0}:r:*"):
            name = key.decode()
            actual[name.rsplit(":", 1)[1]] = {
                m.decode(): s for m, s in store.client.zrange(key, 0, -1, withscores=True)
            }
        assert actual == expected
        # the script reads each weight's reply off a scratch key, deleted in the same call
        assert not store.client.exists("rules:{0}:rule-scratch")
    finally:
        store.close()


def test_a_lowered_item_index_cap_shrinks_rows_in_redis_like_in_memory(redis_url: str) -> None:
    """A deployment that lowers ``max_item_sessions`` (as the ``sessions`` preset did, 1,000 ->
    500) must see longer rows come down to the new cap at their next new session, not stay long."""
    settings = EngineSettings(session_model="sessions")
    store = RedisStore(RedisSettings(url=redis_url, key_prefix="cap"), 1, settings)
    wide, narrow = (
        PRESETS["sessions"].with_(max_item_sessions=40),
        PRESETS["sessions"].with_(max_item_sessions=5),
    )
    try:
        events = session_events(200)
        first, rest = events[:400], events[400:]
        store.session_config = wide
        feed(store, first, settings, partitions=1)
        reference = SessionKNN(wide)
        reference.learn(first)
        assert max(map(len, reference.item_sessions.values())) > 5
        store.session_config = narrow
        reference.config = narrow
        feed(store, rest, settings, partitions=1)
        reference.learn(rest)
        loaded = store.whole_session_model()
        assert loaded is not None
        touched = {e.item_id for e in rest}
        assert all(len(reference.item_sessions[i]) <= 5 for i in touched)
        assert {i: list(s) for i, s in loaded.item_sessions.items()} == {
            i: list(s) for i, s in reference.item_sessions.items()
        }
    finally:
        store.close()


def redis_item_index(
    events: list[Event], cap: int
) -> tuple[dict[str, dict[str, float]], dict[str, int], int]:
    """The item index the Lua script must leave for ``events`` on one partition (no session
    evicted): a session joining a full index first drops its lowest others, as Redis ranks them
    (timestamp, then id bytes). Also each item's joins, and how many joins met a full index
    with a timestamp older than all of it."""
    index: dict[str, dict[str, float]] = {}
    joined: dict[str, int] = {}
    late = 0
    for event in events:
        row = index.setdefault(event.item_id, {})
        if event.session_id not in row:
            joined[event.item_id] = joined.get(event.item_id, 0) + 1
            if len(row) >= cap:
                late += event.ts < min(row.values())
                for sid in sorted(row, key=lambda sid: (row[sid], sid.encode()))[: len(row) - cap + 1]:
                    del row[sid]
        row[event.session_id] = event.ts
    return index, joined, late


@pytest.mark.stack
@pytest.mark.parametrize("cap", [1, 3])
def test_an_item_index_at_its_cap_keeps_a_late_event_and_drops_the_oldest_other(
    redis_url: str, cap: int
) -> None:
    """Events out of time order: a session that joins a full item index with the oldest timestamp
    of all stays, and the oldest of the others goes, the same whether it joins in the call that
    filled the index or in a later one; the item's session count grows by every join."""
    config = PRESETS["sessions"].with_(max_item_sessions=cap)
    store, settings = one_partition_store(redis_url, f"late{cap}", config)
    rng = random.Random(5)
    events = [  # some sessions come back, some with older timestamps
        Event(
            f"e{n}",
            T0 + rng.uniform(-1e4, 1e4),
            "u0",
            f"i{n % 2}",
            "click",
            session_id=f"s{rng.randrange(40)}",
        )
        for n in range(160)
    ]
    index, joined, late = redis_item_index(events, cap)
    assert late >= 5
    try:
        for batch in (37, 160):  # joins spread over calls, then all in one
            store.client.flushdb()
            feed(store, events, settings, batch=batch, partitions=1)
            for item, row in index.items():
                stored = store.client.zrange(f"late{cap}:{{0}}:is:{item}", 0, -1, withscores=True)
                assert {sid.decode(): score for sid, score in stored} == row
                assert int(store.client.hget(f"late{cap}:{{0}}:ic", item)) == joined[item]
    finally:
        store.close()


@pytest.mark.stack
def test_a_replica_loaded_with_an_index_entry_of_a_missing_session_never_picks_it(redis_url: str) -> None:
    """Scoring tells held sessions by their timestamps. A session whose items are gone from Redis
    (but not from the item index) is not held, has no timestamp, and is never a neighbour."""
    config = PRESETS["sessions"]
    store, settings = one_partition_store(redis_url, "held", config)
    try:
        events = session_events(120)
        feed(store, events, settings, partitions=1)
        whole = store.whole_session_model()
        assert whole is not None
        contexts = [Context("q", (f"i{n}", f"i{n + 1}"), T0 + 1e6, "q") for n in range(0, 56, 4)]
        gone = max(whole.sessions, key=lambda sid: sum(sid in whole.neighbourhood(c).sids for c in contexts))
        assert any(gone in whole.neighbourhood(c).sids for c in contexts)

        store.client.delete(f"held:{{0}}:ss:{gone}")
        loaded = store.whole_session_model()
        assert loaded is not None and gone not in loaded.sessions and gone not in loaded.session_ts
        assert any(gone in row for row in loaded.item_sessions.values())
        for context in contexts:
            assert gone not in loaded.neighbourhood(context).sids
        assert len(loaded.scores_many(contexts)) == len(contexts)
    finally:
        store.close()


@pytest.mark.stack
def test_an_anchor_trimmed_from_every_compared_session_scores_like_the_learned_model(redis_url: str) -> None:
    """A context item trimmed from a neighbour's list still indexes it. The per-batch reader
    numbers only the items it loads, so that anchor has no number there; it must vote as an
    anchor the neighbour does not list, as in the model that learned the same events."""
    config = PRESETS["sessions"].with_(max_session_length=2, sr_weight=0.0)
    store, settings = one_partition_store(redis_url, "anchor", config)
    try:
        events = [
            Event(f"e{n}", T0 + n, "u1", item, "click", session_id="s1") for n, item in enumerate("abc")
        ]
        feed(store, events, settings, partitions=1)
        learned = SessionKNN(config)
        learned.learn(events)
        context = Context("q", ("a",), T0 + 10, "q")
        read_back = store.session_model([context])
        assert read_back is not None and "a" not in read_back.rules.numbers  # never loaded
        assert learned.neighbours(context) == read_back.neighbours(context) != []
        assert read_back.scores(context) == learned.scores(context) != {}
    finally:
        store.close()
