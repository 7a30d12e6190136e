"""``streamrec demo``: the whole path on a real public dataset, on the embedded stack."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.events import Event

RECBOLE_WHEEL = "recbole==1.2.1"  # the official wheel ships ML-100k (see shared/data/README.md)
ML100K_MEMBER = "recbole/dataset_example/ml-100k/"


def _candidates() -> list[Path]:
    here = Path(__file__).resolve().parents[1]
    return [
        Path.cwd().parent / "shared" / "data" / "ml-100k" / "ml-100k.inter",
        here.parent / "shared" / "data" / "ml-100k" / "ml-100k.inter",
        Path.cwd() / ".streamrec" / "cache" / "ml-100k" / "ml-100k.inter",
    ]


def _download_ml100k(console: Console) -> Path | None:
    """Fetch the RecBole wheel from PyPI and take ML-100k out of it; None when offline."""
    target = Path.cwd() / ".streamrec" / "cache" / "ml-100k"
    console.print(f"ML-100k not found locally: fetching it from PyPI ({RECBOLE_WHEEL} ships it)...")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, RECBOLE_WHEEL],
            capture_output=True,
            text=True,
            timeout=300,
        )
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if done.returncode != 0 or not wheels:
            console.print(f"[yellow]download failed[/yellow]: {done.stderr.strip()[-300:]}")
            return None
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in ("ml-100k.inter", "ml-100k.item"):
                (target / name).write_bytes(wheel.read(ML100K_MEMBER + name))
    return target / "ml-100k.inter"


def _dataset(
    console: Console, data: Path | None, limit: int | None
) -> tuple[list[Event], dict[str, str], str]:
    from engine.loaders import load_events

    path = data or next((p for p in _candidates() if p.is_file()), None) or _download_ml100k(console)
    if path is None:
        from engine.generator import generate_events

        console.print(
            "[yellow]No network and no local ML-100k: using the synthetic e-commerce generator "
            "(100,000 events) instead of real data.[/yellow]"
        )
        return generate_events(limit or 100_000), {}, "synthetic generator"
    titles: dict[str, str] = {}
    item_file = path.with_suffix(".item")
    if item_file.is_file():
        for line in item_file.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
            cells = line.split("\t")
            if len(cells) >= 2:
                titles[cells[0]] = cells[1]
    return load_events(path, "movielens", limit=limit), titles, str(path)


def run_demo(
    out: Console, console: Console, data: Path | None, limit: int | None, train_model: bool = True
) -> None:
    from consumers.reader import read_topic
    from deploy.runner import make_store, run_worker
    from deploy.settings import load_settings
    from deploy.stack import start_stack
    from engine.recommend import Recommender
    from engine.verify import verify_store
    from producers.replay import replay_events

    out.rule("1. the embedded stack")
    info = start_stack(Path.cwd())
    out.print(f"Kafka-protocol broker (Tansu) at {info.kafka_bootstrap}, Redis at {info.redis_url}")
    settings = load_settings()

    out.rule("2. replay a real event log into Kafka")
    events, titles, source = _dataset(console, data, limit)
    out.print(f"{len(events):,} events from {source}")
    from deploy.cli import _progress

    started = time.monotonic()
    with _progress() as bar:
        task = bar.add_task("replay", total=len(events))
        replay_events(events, settings.kafka, progress=lambda n: bar.advance(task, n))
    out.print(f"produced in {time.monotonic() - started:.1f} s")

    if train_model:
        out.rule("3. item embeddings (torch) + ANN index (FAISS), published to the workers")
        from deploy.models import train_and_publish
        from engine.state.redis_store import connect

        published = train_and_publish(events, settings, connect(settings.redis))
        out.print(
            f"{settings.train.model} on {len(events):,} events: {published.items:,} items in "
            f"{published.train_s:.1f} s; {published.index_kind} built in {published.build_s:.1f} s; "
            f"version {published.version}"
        )

    out.rule("4. engine workers: Kafka -> Redis state -> recommendations to Kafka")
    started = time.monotonic()
    stats = run_worker(settings, until_idle=True)
    elapsed = time.monotonic() - started
    out.print(
        f"consumed {stats.consumed:,} records in {elapsed:.1f} s ({stats.consumed / max(elapsed, 1e-9):,.0f}/s): "
        f"{stats.applied:,} applied, {stats.duplicates:,} duplicates ignored, "
        f"{stats.already_applied:,} already applied, {stats.dead_lettered:,} dead-lettered, "
        f"{stats.recs_published:,} recommendation lists published to {settings.kafka.recs_topic!r}"
    )

    out.rule("5. a few users: recent history next to their recommendations")
    store = make_store(settings)
    from deploy.models import ModelWatcher

    space = ModelWatcher(store.client, settings.redis.key_prefix).poll(force=True)
    recommender = Recommender(store, settings.engine, space)
    users = list(dict.fromkeys(e.user_id for e in reversed(events)))[:3]
    for user in users:
        profile, ranked = recommender.for_user(user, k=5)
        table = Table(f"user {user}: recently", "recommended now", "score", title=None)
        history = profile.history[:5]
        for i in range(max(len(history), len(ranked))):
            seen = titles.get(history[i], history[i]) if i < len(history) else ""
            rec, score = ranked[i] if i < len(ranked) else ("", 0.0)
            table.add_row(seen, titles.get(rec, rec), f"{score:.3f}" if rec else "")
        out.print(table)

    out.rule("6. verify: state rebuilt from the topic == state in Redis")
    records = read_topic(settings.kafka, settings.kafka.events_topic, upto=store.watermarks())
    _, mismatches = verify_store(records, store, settings.engine)
    out.print(
        "verify: [green]ok[/green]" if not mismatches else f"verify: [red]{len(mismatches)} mismatches[/red]"
    )
    out.print(
        "\nThe stack is still up: try `streamrec recommend USER`, `streamrec status`; "
        "stop it with `streamrec down`."
    )
