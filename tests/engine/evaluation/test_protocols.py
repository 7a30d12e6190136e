"""The next-item and prequential protocols on tiny hand-made logs, and the target counts of the
real datasets that the README states (10,152 on YOOCHOOSE, 43,749 on MovieLens 100k)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

import pytest

from engine.evaluation.base import Context
from engine.evaluation.baselines import PopularityModel
from engine.evaluation.protocols import evaluate, next_item_split, run_next_item, run_prequential
from engine.events import Event
from engine.loaders import load_events

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
YOOCHOOSE = DATA / "yoochoose-100k"
MOVIELENS = DATA / "ml-100k" / "ml-100k.inter"


def click(n: int, session: str, item: str, ts: float) -> Event:
    return Event(f"e{n}", ts, session, item, "click", session)


def rating(n: int, user: str, item: str, value: float | None, ts: float) -> Event:
    return Event(f"r{n}", ts, user, item, "view", rating=value)


class Recorder:
    """A model that recommends a fixed list and records every call, in order."""

    name = "recorder"

    def __init__(self, answer: list[str]) -> None:
        self.answer = answer
        self.calls: list[tuple] = []

    def learn(self, events: Iterable[Event]) -> None:
        self.calls.append(("learn", [e.event_id for e in events]))

    def learn_one(self, event: Event) -> None:
        self.calls.append(("learn_one", event.event_id))

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        self.calls.append(("recommend", context.items, context.ts, context.session_id, set(exclude), k))
        return [i for i in self.answer if i not in exclude][:k]


T0 = 1_400_000_000.0
TRAIN = [click(0, "s1", "a", T0), click(1, "s1", "b", T0 + 1), click(2, "s1", "c", T0 + 2),
         click(3, "s2", "b", T0 + 3), click(4, "s2", "c", T0 + 4)]  # fmt: skip
TEST = [
    click(10, "s3", "a", T0 + 100),
    click(11, "s3", "x", T0 + 101),  # x never occurs in train: dropped before anything else
    click(12, "s4", "c", T0 + 102),  # a one-event session: no target
    click(13, "s5", "b", T0 + 103),
    click(14, "s3", "b", T0 + 104),
    click(15, "s5", "c", T0 + 105),
    click(16, "s5", "a", T0 + 106),
]


def test_next_item_split_drops_unknown_items_and_counts_positions() -> None:
    split = next_item_split(TRAIN, TEST)
    assert split.dropped == 1
    assert [e.event_id for e in split.events] == ["e10", "e12", "e13", "e14", "e15", "e16"]
    assert split.positions == [0, 0, 0, 1, 1, 2]
    assert split.n_targets == 3
    assert split.n_sessions == 3


def test_next_item_frozen_scores_every_later_position_and_learns_nothing_from_test() -> None:
    model = Recorder(["b", "c", "a"])
    result = run_next_item(model, TRAIN, TEST, ks=(1, 3), mode="frozen")
    assert result.n_targets == 3
    assert model.calls[0] == ("learn", ["e0", "e1", "e2", "e3", "e4"])
    recommends = [c for c in model.calls if c[0] == "recommend"]
    # (context items, request time = the previous kept event's time, session id, exclude, depth)
    assert recommends == [
        ("recommend", ("a",), T0 + 100, "s3", set(), 3),  # x was dropped: b follows a
        ("recommend", ("b",), T0 + 103, "s5", set(), 3),
        ("recommend", ("b", "c"), T0 + 105, "s5", set(), 3),
    ]
    assert not [c for c in model.calls if c[0] == "learn_one"]
    # targets b (rank 1), c (rank 2), a (rank 3)
    assert result.metrics["HR@1"] == pytest.approx(1 / 3)
    assert result.metrics["HR@3"] == 1.0
    assert result.metrics["MRR@3"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert result.info["test_events_dropped_unknown_item"] == 1
    assert result.segments["new"]["n_targets"] == 3


def test_next_item_streaming_learns_each_test_event_after_scoring_it() -> None:
    model = Recorder(["b"])
    run_next_item(model, TRAIN, TEST, ks=(1,), mode="streaming")
    after_fit = [c[:2] if c[0] == "learn_one" else c[:2] for c in model.calls[1:]]
    assert after_fit == [
        ("learn_one", "e10"),
        ("learn_one", "e12"),
        ("learn_one", "e13"),
        ("recommend", ("a",)),
        ("learn_one", "e14"),
        ("recommend", ("b",)),
        ("learn_one", "e15"),
        ("recommend", ("b", "c")),
        ("learn_one", "e16"),
    ]


def test_next_item_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        run_next_item(Recorder([]), TRAIN, TEST, mode="later")


LOG = [
    rating(0, "u1", "a", 5, T0),
    rating(1, "u2", "a", 2, T0 + 1),
    rating(2, "u1", "b", 4, T0 + 2),  # warm-up ends here (3 of 10 events with warm-up 0.3)
    rating(3, "u3", "c", 5, T0 + 3),  # first event of u3: no target
    rating(4, "u2", "b", 3, T0 + 4),  # rating below 4: learned, not a target
    rating(5, "u2", "c", 4, T0 + 5),  # target; u2 touched a, b
    rating(6, "u1", "d", 5, T0 + 6),  # target with a never-seen item
    rating(7, "u3", "a", None, T0 + 7),  # no rating (implicit): a target
    rating(8, "u3", "a", 5, T0 + 8),  # u3 already touched a: counted apart, not scored
    rating(9, "u1", "c", 4, T0 + 9),  # target
]


def test_prequential_warms_up_then_tests_before_learning() -> None:
    model = Recorder(["c", "a", "b", "d"])
    result = run_prequential(model, LOG, ks=(1, 2), warmup=0.3)
    assert model.calls[0] == ("learn", ["r0", "r1", "r2"])
    assert result.n_targets == 4
    assert result.info["warmup_events"] == 3
    assert result.info["skipped_repeat_targets"] == 1
    recommends = [(c[1], c[4]) for c in model.calls if c[0] == "recommend"]
    assert recommends == [
        (("a", "b"), {"a", "b"}),  # u2 before c
        (("a", "b"), {"a", "b"}),  # u1 before d
        (("c",), {"c"}),  # u3 before a (implicit)
        (("a", "b", "d"), {"a", "b", "d"}),  # u1 before c
    ]
    # every event is learned right after it was (possibly) scored
    order = [c[1] if c[0] == "learn_one" else "rec" for c in model.calls[1:]]
    assert order == ["r3", "r4", "rec", "r5", "rec", "r6", "rec", "r7", "r8", "rec", "r9"]
    # ranked lists: [c, d] -> c hit at 1; [c, d] -> d at 2; [a, b] -> a at 1; [c] -> c at 1
    assert result.metrics["HR@1"] == 0.75
    assert result.metrics["HR@2"] == 1.0
    assert result.segments["new-item"]["n_targets"] == 1  # d had never been seen
    assert result.segments["cold-user"]["n_targets"] == 3


class RatingRecorder(Recorder):
    def predict_rating(self, user_id: str, item_id: str) -> float:
        return 4.0


def test_prequential_scores_rating_models_on_every_rated_event_after_warm_up() -> None:
    result = run_prequential(RatingRecorder(["a"]), LOG, ks=(1,), warmup=0.3)
    actual = [5, 3, 4, 5, 5, 4]  # r3, r4, r5, r6, r8, r9: r7 has no rating
    errors = [4.0 - a for a in actual]
    assert result.metrics["MAE"] == pytest.approx(sum(abs(e) for e in errors) / len(errors))
    assert result.metrics["RMSE"] == pytest.approx((sum(e * e for e in errors) / len(errors)) ** 0.5)


def test_prequential_rejects_bad_warm_up() -> None:
    with pytest.raises(ValueError, match="warm-up"):
        run_prequential(Recorder([]), LOG, warmup=1.0)


def test_evaluate_runs_fresh_models_side_by_side() -> None:
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder(["b", "c"]))
        return made[-1]

    results = evaluate("next-item", {"one": factory, "two": factory}, train=TRAIN, test=TEST, ks=(1,))
    assert list(results) == ["one", "two"]
    assert len(made) == 2 and made[0] is not made[1]
    assert results["one"].model == "one"
    assert results["one"].metrics == results["two"].metrics
    with pytest.raises(ValueError, match="protocol"):
        evaluate("nope", {}, test=TEST)


# --- real data -----------------------------------------------------------------------------------


@pytest.mark.skipif(not YOOCHOOSE.is_dir(), reason=f"YOOCHOOSE sample not found at {YOOCHOOSE}")
def test_yoochoose_next_item_has_10152_targets() -> None:
    train = load_events(YOOCHOOSE / "yoochoose-clicks-100k_train_full.txt", "yoochoose")
    test = load_events(YOOCHOOSE / "yoochoose-clicks-100k_test.txt", "yoochoose")
    split = next_item_split(train, test)
    assert split.n_targets == 10_152
    result = run_next_item(PopularityModel(), train, test, ks=(20,), split=split)
    assert result.n_targets == 10_152


@pytest.mark.skipif(not MOVIELENS.is_file(), reason=f"MovieLens 100k not found at {MOVIELENS}")
def test_movielens_prequential_has_43749_targets_and_the_peer_popularity() -> None:
    events = load_events(MOVIELENS, "movielens")
    result = run_prequential(PopularityModel(), events, ks=(10, 20))
    assert result.n_targets == 43_749
    # the README's "popularity so far" peer: HR@10 0.0927, HR@20 0.1542, NDCG@10 0.0462
    # (ties between equally popular items are broken differently, hence the tolerance)
    assert result.metrics["HR@10"] == pytest.approx(0.0927, abs=0.002)
    assert result.metrics["HR@20"] == pytest.approx(0.1542, abs=0.002)
    assert result.metrics["NDCG@10"] == pytest.approx(0.0462, abs=0.001)
