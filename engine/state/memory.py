"""In-memory state store: the same semantics as Redis, for unit tests, evaluation and verify."""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping, Sequence

from engine.config import EngineSettings
from engine.errors import WatermarkConflict
from engine.evaluation.base import Context
from engine.logic import (
    PartitionMeta,
    StateDelta,
    UserState,
    decayed,
    merge_weights,
    push_history,
    window_needed,
)
from engine.sessionknn import SessionKNN, preset_for_engine
from engine.state.base import (
    PartitionSnapshot,
    RecsInputs,
    UserProfile,
    apply_each,
    gather_recs_inputs,
    keep_strongest,
    load_each,
)


class MemoryStore:
    """A :class:`~engine.state.base.StateStore` held in dicts.

    ``trim=False`` keeps every co-occurrence pair: the exact oracle that ``verify`` compares with.
    """

    def __init__(self, partitions: int, settings: EngineSettings | None = None, trim: bool = True) -> None:
        self.partitions = partitions
        self.settings = settings or EngineSettings()
        self.trim = trim
        self._parts = [PartitionSnapshot() for _ in range(partitions)]
        self._digests: list[dict[str, str]] = [{} for _ in range(partitions)]
        config = preset_for_engine(self.settings.session_model)
        # One model over all partitions: the same answers as Redis's per-partition rows merged.
        self._sessions = SessionKNN(config) if config is not None else None

    def load(
        self, partition: int, wanted: Mapping[str, Iterable[str]], history: bool = True
    ) -> tuple[PartitionMeta, dict[str, UserState]]:
        part = self._parts[partition]
        users: dict[str, UserState] = {}
        for user, event_ids in wanted.items():
            event_ids = list(event_ids)
            session = part.sessions.get(user)
            seen = part.seen.get(user, {})
            found = {eid for eid in event_ids if eid in seen}
            vector, version = part.user_vectors.get(user, (None, None))
            needed = window_needed(bool(found), event_ids, len(seen), self.settings.dedup_window)
            users[user] = UserState(
                list(part.history.get(user, [])) if history else [],
                found,
                session[0] if session else None,
                session[1] if session else None,
                vector,
                version,
                dict(seen) if needed else None,
            )
        return PartitionMeta(part.watermark, part.popularity_epoch), users

    def apply(self, delta: StateDelta) -> None:
        part = self._parts[delta.partition]
        if part.watermark != delta.expected_watermark:
            raise WatermarkConflict(
                f"partition {delta.partition}: watermark is {part.watermark}, expected {delta.expected_watermark}"
            )
        s = self.settings
        part.watermark = delta.last_offset
        part.applied += delta.applied
        part.duplicates += delta.duplicates
        part.invalid += delta.invalid
        for user, items in delta.history.items():
            if items:
                push_history(part.history.setdefault(user, []), items, s.history_length)
        for user, items in delta.purchases.items():
            part.purchases.setdefault(user, set()).update(items)
        for user, pairs in delta.seen.items():
            seen = part.seen.setdefault(user, {})
            seen.update(pairs)
            keep_strongest(seen, s.dedup_window)
        part.sessions.update(delta.sessions)
        part.user_vectors.update(delta.user_vectors)
        for item, row in delta.cooccurrence.items():
            weights = part.cooccurrence.setdefault(item, {})
            for other, w in row.items():
                weights[other] = weights.get(other, 0.0) + w
            if self.trim and len(weights) > 2 * s.max_neighbours:
                keep_strongest(weights, s.max_neighbours)
        if delta.popularity_rescale != 1.0:
            for item in part.popularity:
                part.popularity[item] *= delta.popularity_rescale
        for item, w in delta.popularity.items():
            part.popularity[item] = part.popularity.get(item, 0.0) + w
        if delta.popularity_epoch is not None:
            part.popularity_epoch = delta.popularity_epoch
        if self._sessions is not None:
            for sid, item, ts in delta.touches:
                self._sessions.touch(sid, item, ts)

    def watermarks(self) -> dict[int, int]:
        return {p: part.watermark for p, part in enumerate(self._parts)}

    def profiles(self, partition: int, users: Iterable[str]) -> dict[str, UserProfile]:
        part = self._parts[partition]
        return {
            u: UserProfile(
                list(part.history.get(u, [])),
                set(part.purchases.get(u, set())),
                *part.user_vectors.get(u, (None, None)),
                *part.sessions.get(u, (None, None)),
            )
            for u in users
        }

    def session_model(self, contexts: list[Context]) -> SessionKNN | None:
        return self._sessions

    def whole_session_model(self) -> SessionKNN | None:
        return copy.deepcopy(self._sessions)

    def session_items(self, located: Mapping[str, int]) -> dict[str, list[str]]:
        sessions = self._sessions.sessions if self._sessions is not None else {}
        return {sid: list(sessions.get(sid, ())) for sid in located}

    def neighbours(self, items: Iterable[str], n: int) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        rules = None if self.settings.keeps_cooccurrence or self._sessions is None else self._sessions.rules
        for item in items:
            if rules is not None:
                merged = rules.row(item)
            else:
                merged = merge_weights(part.cooccurrence.get(item, {}) for part in self._parts)
            keep_strongest(merged, n)
            out[item] = merged
        return out

    def trending(self, n: int) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        epochs = [p.popularity_epoch for p in self._parts if p.popularity_epoch is not None]
        if not epochs:
            return []
        now = max(epochs)
        totals: dict[str, float] = {}
        # Like the Redis store: each partition's top `fetch` (score, then id, descending), merged.
        fetch = n if self.partitions == 1 else 4 * n
        for part in self._parts:
            if part.popularity_epoch is None:
                continue
            ranked = sorted(part.popularity.items(), key=lambda kv: (kv[1], kv[0].encode()), reverse=True)
            for item, score in ranked[:fetch]:
                value = decayed(score, part.popularity_epoch, now, self.settings.popularity_half_life_s)
                totals[item] = totals.get(item, 0.0) + value
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def locate_user(self, user: str) -> int | None:
        for p, part in enumerate(self._parts):
            if user in part.history:
                return p
        return None

    def recs_digests(self, partition: int, users: Iterable[str]) -> dict[str, str | None]:
        digests = self._digests[partition]
        return {u: digests.get(u) for u in users}

    def load_many(
        self, wanted: Mapping[int, Mapping[str, Iterable[str]]], history: bool = True
    ) -> dict[int, tuple[PartitionMeta, dict[str, UserState]]]:
        return load_each(self, wanted, history)

    def apply_many(self, deltas: Sequence[StateDelta]) -> list[WatermarkConflict | None]:
        return apply_each(self, deltas)

    def recs_inputs(
        self, users: Mapping[int, Iterable[str]], trending: int, without_history: Collection[str] = ()
    ) -> RecsInputs:
        return gather_recs_inputs(self, users, trending, without_history)

    def set_recs_digests(self, digests: Mapping[int, Mapping[str, str]]) -> None:
        for partition, rows in digests.items():
            self._digests[partition].update(rows)

    def snapshot(self, partition: int) -> PartitionSnapshot:
        return self._parts[partition]
