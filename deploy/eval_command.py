"""``streamrec eval``: run a protocol for one model and the baselines, print, write JSON and a plot.

The CLI wires :func:`eval_command` in; everything here is composition (load, evaluate, report).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from engine.errors import ConfigurationError, LoaderError
from engine.evaluation.base import Model
from engine.evaluation.protocols import MODES, PROTOCOLS, EvalResult, evaluate
from engine.evaluation.registry import ALIASES, MODELS, default_baselines, model_factory, preset_for
from engine.events import Event
from engine.loaders import FORMATS, load_events
from engine.sessionknn import PRESETS

PLOT_POINTS = 200


def eval_command(
    train: Path | None,
    test: Path,
    fmt: str,
    protocol: str,
    mode: str,
    ks: list[int],
    model: str,
    json_path: Path | None,
    plot_path: Path | None,
    *,
    baselines: Sequence[str] | None = None,
    warmup: float = 0.2,
    min_rating: float = 4.0,
    window: int | None = None,
    console: Console | None = None,
    through_stack: bool = False,
    limit: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` and ``baselines`` under ``protocol``; returns the JSON report (a dict).

    ``next-item`` needs ``train`` (the model is fitted on it) and scores ``test`` sessions;
    ``prequential`` replays ``test`` alone (``mode`` is always streaming there). ``baselines``
    defaults to :func:`~engine.evaluation.registry.default_baselines`. Raises
    :class:`~engine.errors.ConfigurationError` for bad options and
    :class:`~engine.errors.LoaderError` for unreadable logs. ``through_stack`` learns and serves
    the session model through Kafka, an engine worker and Redis (:mod:`deploy.eval_stack`);
    ``limit`` keeps the first ``limit`` test events.
    """
    console = console or Console()
    model = ALIASES.get(model, model)
    _check_options(train, fmt, protocol, mode, ks, model, baselines or (), warmup)
    ks = sorted(set(ks))
    started = time.perf_counter()
    train_events = load_events(train, fmt) if train is not None else None
    test_events = load_events(test, fmt)
    if limit is not None:
        test_events = test_events[:limit]
    if not test_events:
        raise LoaderError(f"{test.name}: no events")
    if baselines is None:
        baselines = default_baselines(protocol, any(e.rating is not None for e in test_events))
    categories = _categories(test, fmt, test_events if train_events is None else train_events + test_events)
    names = [model, *[b for b in baselines if b != model]]
    factories = {name: model_factory(name, protocol) for name in names}

    log = Console(stderr=True, quiet=console.quiet)

    def progress(name: str, done: int, total: int) -> None:
        if done % 10_000 == 0:
            log.log(f"{name}: {done:,} targets scored")

    with ExitStack() as resources:
        if through_stack:
            if model != "session-knn":
                raise ConfigurationError("--through-stack evaluates the engine's model: session-knn")
            factories[model] = _stack_factory(resources, protocol)
        results = evaluate(
            protocol,
            factories,
            test=test_events,
            train=train_events,
            ks=ks,
            mode="streaming" if protocol == "prequential" else mode,
            categories=categories,
            warmup=warmup,
            min_rating=min_rating,
            progress=progress,
        )
    main = results[model]
    if main.n_targets == 0:
        raise ConfigurationError("the protocol found no targets in this log: nothing to evaluate")
    window = window or max(100, main.n_targets // 20)
    report = _report(results, model, protocol, ks, window)
    report["info"].update(
        {
            "train": str(train) if train is not None else None,
            "test": str(test),
            "format": fmt,
            "warmup": warmup if protocol == "prequential" else None,
            "min_rating": min_rating if protocol == "prequential" else None,
            "categories": len(categories) if categories else 0,
            "seconds": round(time.perf_counter() - started, 1),
            "through_stack": through_stack,
            "test_events_limit": limit,
        }
    )
    _print(console, report, ks)
    if plot_path is not None:
        error = _plot(results, names, ks, window, plot_path)
        report["plot"] = None if error else str(plot_path)
        if error:
            report["plot_error"] = error
            console.print(f"[yellow]no plot written:[/yellow] {error}")
        else:
            console.print(f"plot written to {plot_path}")
    if json_path is not None:
        try:
            json_path.write_bytes(
                orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
            )
        except OSError as exc:
            raise ConfigurationError(f"cannot write {str(json_path)!r}: {exc.strerror or exc}") from None
        console.print(f"JSON report written to {json_path}")
    return report


# --- pieces --------------------------------------------------------------------------------------


def _stack_factory(resources: ExitStack, protocol: str) -> Callable[[], Model]:
    """A factory of the session model served from Kafka + worker + Redis, closed with ``resources``."""
    from deploy.eval_stack import StackSessionModel, stack_for_eval
    from deploy.settings import load_settings

    kafka, redis = resources.enter_context(stack_for_eval(load_settings()))
    preset = preset_for(protocol)

    def make() -> Model:
        model = StackSessionModel(kafka, redis, PRESETS[preset], preset)
        resources.callback(model.close)
        return model

    return make


def _check_options(
    train: Path | None,
    fmt: str,
    protocol: str,
    mode: str,
    ks: Sequence[int],
    model: str,
    baselines: Sequence[str],
    warmup: float,
) -> None:
    if fmt not in FORMATS:
        raise ConfigurationError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if protocol not in PROTOCOLS:
        raise ConfigurationError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if mode not in MODES:
        raise ConfigurationError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ConfigurationError(f"cut-offs must be positive integers, got {list(ks)}")
    for name in (model, *baselines):
        if name not in MODELS:
            names = ", ".join([*MODELS, *ALIASES])
            raise ConfigurationError(f"unknown model {name!r}; expected one of {names}")
    if protocol == "next-item" and train is None:
        raise ConfigurationError("the next-item protocol needs --train (the model is fitted on it)")
    if protocol == "prequential" and train is not None:
        raise ConfigurationError(
            "the prequential protocol replays one log: pass it as --test only (the first "
            f"{warmup:.0%} is the warm-up)"
        )
    if protocol == "prequential" and not 0 <= warmup < 1:
        raise ConfigurationError(f"warm-up must be a share in [0, 1), got {warmup}")


def _categories(test: Path, fmt: str, events: Sequence[Event]) -> dict[str, Collection[str]] | None:
    """Item -> category labels: from the events' ``category``, or MovieLens genres in the
    ``.item`` file next to the ``.inter`` file (RecBole layout). ``None`` when there are none."""
    found: dict[str, Collection[str]] = {}
    for event in events:
        if event.category is not None:
            found[event.item_id] = (event.category,)
    if fmt == "movielens":
        item_file = test.with_suffix(".item")
        if item_file.is_file():
            found.update(_movielens_genres(item_file))
    return found or None


def _movielens_genres(path: Path) -> dict[str, Collection[str]]:
    genres: dict[str, Collection[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return genres
    if not lines:
        return genres
    header = [name.split(":")[0] for name in lines[0].split("\t")]
    if "item_id" not in header or "class" not in header:
        return genres
    i_item, i_class = header.index("item_id"), header.index("class")
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) > max(i_item, i_class) and fields[i_class].strip():
            genres[fields[i_item].strip()] = tuple(fields[i_class].split())
    return genres


def _clean(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}


def _report(
    results: Mapping[str, EvalResult], model: str, protocol: str, ks: Sequence[int], window: int
) -> dict[str, Any]:
    main = results[model]
    curves: dict[str, dict[str, list[list[float]]]] = {}
    for name, result in results.items():
        if result.accumulator is None:
            continue
        curves[name] = {}
        for metric in _curve_metrics(ks):
            base, n = metric.split("@")
            xs, ys = result.accumulator.curve(base, int(n), window, PLOT_POINTS)
            curves[name][metric] = [[x, round(y, 6)] for x, y in zip(xs, ys, strict=True)]
    return {
        "n_targets": main.n_targets,
        "model": model,
        "protocol": protocol,
        "mode": main.mode,
        "ks": list(ks),
        "metrics": _clean(main.metrics),
        "segments": {s: _clean(v) for s, v in main.segments.items()},
        "baselines": {name: _clean(r.metrics) for name, r in results.items() if name != model},
        "details": {
            name: {"segments": {s: _clean(v) for s, v in r.segments.items()}, "info": r.info}
            for name, r in results.items()
        },
        "config": _config_of(model, protocol),
        "curves": {"window": window, "by_model": curves},
        "info": dict(main.info),
    }


def _config_of(model: str, protocol: str) -> dict[str, Any] | None:
    if model.startswith("session-knn"):
        return {"preset": preset_for(protocol), **PRESETS[preset_for(protocol)].to_dict()}
    return None


def _curve_metrics(ks: Sequence[int]) -> list[str]:
    return [f"HR@{ks[-1]}", f"MRR@{ks[-1]}", f"NDCG@{ks[0]}"]


def _print(console: Console, report: Mapping[str, Any], ks: Sequence[int]) -> None:
    rows: dict[str, Mapping[str, Any]] = {report["model"]: report["metrics"], **report["baselines"]}
    title = f"{report['protocol']} ({report['mode']}): {report['n_targets']:,} targets"
    accuracy = [f"{m}@{k}" for k in ks for m in ("HR", "MRR", "NDCG")]
    console.print(_table(title, report["model"], rows, accuracy, set(accuracy)))
    beyond = [
        c
        for c in (f"Coverage@{ks[-1]}", f"PopBias@{ks[-1]}", f"ILD@{ks[-1]}", "RMSE", "MAE")
        if any(c in r for r in rows.values())
    ]
    seconds = {
        name: {"seconds": d["info"].get("fit_s", 0.0) + d["info"].get("eval_s", 0.0)}
        for name, d in report["details"].items()
    }
    rows2 = {name: {**metrics, **seconds.get(name, {})} for name, metrics in rows.items()}
    console.print(_table("beyond accuracy", report["model"], rows2, [*beyond, "seconds"], set()))
    segments = report.get("segments") or {}
    if segments:
        columns = [f"HR@{ks[-1]}", f"MRR@{ks[-1]}", f"NDCG@{ks[0]}"]
        seg = Table(title=f"{report['model']} by segment")
        seg.add_column("segment", no_wrap=True)
        seg.add_column("targets", justify="right")
        for column in columns:
            seg.add_column(column, justify="right")
        for name, values in segments.items():
            seg.add_row(name, f"{values['n_targets']:,}", *(f"{values.get(c, 0.0):.4f}" for c in columns))
        console.print(seg)


def _table(
    title: str, model: str, rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], best_high: set[str]
) -> Table:
    """Models as rows; the best value of each column in ``best_high`` in bold."""
    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    best = {c: max((r.get(c, -math.inf) for r in rows.values()), default=None) for c in best_high}
    for name, metrics in rows.items():
        cells = []
        for column in columns:
            value = metrics.get(column)
            text = "-" if value is None else f"{value:.4f}" if column != "seconds" else f"{value:.1f}"
            if value is not None and best.get(column) == value:
                text = f"[bold]{text}[/bold]"
            cells.append(text)
        table.add_row(f"[bold]{name}[/bold]" if name == model else name, *cells)
    return table


def _plot(
    results: Mapping[str, EvalResult], names: Sequence[str], ks: Sequence[int], window: int, path: Path
) -> str | None:
    """Draw the sliding-window curves; returns why not, or ``None`` when the PNG was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib), so --plot cannot draw the curves"
    metrics = _curve_metrics(ks)
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 3.2 * len(metrics)), sharex=True)
    for ax, metric in zip(axes, metrics, strict=True):
        base, n = metric.split("@")
        for name in names:
            acc = results[name].accumulator
            if acc is None:
                continue
            xs, ys = acc.curve(base, int(n), window, 400)
            ax.plot(xs, ys, label=name, linewidth=2.0 if name == names[0] else 1.0)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    axes[-1].set_xlabel(f"targets (sliding window of {window:,})")
    fig.suptitle(f"{results[names[0]].protocol} ({results[names[0]].mode})")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        return f"cannot write {str(path)!r}: {exc.strerror or exc}"
    finally:
        plt.close(fig)
    return None
