"""Pure logic: a batch of events plus what the store knew before it -> the state delta to apply.

No I/O here. The Redis and in-memory stores apply the same :class:`StateDelta`, the worker and the
offline evaluation compute it with the same function, and ``streamrec verify`` rebuilds the expected
state with it, so there is one definition of what an event does to the state.

>>> from engine.config import EngineSettings
>>> from engine.events import Event
>>> events = [Event("e1", 1e9, "u", "a", "view"), Event("e2", 1e9 + 5, "u", "b", "purchase")]
>>> delta = compute_delta(0, [(10, events[0]), (11, events[1])], {}, PartitionMeta(), EngineSettings(cooccurrence_rows="on"))
>>> delta.history["u"], delta.purchases["u"], delta.last_offset
(['a', 'b'], ['b'], 11)
>>> round(delta.cooccurrence["a"]["b"], 3)  # purchase weight 5 x distance-1 factor 1.0
5.0
>>> # by default the rows are kept only where they rank: with the session model off
>>> compute_delta(0, [(10, events[0]), (11, events[1])], {}, PartitionMeta(), EngineSettings()).cooccurrence
{}
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.config import EngineSettings
from engine.embeddings import EmbeddingSpace, vector_from_history
from engine.events import EVENT_TYPES, Event

# Rebase the popularity epoch once scores would grow past 2**REBASE_AFTER_HALF_LIVES.
REBASE_AFTER_HALF_LIVES = 60.0


@dataclass(slots=True)
class UserState:
    """What the delta needs to know about a user before the batch."""

    history: list[str] = field(default_factory=list)  # most recent first
    seen: set[str] = field(default_factory=set)  # ids of this batch's events already applied
    session_id: str | None = None
    session_last_ts: float | None = None
    vector: np.ndarray | None = None  # the user's embedding, in space `vector_version`
    vector_version: str | None = None
    # The whole stored dedup window (event id -> ts), loaded only when the batch could push out of
    # it an id that the batch checks (see window_needed); ``seen`` alone decides otherwise.
    window: dict[str, float] | None = None


def needs_history(settings: EngineSettings, space: EmbeddingSpace | None) -> bool:
    """Whether :func:`compute_delta` reads the users' prior histories: to pair an event with the
    items before it (co-occurrence rows kept) or to start a user's vector in ``space``. Otherwise
    a store's load may leave them out (the batch's own items still form the delta's history)."""
    return settings.keeps_cooccurrence or space is not None


def push_history(history: list[str], items: Sequence[str], length: int) -> None:
    """Put a delta's ``items`` (oldest first) in front of a stored ``history`` (most recent first),
    keeping ``length`` items: what every store does with :attr:`StateDelta.history`."""
    if items:
        history[:0] = reversed(items)
        del history[length:]


def window_needed(found: bool, event_ids: Sequence[str], stored: int, size: int) -> bool:
    """Whether a user's batch needs the whole stored dedup window: some of its ``event_ids`` are
    in the window (``found``) or repeat within the batch, and the window (``stored`` ids, at most
    ``size`` kept) could overflow while the batch is applied, so that an id checked later in the
    batch may have left it by then. (The Redis store's read script decides the same way.)"""
    if stored + len(event_ids) <= size:
        return False
    return found or len(set(event_ids)) < len(event_ids)


class DedupWindow:
    """A user's dedup window while a batch is applied: the ``size`` newest ids by (ts, id), as the
    stores keep them, updated after every applied event, so that an event is a duplicate exactly
    when it would be with the batch cut anywhere else.

    >>> window = DedupWindow({"e1": 1.0, "e2": 2.0}, size=2)
    >>> window.add("e3", 3.0)
    >>> "e1" in window, "e2" in window
    (False, True)
    """

    def __init__(self, stored: Mapping[str, float], size: int) -> None:
        self.size = size
        self._ts = dict(stored)
        # str order is the UTF-8 byte order the stores rank ties by (engine.state.base.keep_strongest)
        self._heap = [(ts, event_id) for event_id, ts in self._ts.items()]
        heapq.heapify(self._heap)
        self._trim()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ts

    def add(self, event_id: str, ts: float) -> None:
        """An applied event (whose id is not in the window)."""
        self._ts[event_id] = ts
        heapq.heappush(self._heap, (ts, event_id))
        self._trim()

    def _trim(self) -> None:
        while len(self._ts) > self.size:
            _, event_id = heapq.heappop(self._heap)
            del self._ts[event_id]


@dataclass(slots=True)
class PartitionMeta:
    """Per-partition bookkeeping stored next to the watermark."""

    watermark: int = -1  # last applied offset; -1 before the first batch
    popularity_epoch: float | None = None


@dataclass(slots=True)
class StateDelta:
    """Everything one batch changes, aggregated per key; applied atomically with the watermark."""

    partition: int
    expected_watermark: int
    last_offset: int
    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    history: dict[str, list[str]] = field(default_factory=dict)  # user -> items, oldest first
    purchases: dict[str, list[str]] = field(default_factory=dict)
    seen: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # user -> (event id, ts)
    sessions: dict[str, tuple[str, float]] = field(default_factory=dict)
    cooccurrence: dict[str, dict[str, float]] = field(default_factory=dict)
    popularity: dict[str, float] = field(default_factory=dict)
    popularity_epoch: float | None = None
    # Multiplies the stored popularity scores before this batch's increments (epoch rebase).
    popularity_rescale: float = 1.0
    user_vectors: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)  # user -> (vector, version)
    # Session-model touches in event order: (session, item, ts); see engine.sessionknn.SessionKNN.touch.
    touches: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def touched_users(self) -> list[str]:
        return list(self.history)


def _session_for(event: Event, state: UserState, gap_s: float) -> str:
    if event.session_id is not None:
        return event.session_id
    last = state.session_last_ts
    if state.session_id is None or last is None or event.ts - last > gap_s:
        return f"{event.user_id}@{int(event.ts)}"
    return state.session_id


def _add(table: dict[str, dict[str, float]], a: str, b: str, weight: float) -> None:
    row = table.get(a)
    if row is None:
        row = table[a] = {}
    row[b] = row.get(b, 0.0) + weight


def compute_delta(
    partition: int,
    records: Sequence[tuple[int, Event]],
    users: Mapping[str, UserState],
    meta: PartitionMeta,
    settings: EngineSettings,
    invalid: int = 0,
    last_offset: int | None = None,
    space: EmbeddingSpace | None = None,
) -> StateDelta:
    """Fold a partition's batch of ``(offset, event)`` records into one delta.

    ``records`` must already exclude offsets at or below the watermark. ``users`` holds the prior
    state of every user in the batch (missing users start empty); it is not modified. With an
    embedding ``space``, each event also moves its user's vector towards the item's.
    """
    offsets = [offset for offset, _ in records]
    final_offset = last_offset if last_offset is not None else (max(offsets) if offsets else meta.watermark)
    delta = StateDelta(partition, meta.watermark, final_offset, invalid=invalid)

    epoch = meta.popularity_epoch
    if records:
        newest = max(event.ts for _, event in records)
        if epoch is None:
            epoch = newest
        elif (newest - epoch) / settings.popularity_half_life_s > REBASE_AFTER_HALF_LIVES:
            delta.popularity_rescale = 2.0 ** ((epoch - newest) / settings.popularity_half_life_s)
            epoch = newest
    delta.popularity_epoch = epoch

    working: dict[str, UserState] = {}
    windows: dict[str, DedupWindow] = {}  # users whose batch may push checked ids out of the window
    session_model = settings.session_model
    item_vectors = space.vectors({e.item_id for _, e in records}) if space is not None else {}
    # no earlier item is paired when the rows are not kept (EngineSettings.cooccurrence_rows)
    window = settings.cooccurrence_window if settings.keeps_cooccurrence else 0
    decay = settings.cooccurrence_decay
    # settings read once a batch, not once an event
    type_weights = {event_type: settings.type_weight(event_type) for event_type in EVENT_TYPES}
    history_length, user_decay = settings.history_length, settings.user_vector_decay
    half_life, session_gap = settings.popularity_half_life_s, settings.session_gap_s
    for _, event in records:
        user = event.user_id
        state = working.get(user)
        if state is None:
            prior = users.get(user) or UserState()
            state = working[user] = UserState(
                list(prior.history), set(prior.seen), prior.session_id, prior.session_last_ts
            )
            if prior.window is not None:
                windows[user] = DedupWindow(prior.window, settings.dedup_window)
            if space is not None:
                if prior.vector is not None and prior.vector_version == space.version:
                    state.vector = prior.vector
                else:  # first event in this space: start from the history
                    state.vector = vector_from_history(prior.history, space, settings.user_vector_decay)
                state.vector_version = space.version
        dedup = windows.get(user) if windows else None
        if dedup is not None:
            if event.event_id in dedup:
                delta.duplicates += 1
                continue
            dedup.add(event.event_id, event.ts)
        else:
            if event.event_id in state.seen:
                delta.duplicates += 1
                continue
            state.seen.add(event.event_id)
        delta.applied += 1
        delta.seen.setdefault(user, []).append((event.event_id, event.ts))

        weight = type_weights[event.type]
        item = event.item_id
        factor = 1.0
        for earlier in state.history[:window]:
            if earlier != item:
                _add(delta.cooccurrence, earlier, item, weight * factor)
                _add(delta.cooccurrence, item, earlier, weight * factor)
            factor *= decay
        state.history.insert(0, item)
        del state.history[history_length:]
        delta.history.setdefault(user, []).append(item)
        if event.type == "purchase":
            delta.purchases.setdefault(user, []).append(item)
        item_vector = item_vectors.get(item)
        if item_vector is not None:
            vector = state.vector
            state.vector = (
                weight * item_vector if vector is None else user_decay * vector + weight * item_vector
            )

        assert epoch is not None
        boost = weight * 2.0 ** ((event.ts - epoch) / half_life)
        delta.popularity[item] = delta.popularity.get(item, 0.0) + boost

        session = _session_for(event, state, session_gap)
        last_ts = (
            max(event.ts, state.session_last_ts or event.ts) if session == state.session_id else event.ts
        )
        state.session_id, state.session_last_ts = session, last_ts
        delta.sessions[user] = (session, last_ts)
        if session_model != "off":
            delta.touches.append((model_session(event, session, session_model), item, event.ts))
    # A user whose every event was a duplicate is still "touched": the worker republishes their recs.
    for user, state in working.items():
        delta.history.setdefault(user, [])
        if state.vector is not None and state.vector_version is not None:
            delta.user_vectors[user] = (state.vector.astype(np.float32), state.vector_version)
    return delta


def model_session(event: Event, engine_session: str, session_model: str) -> str:
    """The session the session model files an event under: with the ``users`` preset (``by_user``)
    the user (a whole history is one sequence), else the shop's session id when the event has one, else the
    engine's inactivity-gap session."""
    if session_model == "users":
        return event.user_id
    return event.session_id if event.session_id is not None else engine_session


def decayed(score: float, epoch: float, at: float, half_life_s: float) -> float:
    """A forward-decayed popularity score expressed at time ``at``."""
    exponent = (epoch - at) / half_life_s
    return score * 2.0**exponent if exponent > -1000 else 0.0


def merge_weights(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Sum neighbour weights of one item stored in several partitions."""
    merged: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            merged[key] = merged.get(key, 0.0) + value
    return merged
