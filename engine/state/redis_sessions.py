"""The session model (engine.sessionknn) kept in Redis: how touches are written, how a scorer reads.

Writes ride in the batch's one atomic Lua call (op ``Q`` of ``apply_batch.lua``, which repeats
:meth:`SessionKNN.touch <engine.sessionknn.SessionKNN.touch>` step for step), so they are applied
exactly once with the watermark. Keys, all in the partition's ``{p}`` slot::

    <prefix>:{p}:ss:<session>  list: the session's last items, oldest first (trimmed)
    <prefix>:{p}:sess          zset: session -> last timestamp (the oldest are evicted)
    <prefix>:{p}:is:<item>     zset: session -> timestamp, the item's most recent sessions (trimmed)
    <prefix>:{p}:ic            hash: item -> sessions that contained it (idf)
    <prefix>:{p}:r:<item>      zset: later item -> sequential-rule weight (trimmed)
    <prefix>:{p}:tr            zset: item -> forward-decayed count (epoch in meta ``trend_epoch``)
    <prefix>:{p}:meta          ``sessions``: sessions ever started

Reading never re-implements the scoring: :func:`partial_model` fetches, in four pipelined round
trips, exactly the slice of state that scoring some contexts looks at (merged over partitions)
into a fresh :class:`SessionKNN`, whose own ``scores`` then run unchanged. So the in-memory model
the evaluation uses and the Redis-backed one the workers use rank alike (a stack test checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine.evaluation.base import Context
from engine.logic import StateDelta
from engine.sessionknn import SessionKNN, SessionKNNConfig, sr_sources

# Trend entries fetched per partition to find the largest merged value.
TREND_TOP_FETCH = 100

Run = Callable[[Callable[[Any], None]], list[Any]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode_touches(delta: StateDelta, config: SessionKNNConfig, partitions: int) -> list[str]:
    """The ``Q`` op of ``apply_batch.lua`` for a delta's touches (empty when there are none)."""
    if not delta.touches:
        return []
    c = config
    args = [
        "Q",
        str(c.sr_steps if c.sr_weight > 0 else 0),
        repr(float(c.sr_distance_power)),
        "1" if c.sr_symmetric else "0",
        str(c.max_item_sessions),
        str(c.max_session_length),
        str(max(1, c.max_sessions // partitions)),
        str(c.max_rules),
        repr(float(c.trend_half_life_s)) if c.trend_weight > 0 else "0",
        str(len(delta.touches)),
    ]
    for sid, item, ts in delta.touches:
        args += [sid, item, repr(float(ts))]
    return args


def session_items(run: Run, bases: Sequence[str], located: dict[str, int]) -> dict[str, list[str]]:
    """Items of sessions whose partition is known (session -> partition), oldest first."""
    sids = list(located)
    replies = run(lambda pipe: [pipe.lrange(bases[located[s]] + "ss:" + s, 0, -1) for s in sids])
    return {sid: [_text(x) for x in reply] for sid, reply in zip(sids, replies, strict=True)}


def partial_model(
    run: Run, bases: Sequence[str], config: SessionKNNConfig, contexts: Sequence[Context]
) -> SessionKNN:
    """A :class:`SessionKNN` holding just what scoring ``contexts`` reads, fetched from Redis.

    ``run(fill)`` executes one pipeline: ``fill(pipe)`` queues commands, ``run`` returns the replies.
    """
    c = config
    model = SessionKNN(c)
    model.stamped_when_held = False  # it has the timestamps of more sessions than it loads
    parts = range(len(bases))
    context_items = sorted({i for ctx in contexts for i in ctx.items[-c.max_session_length :]})
    sources = sorted({s for ctx in contexts for s, _ in sr_sources(c, ctx.items)}) if c.sr_weight > 0 else []
    index_items = context_items if c.k > 0 else []
    trend_on = c.trend_weight > 0

    # 1. item -> sessions, rule rows, session counts and the trend scale of every partition
    def first(pipe: Any) -> None:
        for item in index_items:
            for p in parts:
                pipe.zrange(bases[p] + "is:" + item, 0, -1, withscores=True)
        for source in sources:
            for p in parts:
                pipe.zrange(bases[p] + "r:" + source, 0, -1, withscores=True)
        for p in parts:
            pipe.hmget(bases[p] + "meta", "sessions", "trend_epoch")
            if trend_on:
                pipe.zrevrange(bases[p] + "tr", 0, TREND_TOP_FETCH - 1, withscores=True)

    replies = iter(run(first))
    where: dict[str, int] = {}  # session -> its partition
    for item in index_items:
        found: list[tuple[float, str]] = []
        for p in parts:
            for sid, ts in next(replies):
                key = _text(sid)
                where[key] = p
                found.append((float(ts), key))
        if found:
            found.sort()
            model.item_sessions[item] = dict.fromkeys(sid for _, sid in found)
    for source in sources:
        merged: dict[str, float] = {}
        for _ in parts:
            for target, weight in next(replies):
                key = _text(target)
                merged[key] = merged.get(key, 0.0) + float(weight)
        for target, weight in merged.items():
            model.rules.add(source, target, weight)
    epochs: list[float | None] = []
    tops: list[list[tuple[Any, float]]] = []
    for _ in parts:
        sessions, epoch = next(replies)
        model.n_sessions += int(sessions or 0)
        epochs.append(float(epoch) if epoch is not None else None)
        tops.append(next(replies) if trend_on else [])

    # 2. the candidate sessions' last timestamps, so that the most recent `sample` are chosen
    by_partition: dict[int, list[str]] = {}
    for sid, p in where.items():
        by_partition.setdefault(p, []).append(sid)
    order = sorted(by_partition)
    stamps = run(lambda pipe: [pipe.zmscore(bases[p] + "sess", by_partition[p]) for p in order])
    for p, values in zip(order, stamps, strict=True):
        for sid, ts in zip(by_partition[p], values, strict=True):
            if ts is not None:
                model.session_ts[sid] = float(ts)
    wanted: dict[str, int] = {}
    if c.k > 0:
        for ctx in contexts:
            _, _, recent = model.candidates(ctx)
            wanted.update((sid, where[sid]) for sid in recent if sid in model.session_ts)

    # 3. the compared sessions' items
    for sid, items in session_items(run, bases, wanted).items():
        if items:
            model.sessions[sid] = items
            model.distinct[sid] = len(set(items))
            for item in items:  # the scorer addresses items by number
                model.rules.number(item)

    # 4. item session counts (idf, rule popularity) and the trend of every possible candidate
    counted = set(context_items)
    for items in model.sessions.values():
        counted.update(items)
    counted.update(model.rules.names)
    counted.update(_text(item) for rows in tops for item, _ in rows)
    counted_list = sorted(counted)
    need_counts = bool(c.idf_weight or c.sr_pop_norm)

    def fourth(pipe: Any) -> None:
        for p in parts:
            if need_counts and counted_list:
                pipe.hmget(bases[p] + "ic", counted_list)
            if trend_on and counted_list:
                pipe.zmscore(bases[p] + "tr", counted_list)

    if counted_list and (need_counts or trend_on):
        replies = iter(run(fourth))
        counts = np.zeros(len(counted_list))
        trend = np.zeros(len(counted_list))
        for p in parts:
            if need_counts:
                counts += np.array([float(v) if v is not None else 0.0 for v in next(replies)])
            if trend_on:
                scale = _trend_scale(epochs[p], epochs, c.trend_half_life_s)
                trend += scale * np.array([float(v) if v is not None else 0.0 for v in next(replies)])
        if need_counts:
            model.item_count = {i: int(n) for i, n in zip(counted_list, counts.tolist(), strict=True) if n}
            model.session_counts = np.array(
                [model.item_count.get(name, 0) for name in model.rules.names], float
            )
        if trend_on:
            model.trend = {i: v for i, v in zip(counted_list, trend.tolist(), strict=True) if v}
            # Every item of some partition's top list was fetched whole from every partition, so
            # this is the exact maximum unless the leader is below the top of every partition.
            model.trend_top = max(model.trend.values(), default=0.0)
    return model


def _trend_scale(epoch: float | None, epochs: Sequence[float | None], half_life_s: float) -> float:
    """Factor bringing a partition's trend scores to the common scale of the newest epoch."""
    known = [e for e in epochs if e is not None]
    if epoch is None or not known:
        return 0.0
    exponent = (epoch - max(known)) / half_life_s
    return 2.0**exponent if exponent > -1000 else 0.0


# Keys fetched per pipeline when reading a whole partition (bounds one reply's memory).
WHOLE_READ_CHUNK = 2000


def whole_model(
    run: Run, scan: Callable[[str], list[str]], bases: Sequence[str], config: SessionKNNConfig
) -> SessionKNN:
    """Every partition's session-model state merged into one :class:`SessionKNN`.

    The merge is :func:`partial_model`'s, over every key instead of a context's slice, so both
    score alike. ``scan(pattern)`` lists the keys matching a pattern. For a worker that owns every
    partition (its in-memory replica, see ``consumers.worker``); its cost grows with the state
    (bounded by the model's caps), so it runs on assignment, not per batch.
    """
    c = config
    model = SessionKNN(c)
    index: dict[str, list[tuple[float, str]]] = {}
    rules: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    stamps: dict[str, float] = {}
    epochs: list[float | None] = []
    trends: list[list[tuple[Any, float]]] = []
    for base in bases:
        meta, sess, ic, trend = run(
            lambda pipe, base=base: [
                pipe.hmget(base + "meta", "sessions", "trend_epoch"),
                pipe.zrange(base + "sess", 0, -1, withscores=True),
                pipe.hgetall(base + "ic"),
                pipe.zrange(base + "tr", 0, -1, withscores=True),
            ]
        )
        model.n_sessions += int(meta[0] or 0)
        epochs.append(float(meta[1]) if meta[1] is not None else None)
        stamps.update((_text(sid), float(ts)) for sid, ts in sess)
        for item, n in ic.items():
            key = _text(item)
            counts[key] = counts.get(key, 0) + int(n)
        trends.append(trend)
        for names, rows in _read_rows(run, scan, base + "is:"):
            for item, row in zip(names, rows, strict=True):
                found = index.setdefault(item, [])
                found.extend((float(ts), _text(sid)) for sid, ts in row)
        for names, rows in _read_rows(run, scan, base + "r:"):
            for source, row in zip(names, rows, strict=True):
                merged = rules.setdefault(source, {})
                for target, weight in row:
                    key = _text(target)
                    merged[key] = merged.get(key, 0.0) + float(weight)
        for names, rows in _read_rows(run, scan, base + "ss:", lists=True):
            for sid, items in zip(names, rows, strict=True):
                if items and sid in stamps:
                    model.sessions[sid] = [_text(x) for x in items]
    # Sessions in order of last activity (the eviction order), as the live model keeps them.
    order = sorted((stamps[sid], sid) for sid in model.sessions)
    ordered = {sid: model.sessions[sid] for _, sid in order}
    model.sessions.clear()
    model.sessions.update(ordered)
    for sid, items in ordered.items():
        model.session_ts[sid] = stamps[sid]
        model.distinct[sid] = len(set(items))
        for item in items:  # the scorer addresses items by number
            model.rules.number(item)
    for item in sorted(index):
        found = index[item]
        found.sort()
        model.item_sessions[item] = dict.fromkeys(sid for _, sid in found)
    for source in sorted(rules):
        for target, weight in rules[source].items():
            model.rules.add(source, target, weight)
    model.item_count = {item: n for item, n in counts.items() if n}
    for item in sorted(model.item_count):
        model.rules.number(item)
    model.session_counts = np.array([model.item_count.get(name, 0) for name in model.rules.names], float)
    if c.trend_weight > 0:
        known = [e for e in epochs if e is not None]
        for epoch, rows in zip(epochs, trends, strict=True):
            scale = _trend_scale(epoch, epochs, c.trend_half_life_s)
            for item, value in rows:
                key = _text(item)
                model.trend[key] = model.trend.get(key, 0.0) + scale * float(value)
        model.trend = {item: value for item, value in model.trend.items() if value}
        model.trend_epoch = max(known) if known else None
        model.trend_top = max(model.trend.values(), default=0.0)
    return model


def _read_rows(
    run: Run, scan: Callable[[str], list[str]], prefix: str, lists: bool = False
) -> list[tuple[list[str], list[Any]]]:
    """Every key under ``prefix``: its name after the prefix and its sorted-set (or list) contents,
    in chunks of :data:`WHOLE_READ_CHUNK` keys per pipeline."""
    keys = sorted(scan(prefix + "*"))
    out = []
    for start in range(0, len(keys), WHOLE_READ_CHUNK):
        chunk = keys[start : start + WHOLE_READ_CHUNK]
        if lists:
            rows = run(lambda pipe, chunk=chunk: [pipe.lrange(k, 0, -1) for k in chunk])
        else:
            rows = run(lambda pipe, chunk=chunk: [pipe.zrange(k, 0, -1, withscores=True) for k in chunk])
        out.append(([k[len(prefix) :] for k in chunk], rows))
    return out
