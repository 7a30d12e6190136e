"""One partition's batch, from raw records to an applied state delta.

Shared by the Kafka worker, ``streamrec verify`` and the offline evaluation, so the three cannot
disagree on what a record does. No Kafka here: callers pass plain :class:`RawRecord` values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from engine.config import EngineSettings
from engine.embeddings import EmbeddingSpace
from engine.errors import InvalidEvent, WatermarkConflict
from engine.events import Event, decode_event
from engine.logic import StateDelta, compute_delta, needs_history
from engine.state.base import StateStore


@dataclass(frozen=True, slots=True)
class RawRecord:
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None


@dataclass(slots=True)
class BatchOutcome:
    partition: int
    last_offset: int
    applied: int = 0
    duplicates: int = 0
    # Records at or below the watermark: applied by an earlier run, skipped now.
    already_applied: int = 0
    dead_letters: list[tuple[RawRecord, str]] = field(default_factory=list)
    # Users whose recommendations may have changed (including those of skipped records, so that a
    # crash between the state write and the recs publish is repaired on the next run).
    touched_users: list[str] = field(default_factory=list)
    events: list[tuple[int, Event]] = field(default_factory=list)
    # What the applied delta taught the session model, (session, item, ts) in event order.
    touches: list[tuple[str, str, float]] = field(default_factory=list)
    # What the applied delta pushed onto each user's history: user -> items, oldest first.
    history: dict[str, list[str]] = field(default_factory=dict)


def decode_batch(records: Sequence[RawRecord]) -> tuple[list[tuple[int, Event]], list[tuple[RawRecord, str]]]:
    good: list[tuple[int, Event]] = []
    bad: list[tuple[RawRecord, str]] = []
    for record in records:
        try:
            good.append((record.offset, decode_event(record.value)))
        except InvalidEvent as exc:
            bad.append((record, str(exc)))
    return good, bad


class BatchProcessor:
    """Decode, deduplicate and apply one partition's batch to a state store."""

    def __init__(
        self, store: StateStore, settings: EngineSettings, space: EmbeddingSpace | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        # The live embedding space; the worker replaces it on a model refresh (one assignment).
        self.space = space

    def process(
        self,
        partition: int,
        records: Sequence[RawRecord],
        before_apply: Callable[[BatchOutcome], None] | None = None,
    ) -> BatchOutcome:
        """Apply a batch; ``before_apply(outcome)`` runs after decoding and before the state write.

        The worker uses that hook to dead-letter invalid records before the watermark passes them:
        once the watermark is past a record it is never looked at again. Raises
        :class:`~engine.errors.WatermarkConflict` when another writer moved the watermark meanwhile
        (this worker lost the partition); nothing was written then.
        """
        hook = None if before_apply is None else (lambda outcomes: before_apply(outcomes[0]))
        result = self.process_many({partition: records}, hook)[0]
        if isinstance(result, WatermarkConflict):
            raise result
        return result

    def process_many(
        self,
        batches: Mapping[int, Sequence[RawRecord]],
        before_apply: Callable[[list[BatchOutcome]], None] | None = None,
    ) -> list[BatchOutcome | WatermarkConflict]:
        """:meth:`process` for several partitions' batches with one state read and one write call
        for all of them (each partition's write still atomic with its own watermark).

        Returns, in the order of ``batches``, each partition's outcome, or its conflict when another
        writer moved that partition's watermark (nothing of that partition was written).
        ``before_apply`` gets the outcomes that are about to be written, once.
        """
        plans: dict[
            int, tuple[int, list[tuple[int, Event]], list[tuple[RawRecord, str]], dict[str, list[str]]]
        ] = {}
        for partition, records in batches.items():
            if not records:
                raise ValueError("empty batch")
            events, dead = decode_batch(records)
            wanted: dict[str, list[str]] = {}
            for _, event in events:
                wanted.setdefault(event.user_id, []).append(event.event_id)
            plans[partition] = (max(r.offset for r in records), events, dead, wanted)
        space = self.space  # one space for the whole call (the worker may swap it between polls)
        loaded = self.store.load_many(
            {partition: plan[3] for partition, plan in plans.items()}, needs_history(self.settings, space)
        )
        results: dict[int, BatchOutcome | WatermarkConflict] = {}
        writes: list[tuple[BatchOutcome, StateDelta]] = []
        for partition, (last_offset, events, dead, wanted) in plans.items():
            meta, users = loaded[partition]
            records = batches[partition]
            touched = list(wanted)
            if last_offset <= meta.watermark:
                results[partition] = BatchOutcome(
                    partition, last_offset, already_applied=len(records), touched_users=touched
                )
                continue
            outcome = BatchOutcome(
                partition,
                last_offset,
                already_applied=sum(1 for r in records if r.offset <= meta.watermark),
                dead_letters=[(r, reason) for r, reason in dead if r.offset > meta.watermark],
                touched_users=touched,
                events=[(o, e) for o, e in events if o > meta.watermark],
            )
            delta = compute_delta(
                partition,
                outcome.events,
                users,
                meta,
                self.settings,
                len(outcome.dead_letters),
                last_offset,
                space,
            )
            outcome.applied, outcome.duplicates = delta.applied, delta.duplicates
            writes.append((outcome, delta))
        if writes:
            if before_apply is not None:
                before_apply([outcome for outcome, _ in writes])
            conflicts = self.store.apply_many([delta for _, delta in writes])
            for (outcome, delta), conflict in zip(writes, conflicts, strict=True):
                outcome.touches, outcome.history = delta.touches, delta.history
                results[outcome.partition] = conflict if conflict is not None else outcome
        return [results[partition] for partition in batches]
