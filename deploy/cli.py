"""The ``streamrec`` command line: one entry point, one sub-command per job (see README)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from deploy.settings import load_settings
from engine.errors import StreamrecError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="streamrec: real-time recommendations.")
console = Console(stderr=True)
out = Console()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@app.command()
def up(partitions: Annotated[int, typer.Option(help="partitions of the topics")] = 4) -> None:
    """Start the embedded broker (Tansu) and Redis on free loopback ports, and create the topics."""
    from deploy.stack import start_stack

    info = start_stack(Path.cwd(), partitions=partitions)
    out.print(f"kafka  {info.kafka_bootstrap}  (pid {info.broker_pid})")
    out.print(f"redis  {info.redis_url}  (pid {info.redis_pid})")
    out.print("settings written to .streamrec/stack.env; stop with `streamrec down`")


@app.command()
def down() -> None:
    """Stop the embedded stack started from this directory (by PID) and remove its settings."""
    from deploy.stack import stop_stack

    stopped = stop_stack(Path.cwd())
    out.print("\n".join(stopped) if stopped else "nothing was running")


@app.command()
def status(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Say what is up: embedded processes, connections, consumer lag and partition watermarks."""
    from deploy.stack import stack_status

    report: dict[str, object] = {"stack": stack_status(Path.cwd())}
    settings = load_settings()
    try:
        from consumers.offsets import group_lag
        from deploy.runner import make_store

        report["lag"] = group_lag(settings.kafka)
        report["watermarks"] = make_store(settings).watermarks()
    except StreamrecError as exc:
        report["error"] = str(exc)
    if json_out:
        out.print_json(orjson.dumps(report, option=orjson.OPT_NON_STR_KEYS).decode())
        return
    for name, value in report.items():
        out.print(f"[bold]{name}[/bold]: {value}")


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="event log file")],
    fmt: Annotated[
        str, typer.Option("--format", help="events|yoochoose|movielens|taobao|retailrocket")
    ] = "events",
    rate: Annotated[
        float | None, typer.Option(help="events per second (default: as fast as possible)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="replay only the first N events (by time)")] = None,
) -> None:
    """Produce an event log to the events topic in timestamp order, keyed by user."""
    from engine.loaders import load_events
    from producers.replay import replay_events

    settings = load_settings()
    events = load_events(path, fmt, limit=limit)
    started = time.monotonic()
    with _progress() as bar:
        task = bar.add_task("replay", total=len(events))
        count = replay_events(events, settings.kafka, rate=rate, progress=lambda n: bar.advance(task, n))
    elapsed = time.monotonic() - started
    out.print(
        f"replayed {count:,} events to {settings.kafka.events_topic!r} in {elapsed:.1f} s "
        f"({count / max(elapsed, 1e-9):,.0f} events/s)"
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@app.command()
def run(
    workers: Annotated[int, typer.Option(help="worker processes in the consumer group")] = 1,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="exit once the group's lag is zero")
    ] = False,
    max_seconds: Annotated[float | None, typer.Option(help="stop after this long")] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="serve Prometheus /metrics here (worker i of N: port + i)"),
    ] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="log one JSON object per line")] = False,
) -> None:
    """Run the engine workers: consume events, update Redis, publish recommendations."""
    from consumers.metrics import configure_logging
    from deploy.runner import run_workers

    settings = load_settings()
    chosen = {"metrics_port": metrics_port, "log_json": log_json or None}
    settings.observability = settings.observability.model_copy(
        update={k: v for k, v in chosen.items() if v is not None}
    )
    if settings.observability.log_json:
        configure_logging(logging.getLogger().level, True, "")
    if not until_idle:
        logging.getLogger("streamrec").setLevel(logging.INFO)
    started = time.monotonic()
    stats = run_workers(settings, workers, until_idle, max_seconds)
    elapsed = time.monotonic() - started
    consumed = sum(s["consumed"] for s in stats)
    table = Table("worker", "consumed", "applied", "duplicates", "skipped", "dead-lettered", "recs published")
    for i, s in enumerate(stats):
        table.add_row(
            str(i),
            *(
                f"{s[k]:,}"
                for k in (
                    "consumed",
                    "applied",
                    "duplicates",
                    "already_applied",
                    "dead_lettered",
                    "recs_published",
                )
            ),
        )
    out.print(table)
    out.print(f"{consumed:,} records in {elapsed:.1f} s ({consumed / max(elapsed, 1e-9):,.0f} records/s)")


@app.command()
def recommend(
    user: Annotated[str, typer.Argument(help="user id")],
    k: Annotated[int, typer.Option("-k", help="how many")] = 20,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recommendations for one user from the current state."""
    from deploy.models import ModelWatcher
    from deploy.runner import make_store
    from engine.recommend import Recommender

    settings = load_settings()
    store = make_store(settings)
    space = ModelWatcher(store.client, settings.redis.key_prefix).poll(force=True)
    profile, ranked = Recommender(store, settings.engine, space).for_user(user, k)
    if json_out:
        payload = {
            "user_id": user,
            "items": [i for i, _ in ranked],
            "scores": [s for _, s in ranked],
            "history": profile.history,
            "purchased": sorted(profile.purchased),
        }
        out.print_json(orjson.dumps(payload).decode())
        return
    out.print(f"user {user}: {len(profile.history)} recent items, {len(profile.purchased)} purchased")
    table = Table("#", "item", "score")
    for rank, (item, score) in enumerate(ranked, 1):
        table.add_row(str(rank), item, f"{score:.4f}")
    out.print(table)


@app.command()
def verify(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Rebuild the state from the events topic in memory and compare it with Redis; exit 1 on mismatch."""
    from consumers.reader import read_topic
    from deploy.runner import make_store
    from engine.verify import verify_store

    settings = load_settings()
    store = make_store(settings)
    watermarks = store.watermarks()
    records = read_topic(settings.kafka, settings.kafka.events_topic, upto=watermarks)
    oracle, mismatches = verify_store(records, store, settings.engine)
    checked = sum(len(r) for r in records.values())
    report = {
        "ok": not mismatches,
        "records_checked": checked,
        "watermarks": watermarks,
        "mismatches": [m.to_dict() for m in mismatches[:200]],
        "mismatch_count": len(mismatches),
    }
    if json_out:
        sys.stdout.write(
            orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
        )
    else:
        for m in mismatches[:50]:
            out.print(
                f"partition {m.partition} {m.what} {m.key}: expected {m.expected!r}, found {m.actual!r}"
            )
        verdict = "[green]ok[/green]" if not mismatches else f"[red]{len(mismatches)} mismatches[/red]"
        out.print(f"verify: {verdict} ({checked:,} records up to watermarks {watermarks})")
    if mismatches:
        raise typer.Exit(1)


@app.command()
def train(
    events: Annotated[Path | None, typer.Option(help="event log file to train on")] = None,
    fmt: Annotated[str, typer.Option("--format", help="format of --events")] = "events",
    from_topic: Annotated[bool, typer.Option("--from-topic", help="train on the whole events topic")] = False,
    model: Annotated[str | None, typer.Option(help="item2vec or mf (default: settings)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda")] = None,
    epochs: Annotated[int | None, typer.Option(help="maximum epochs")] = None,
    items: Annotated[Path | None, typer.Option(help="item metadata (ML-100k .item) for cold items")] = None,
    publish_model: Annotated[bool, typer.Option("--publish/--no-publish", help="point workers at it")] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="write a JSON report here")] = None,
    nproc: Annotated[
        int,
        typer.Option(min=1, help="data-parallel training processes (torch DDP: gloo on CPU, NCCL on GPU)"),
    ] = 1,
) -> None:
    """Train item embeddings, build the ANN index, and publish the version to the workers."""
    from deploy.models import events_from_topic, publish
    from deploy.models import train as fit
    from engine.loaders import load_events
    from engine.state.redis_store import connect

    settings = load_settings()
    overrides = {
        k: v for k, v in {"model": model, "device": device, "epochs": epochs}.items() if v is not None
    }
    settings.train = settings.train.model_copy(update=overrides)
    if (events is None) == (not from_topic):
        _fail("give either --events PATH or --from-topic")
    log_events = events_from_topic(settings.kafka) if from_topic else load_events(events, fmt)
    out.print(
        f"training {settings.train.model} on {len(log_events):,} events ({settings.train.device} device)"
    )
    history: list[dict[str, float | None]] = []

    started = time.monotonic()
    with _progress() as bar:
        task = bar.add_task("epochs", total=settings.train.epochs)

        def progress(epoch: int, loss: float, metric: float | None) -> None:
            history.append({"epoch": epoch, "loss": loss, "validation_hr": metric})
            shown = f", validation HR@{settings.train.eval_k} {metric:.4f}" if metric is not None else ""
            bar.console.print(f"epoch {epoch}: loss {loss:.4f}{shown}")
            bar.update(task, completed=epoch)

        if nproc > 1:
            from models.distributed import fit_distributed

            embeddings = fit_distributed(log_events, settings.train, nproc, progress)
        else:
            embeddings = fit(log_events, settings.train, progress)
        bar.update(task, completed=settings.train.epochs)  # early stopping ends the bar too
    train_s = time.monotonic() - started
    cold = 0
    if items is not None:
        from deploy.models import add_cold_items
        from models.content import load_movielens_items

        embeddings, cold = add_cold_items(embeddings, load_movielens_items(items))
        out.print(f"{cold:,} cold items got content (TF-IDF) vectors")
    report: dict[str, object] = {
        "cold_items": cold,
        "model": settings.train.model,
        "items": len(embeddings),
        "dim": embeddings.dim,
        "events": len(log_events),
        "train_s": round(train_s, 3),
        "epochs": history,
        "device": embeddings.metadata.get("device"),
    }
    if publish_model:
        published = publish(
            embeddings,
            settings.model,
            settings.index,
            connect(settings.redis),
            settings.redis.key_prefix,
            train_s,
        )
        report |= {
            "version": published.version,
            "path": str(published.path),
            "index": published.index_kind,
            "build_s": round(published.build_s, 3),
            "aligned_on": published.aligned_on,
        }
        out.print(
            f"published {published.version} ({published.items:,} items, {published.index_kind}, "
            f"index built in {published.build_s:.1f} s) to {published.path}"
        )
    else:
        path = embeddings.save(settings.model.dir)
        report |= {"version": embeddings.version, "path": str(path)}
        out.print(f"saved {embeddings.version} to {path} (not published)")
    out.print(f"trained in {train_s:.1f} s")
    if json_path:
        json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


@app.command("eval")
def evaluate(
    test: Annotated[Path, typer.Option(help="test log (the whole log for --protocol prequential)")],
    train: Annotated[Path | None, typer.Option(help="training log (next-item protocol)")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="yoochoose, movielens, taobao, events, retailrocket")
    ] = "events",
    protocol: Annotated[str, typer.Option(help="next-item or prequential")] = "next-item",
    mode: Annotated[str, typer.Option(help="frozen or streaming (next-item)")] = "frozen",
    k: Annotated[str, typer.Option("--k", help="cut-offs, comma-separated")] = "10,20",
    model: Annotated[str, typer.Option(help="the model to evaluate")] = "default",
    json_path: Annotated[Path | None, typer.Option("--json", help="write the JSON report here")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG of the sliding-window curves")] = None,
    through_stack: Annotated[
        bool,
        typer.Option(
            "--through-stack",
            help="learn through Kafka + an engine worker + Redis and score from Redis (session-knn)",
        ),
    ] = False,
    limit: Annotated[int | None, typer.Option(help="use only the first N test events")] = None,
    baselines: Annotated[
        str | None, typer.Option(help="comma-separated baselines (default: all; '' for none)")
    ] = None,
) -> None:
    """Quality report: the engine and built-in baselines on the same protocol (HR, MRR, NDCG, ...)."""
    from deploy.eval_command import eval_command

    try:
        ks = [int(x) for x in k.split(",") if x.strip()]
    except ValueError:
        _fail(f"--k must be comma-separated integers, got {k!r}")
    chosen = None if baselines is None else [b.strip() for b in baselines.split(",") if b.strip()]
    try:
        eval_command(
            train,
            test,
            fmt,
            protocol,
            mode,
            ks,
            model,
            json_path,
            plot,
            baselines=chosen,
            through_stack=through_stack,
            limit=limit,
        )
    except StreamrecError as exc:
        _fail(str(exc))


@app.command()
def demo(
    data: Annotated[
        Path | None, typer.Option(help="ML-100k .inter file (default: ../shared/data or download)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="replay only the first N events")] = None,
    train_model: Annotated[bool, typer.Option("--train/--no-train", help="train embeddings + index")] = True,
) -> None:
    """The whole story on a real dataset: up, replay, train, run until idle, show recommendations."""
    from deploy.demo import run_demo

    run_demo(out, console, data, limit, train_model)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="listen address (default: STREAMREC_GATEWAY_HOST)")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="listen port (default: STREAMREC_GATEWAY_PORT)")
    ] = None,
) -> None:
    """Gateway: live recommendations (WebSocket/SSE), HTTP pull, event intake, storefront page."""
    from deploy.gateway.server import load_gateway_settings, serve_gateway

    logging.getLogger("streamrec").setLevel(logging.INFO)
    serve_gateway(
        load_settings(), load_gateway_settings(), host, port, lambda m: out.print(m, soft_wrap=True)
    )


@app.command()
def bench(
    which: Annotated[str, typer.Argument(help="ingest, latency, ann, train or all")] = "all",
    json_path: Annotated[Path | None, typer.Option("--json", help="write the JSON report here")] = None,
    events: Annotated[int, typer.Option(min=1, help="ingest: events to replay (e.g. 10000000)")] = 200_000,
    workers: Annotated[int, typer.Option(min=1, help="ingest: worker processes")] = 1,
    partitions: Annotated[int, typer.Option(min=1, help="partitions of the bench topics")] = 4,
    peers: Annotated[
        bool, typer.Option("--peers/--no-peers", help="ingest: run the Faust and naive peers")
    ] = True,
    peer_events: Annotated[int, typer.Option(min=1, help="ingest: events each peer processes")] = 20_000,
    profile: Annotated[
        Path | None, typer.Option(help="ingest: cProfile the workers into PATH.<i>.prof")
    ] = None,
    rates: Annotated[str, typer.Option(help="latency: offered events/s, comma-separated")] = "2000,10000",
    duration: Annotated[float, typer.Option(min=1, help="latency: seconds per rate")] = 10.0,
    warmup_events: Annotated[
        int, typer.Option(min=0, help="latency: events applied before measuring")
    ] = 50_000,
    poll_timeout: Annotated[float | None, typer.Option(help="latency: worker poll timeout (s)")] = None,
    fetch_wait_ms: Annotated[
        int | None, typer.Option(help="latency what-if: worker fetch.wait.max.ms")
    ] = None,
    reader_fetch_wait_ms: Annotated[
        int,
        typer.Option(
            min=0,
            help="latency: fetch.wait.max.ms of the bench's recs reader (the storefront; the embedded "
            "broker holds each fetch that long, so lower is a shorter last hop and more broker work)",
        ),
    ] = 5,
    ann_sizes: Annotated[str, typer.Option(help="ann: catalogue sizes, comma-separated")] = "100000",
    hnsw_m: Annotated[int, typer.Option(min=4, help="ann: HNSW links per node")] = 32,
    ef_construction: Annotated[int, typer.Option(min=8, help="ann: HNSW build beam width")] = 100,
    ef_search: Annotated[str, typer.Option(help="ann: HNSW efSearch list")] = "32,64,96,128",
    nprobe: Annotated[str, typer.Option(help="ann: IVF nprobe values, comma-separated")] = "8,16,32,48",
    train_events: Annotated[int, typer.Option(min=100, help="train: generator events")] = 200_000,
    train_epochs: Annotated[int, typer.Option(min=1, help="train: maximum epochs")] = 10,
    existing_stack: Annotated[
        bool, typer.Option("--existing-stack", help="use the configured stack instead of starting one")
    ] = False,
    users: Annotated[int, typer.Option(min=1, help="ingest, latency: generator users")] = 20_000,
    session_gap_s: Annotated[
        float,
        typer.Option(
            min=0.0001,
            help="ingest, latency: mean seconds between session starts (30: a log replayed fast, ~5 "
            "sessions open at once; 0.01 with --users 200000: a live stream's shape, ~1,650 users a "
            "2,000-event poll)",
        ),
    ] = 30.0,
) -> None:
    """Speed report: ingest throughput (+ Faust and naive peers), latency, ANN, training."""
    from deploy.bench import SUITES, BenchOptions, run_benchmarks
    from deploy.bench.common import StreamShape
    from deploy.bench.report import show, write_json

    logging.getLogger("streamrec.bench").setLevel(logging.INFO)  # progress of long runs

    suites = list(SUITES) if which == "all" else [which]
    try:
        options = BenchOptions(
            events=events, workers=workers, partitions=partitions, peers=peers, peer_events=peer_events,
            profile=profile, rates=[float(r) for r in rates.split(",") if r.strip()], duration_s=duration,
            warmup_events=warmup_events, poll_timeout_s=poll_timeout, fetch_wait_ms=fetch_wait_ms,
            reader_fetch_wait_ms=reader_fetch_wait_ms,
            ann_sizes=[int(n) for n in ann_sizes.split(",") if n.strip()], hnsw_m=hnsw_m,
            ef_search=[int(n) for n in ef_search.split(",") if n.strip()],
            nprobe=[int(n) for n in nprobe.split(",") if n.strip()],
            ef_construction=ef_construction, train_events=train_events, train_epochs=train_epochs,
            use_existing_stack=existing_stack, stream=StreamShape(users, session_gap_s),
        )  # fmt: skip
        results = run_benchmarks(suites, options)
    except ValueError as exc:
        _fail(str(exc))
    if json_path:
        write_json(json_path, results)
    show(out, results)
    if json_path:
        out.print(f"JSON written to {json_path}")
    if results["meta"]["failed"]:
        raise typer.Exit(1)


@app.command("config")
def show_config() -> None:
    """Print the settings in effect (secrets masked)."""
    out.print_json(orjson.dumps(load_settings().describe()).decode())


def main() -> None:
    try:
        app()
    except StreamrecError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
