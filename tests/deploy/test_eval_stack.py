"""``streamrec eval --through-stack`` gives the in-memory evaluation's numbers exactly.

The same replay runs twice: through the in-memory model, and through Kafka, a real engine worker
and Redis (the model scored from Redis). Every metric must be equal. Real logs from
../shared/data are used when present, generated sessions otherwise.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from deploy.eval_command import eval_command
from deploy.eval_stack import StackSessionModel
from engine.evaluation.protocols import evaluate
from engine.evaluation.registry import model_factory, preset_for
from engine.events import Event
from engine.loaders import load_events
from engine.sessionknn import PRESETS
from engine.state.redis_store import RedisSettings
from producers.kafka import KafkaSettings

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
YOOCHOOSE = DATA / "yoochoose-100k"
ML100K = DATA / "ml-100k" / "ml-100k.inter"


def generated_sessions(n_sessions: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    events, ts = [], 1_700_000_000.0
    for s in range(n_sessions):
        item = rng.randrange(80)
        for _ in range(rng.randint(2, 7)):
            ts += rng.uniform(1, 300)
            item = (item + rng.randint(-2, 2)) % 80 if rng.random() < 0.8 else rng.randrange(5)
            events.append(
                Event(f"g{seed}-{len(events)}", ts, f"s{s}", f"i{item}", "click", session_id=f"s{s}")
            )
    return events


def next_item_slice() -> tuple[list[Event], list[Event]]:
    if YOOCHOOSE.is_dir():
        train = load_events(YOOCHOOSE / "yoochoose-clicks-100k_train_full.txt", "yoochoose")
        test = load_events(YOOCHOOSE / "yoochoose-clicks-100k_test.txt", "yoochoose")
        return train[-6000:], test[:400]
    return generated_sessions(1200, 1), generated_sessions(100, 2)


def prequential_slice() -> list[Event]:
    if ML100K.is_file():
        return load_events(ML100K, "movielens")[:1500]
    events = generated_sessions(300, 3)
    return [Event(e.event_id, e.ts, f"u{n % 40}", e.item_id, "view") for n, e in enumerate(events)]


def metrics_of(protocol: str, mode: str, factory, train, test) -> tuple[int, dict[str, float]]:  # noqa: ANN001
    result = evaluate(protocol, {"session-knn": factory}, test=test, train=train, mode=mode, warmup=0.5)
    return result["session-knn"].n_targets, result["session-knn"].metrics


def stack_factory(kafka: KafkaSettings, redis_url: str, protocol: str, models: list[StackSessionModel]):  # noqa: ANN201
    preset = preset_for(protocol)

    def make() -> StackSessionModel:
        model = StackSessionModel(kafka, RedisSettings(url=redis_url), PRESETS[preset], preset)
        models.append(model)
        return model

    return make


@pytest.mark.stack
@pytest.mark.parametrize(
    ("protocol", "mode"), [("next-item", "frozen"), ("next-item", "streaming"), ("prequential", "streaming")]
)
def test_through_stack_gives_the_in_memory_numbers(
    kafka_settings: KafkaSettings, redis_url: str, protocol: str, mode: str
) -> None:
    if protocol == "next-item":
        train, test = next_item_slice()
    else:
        train, test = None, prequential_slice()
    targets, expected = metrics_of(protocol, mode, model_factory("session-knn", protocol), train, test)
    models: list[StackSessionModel] = []
    try:
        stack_targets, actual = metrics_of(
            protocol, mode, stack_factory(kafka_settings, redis_url, protocol, models), train, test
        )
    finally:
        for model in models:
            model.close()
    assert targets > 100 and stack_targets == targets
    assert expected["HR@20"] > 0.1  # a working model, not two empty ones
    assert actual == expected
    # the worker really applied the learned events, each once (frozen: the test part is not
    # learned; streaming: test events of unknown items are dropped, the last ones are never asked for)
    stats = models[0].worker.stats
    if mode == "frozen":
        assert stats.applied == len(train)
    else:
        assert (
            (len(train) if train else 0) + targets
            <= stats.applied
            <= (len(train) if train else 0) + len(test)
        )
    assert models[0].worker.stats.duplicates == 0


@pytest.mark.stack
def test_eval_command_through_stack_reports_it(
    kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("STREAMREC_REDIS_URL", redis_url)
    monkeypatch.chdir(tmp_path)  # no .streamrec/stack.env here: the variables above rule
    train, test = generated_sessions(300, 4), generated_sessions(30, 5)
    for name, events in (("train.csv", train), ("test.csv", test)):
        lines = ["ts,user_id,item_id,event_type,session_id"]
        lines += [f"{e.ts},{e.user_id},{e.item_id},{e.type},{e.session_id}" for e in events]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    args = (
        tmp_path / "train.csv",
        tmp_path / "test.csv",
        "events",
        "next-item",
        "frozen",
        [20],
        "session-knn",
    )
    memory = eval_command(*args, None, None, baselines=[])
    stacked = eval_command(*args, None, None, baselines=[], through_stack=True)
    assert stacked["info"]["through_stack"] is True
    assert stacked["n_targets"] == memory["n_targets"] > 20
    assert stacked["metrics"] == memory["metrics"]
