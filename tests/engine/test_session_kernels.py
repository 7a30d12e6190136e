"""The compiled loops of engine.session_kernels give the very floats of the numpy passes they
replace: step by step on random inputs, and as a whole model scoring a stream that evicts."""

from __future__ import annotations

import doctest
import random

import numpy as np
import pytest

from engine import session_kernels, session_numbers, session_votes
from engine.evaluation.base import Context
from engine.events import Event
from engine.session_blend import Shortlist
from engine.sessionknn import PRESETS, VOTE_CHUNK, SessionKNN, SessionKNNConfig

pytestmark = pytest.mark.skipif(not session_kernels.AVAILABLE, reason="numba is not installed")

T0 = 1_700_000_000.0


def test_the_module_examples_run() -> None:
    assert doctest.testmod(session_kernels).failed == 0


def random_rows(rng: np.random.Generator, n_owners: int, n_names: int) -> dict:
    """Neighbour rows of a few owners (some with none), with repeated items, anchors that some
    rows lack (or that have no number: -1) and similarities with ties. The rows lie in one arena
    in another order than theirs, with gaps between them."""
    lengths, owners, anchors = [], [], []
    for owner in range(n_owners):
        if rng.random() < 0.2:
            continue
        for _ in range(int(rng.integers(1, 12))):
            lengths.append(int(rng.integers(1, 9)))
            owners.append(owner)
            anchors.append(int(rng.integers(-1, n_names)))
    starts, end = [0] * len(lengths), 0
    for row in rng.permutation(len(lengths)).tolist():
        starts[row] = end + int(rng.integers(0, 3))
        end = starts[row] + lengths[row]
    codes = rng.integers(0, n_names, end + 2).astype(np.int32)
    weights = rng.choice([0.25, 0.5, 1.0 / 3.0, 0.7], len(lengths)) * rng.choice([1.0, 0.9], len(lengths))
    return {
        "codes": codes,
        "starts": np.array(starts, np.int64),
        "lengths": np.array(lengths, np.int64),
        "row_weight": weights,
        "anchor_codes": np.array(anchors, np.int64),
        "row_owner": np.array(owners, np.int64),
    }


@pytest.mark.parametrize("distinct", [False, True])
@pytest.mark.parametrize("seed", range(6))
# weights alike on both sides of the anchor (the kernel then reads a row outward from it), and not
@pytest.mark.parametrize("before_weight", [0.6, 1.0])
def test_compiled_votes_equal_the_numpy_passes(distinct: bool, seed: int, before_weight: float) -> None:
    rng = np.random.default_rng(seed)
    config = SessionKNNConfig(
        max_session_length=8, item_decay=2.5, before_weight=before_weight, distinct_votes=distinct
    )
    scratch = session_kernels.VoteScratch()
    for n_names in (5, 40, 3000):  # the scratch grows between calls
        rows = random_rows(rng, n_owners=7, n_names=n_names)
        if not len(rows["lengths"]):
            continue
        for _ in range(2):  # a second call on the same scratch: it was left clean
            actual, expected = votes_both_ways(scratch, config, rows, n_names)
            for got, want in zip(actual, expected, strict=True):
                assert got.tolist() == want.tolist()  # bit for bit, not approximately


@pytest.mark.parametrize("seed", range(4))
def test_compiled_votes_with_factors_and_division_equal_the_numpy_passes(seed: int) -> None:
    # The kernel can also multiply each vote by its item's idf factor and divide each owner's by
    # its largest: the same floats as numpy doing both after it, also where an owner's votes are
    # all zero (numpy's 0 / 0: nan, where numba's division would raise).
    rng = np.random.default_rng(seed)
    config = SessionKNNConfig(max_session_length=8, item_decay=2.5, distinct_votes=bool(seed % 2))
    n_names = 500
    rows = random_rows(rng, n_owners=9, n_names=n_names)
    rows["row_weight"][rows["row_owner"] == rows["row_owner"][0]] = 0.0
    factor = 1.0 + 0.5 * np.log(1000.0 / rng.integers(1, 1000, n_names))
    owners, codes, scores = votes_both_ways(session_kernels.VoteScratch(), config, rows, n_names)[1]
    with np.errstate(invalid="ignore"):
        scores = scores * factor[codes]
        expected = scores / session_votes.group_max(owners, scores)
    actual = session_kernels.VoteScratch().vote(
        **rows,
        gap=session_votes.gap_weights(config),
        span=config.max_session_length,
        distinct=config.distinct_votes,
        n_names=n_names,
        factor=factor,
        normalise=True,
    )
    assert np.isnan(expected).any()
    assert actual[0].tolist() == owners.tolist() and actual[1].tolist() == codes.tolist()
    np.testing.assert_array_equal(actual[2], expected)  # bit for bit; nan where numpy has nan


def votes_both_ways(
    scratch: session_kernels.VoteScratch, config: SessionKNNConfig, rows: dict, n_names: int
) -> tuple[tuple, tuple]:
    """The votes of ``rows`` from the compiled kernel and from the numpy passes."""
    expected = session_votes._vote_passes(
        config,
        rows["codes"],
        rows["starts"],
        rows["lengths"],
        rows["row_weight"],
        rows["anchor_codes"],
        rows["row_owner"],
        n_names,
    )
    actual = scratch.vote(
        **rows,
        gap=session_votes.gap_weights(config),
        span=config.max_session_length,
        distinct=config.distinct_votes,
        n_names=n_names,
    )
    return actual, expected


@pytest.mark.parametrize("distinct", [False, True])
def test_votes_come_back_in_item_order_across_word_edges(distinct: bool) -> None:
    # The kernel reads an owner's voted items back from bits, 64 to a word: the first and last
    # bit of a word, and words with gaps between them, must come back in item order.
    config = SessionKNNConfig(max_session_length=8, distinct_votes=distinct)
    n_names = 300
    row_codes = [[63, 0, 64, 127], [128, 63, 255], [299, 191, 192], [1]]
    rows = {
        "codes": np.array([code for codes in row_codes for code in codes], np.int32),
        "starts": np.array([0, 4, 7, 10], np.int64),
        "lengths": np.array([len(codes) for codes in row_codes], np.int64),
        "row_weight": np.array([1.0, 0.5, 0.25, 2.0]),
        "anchor_codes": np.array([127, 63, 5, 1], np.int64),
        "row_owner": np.array([0, 0, 2, 3], np.int64),
    }
    actual, expected = votes_both_ways(session_kernels.VoteScratch(), config, rows, n_names)
    assert actual[1].tolist() == [0, 63, 64, 127, 128, 255, 191, 192, 299, 1]
    for got, want in zip(actual, expected, strict=True):
        assert got.tolist() == want.tolist()


@pytest.mark.parametrize("seed", range(6))
def test_compiled_gather_equals_the_numpy_passes(seed: int) -> None:
    rng = random.Random(seed)
    stamps = {f"s{n}": T0 + rng.choice([0, 1, 2, 3]) for n in range(60)}
    index = {
        f"i{n}": {sid: None for sid in rng.sample(sorted(stamps), rng.randint(1, 25))} for n in range(12)
    }
    compiled = session_numbers.SessionNumbers(compiled=True)
    plain = session_numbers.SessionNumbers(compiled=False)
    for _ in range(20):
        items = rng.sample(sorted(index), rng.randint(1, 6))
        own = rng.choice([None, "s3", "nobody"])
        weights = [rng.choice([1.0, 0.5, 0.3]) for _ in items]
        found = [
            numbers.gather(
                [
                    (numbers.slot(item, index[item], stamps), weight, position)
                    for position, (item, weight) in enumerate(zip(items, weights, strict=True))
                ],
                own,
            )
            for numbers in (compiled, plain)
        ]
        by_id = []
        for numbers, result in zip((compiled, plain), found, strict=True):
            ids = numbers.ids(result.numbers)
            rows = zip(
                ids,
                result.similarities.tolist(),
                result.anchors.tolist(),
                result.stamps.tolist(),
                strict=True,
            )
            by_id.append(sorted(rows))
        assert by_id[0] == by_id[1]
        assert own not in {row[0] for row in by_id[0]}


def stream(seed: int, n_events: int, n_items: int = 60) -> list[Event]:
    rng = random.Random(seed)
    events, open_sessions, n = [], [], 0
    for _ in range(n_events):
        if not open_sessions or rng.random() < 0.15:
            open_sessions.append([f"s{n}", rng.randrange(n_items)])
            n += 1
        session = rng.choice(open_sessions)
        session[1] = (session[1] + rng.randint(-2, 3)) % n_items
        ts = T0 + len(events) // 3  # ties in time, as a log with second resolution has
        events.append(Event(str(len(events)), ts, session[0], f"i{session[1]}", "click", session[0]))
        if rng.random() < 0.1:
            open_sessions.remove(session)
    return events


@pytest.mark.parametrize(
    "config",
    [
        PRESETS["sessions"].with_(max_sessions=80, max_item_sessions=30, sample=20, k=8),
        PRESETS["sessions"],
        SessionKNNConfig(length_norm=0.5, max_sessions=50, max_session_length=6, sample=10, k=5),
    ],
    ids=["preset-small-caps", "preset", "cosine-evicting"],
)
def test_a_compiled_model_scores_exactly_like_the_numpy_one(config: SessionKNNConfig) -> None:
    compiled, plain = SessionKNN(config), SessionKNN(config)
    plain.compiled = False
    assert compiled.compiled and not plain.compiled
    events = stream(3, 1500)
    for start in range(0, len(events), 100):
        batch = events[start : start + 100]
        compiled.learn(batch)
        plain.learn(batch)
        latest = {e.session_id: e for e in batch}
        contexts = [
            Context(e.user_id, tuple(compiled.sessions[sid]), e.ts, sid)
            for sid, e in latest.items()
            if sid in compiled.sessions
        ]
        contexts.append(Context("new", ("i1", "i2", "no-such-item"), events[start].ts, None))
        for context in contexts:
            assert compiled.neighbours(context) == plain.neighbours(context)
        assert compiled.scores_many(contexts) == plain.scores_many(contexts)
        shortlist = Shortlist([3] * len(contexts), [("i1",)] * len(contexts), ("i2",))
        assert compiled.scores_many(contexts, shortlist) == plain.scores_many(contexts, shortlist)
    # Many contexts in one call: several chunks, the idf factors computed once for all of them.
    contexts = [
        Context(sid, tuple(items), events[-1].ts + delay, sid)
        for delay in (0, 3_600, 86_400)
        for sid, items in compiled.sessions.items()
    ]
    assert len(contexts) > 2 * VOTE_CHUNK
    assert compiled.scores_many(contexts) == plain.scores_many(contexts)
