"""The `streamrec` commands as a user runs them, against the real embedded broker and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from engine.generator import generate_events
from engine.loaders import write_events_csv
from producers.kafka import KafkaSettings

pytestmark = pytest.mark.stack
STREAMREC = [sys.executable, "-m", "deploy.cli"]


def _env(kafka: KafkaSettings, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        STREAMREC_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        STREAMREC_KAFKA_EVENTS_TOPIC=kafka.events_topic,
        STREAMREC_KAFKA_DLQ_TOPIC=kafka.dlq_topic,
        STREAMREC_KAFKA_RECS_TOPIC=kafka.recs_topic,
        STREAMREC_KAFKA_GROUP_ID=kafka.group_id,
        STREAMREC_REDIS_URL=redis_url,
    )
    return env


def _cli(
    args: list[str], env: dict[str, str], cwd: Path, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    env = env | {"PYTHONPATH": str(root)}
    done = subprocess.run(STREAMREC + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if ok:
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def test_replay_run_verify_recommend(kafka_settings: KafkaSettings, redis_url: str, tmp_path: Path) -> None:
    events = generate_events(3000, n_users=100, n_items=300, seed=3)
    log = tmp_path / "log.csv"
    write_events_csv(events, log)
    env = _env(kafka_settings, redis_url)

    replayed = _cli(["replay", str(log), "--format", "events"], env, tmp_path)
    assert "replayed 3,000 events" in replayed.stdout

    ran = _cli(["run", "--workers", "2", "--until-idle"], env, tmp_path)
    assert "3,000 records" in ran.stdout

    report = orjson.loads(_cli(["verify", "--json"], env, tmp_path).stdout)
    assert report["ok"] is True and report["mismatches"] == []
    assert report["records_checked"] == 3000

    user = events[-1].user_id
    recs = orjson.loads(_cli(["recommend", user, "-k", "5", "--json"], env, tmp_path).stdout)
    assert len(recs["items"]) == 5
    assert not set(recs["items"]) & set(recs["purchased"])
    assert recs["history"][0] == events[-1].item_id

    status = orjson.loads(_cli(["status", "--json"], env, tmp_path).stdout)
    assert set(status["lag"].values()) == {0}

    # Tamper with the state as a double-applied batch would: verify must notice and exit 1.
    client = redis.Redis.from_url(redis_url)
    # (The default keeps no co-occurrence rows beside the session model: popularity is what doubles.)
    key = next(iter(client.scan_iter(match="sr:{*}:pop")))
    member, weight = client.zrevrange(key, 0, 0, withscores=True)[0]
    client.zincrby(key, weight, member)
    broken = _cli(["verify", "--json"], env, tmp_path, ok=False)
    assert broken.returncode == 1
    report = orjson.loads(broken.stdout)
    assert report["ok"] is False
    assert any(m["what"] == "popularity" for m in report["mismatches"])


def test_clear_error_without_a_broker(tmp_path: Path) -> None:
    env = dict(os.environ) | {
        "STREAMREC_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "STREAMREC_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    done = _cli(["recommend", "u1"], env, tmp_path, ok=False)
    assert done.returncode == 2
    assert "error:" in done.stderr and "Traceback" not in done.stderr
