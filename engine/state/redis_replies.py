"""Turning the Redis store's replies (pipelines and read_users.lua) into engine values (no I/O here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from engine.embeddings import from_bytes
from engine.errors import WatermarkConflict
from engine.logic import PartitionMeta, StateDelta, UserState
from engine.state.base import UserProfile


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def user_vector(reply: list[Any]) -> tuple[np.ndarray | None, str | None]:
    raw, version = reply
    vector = from_bytes(raw) if raw is not None else None
    return (vector, text(version)) if vector is not None and version is not None else (None, None)


PROFILE_REPLIES = 4  # replies per user of read_users.lua in mode "profiles" (and first in "recs")


def parse_profiles(replies: list[Any], users: list[str]) -> dict[str, UserProfile]:
    out: dict[str, UserProfile] = {}
    for i, user in enumerate(users):
        at = PROFILE_REPLIES * i
        session_id, session_ts = replies[at + 3]
        out[user] = UserProfile(
            [text(x) for x in replies[at]],
            {text(x) for x in replies[at + 1]},
            *user_vector(replies[at + 2]),
            text(session_id) if session_id is not None else None,
            float(session_ts) if session_ts is not None else None,
        )
    return out


def parse_load(
    replies: Iterator[Any], plan: list[tuple[str, list[str]]]
) -> tuple[PartitionMeta, dict[str, UserState]]:
    """One partition's part of :meth:`RedisStore.load_many`'s replies (consumed from ``replies``)."""
    watermark, epoch = next(replies)
    meta = PartitionMeta(int(watermark) if watermark is not None else -1, float(epoch) if epoch else None)
    out: dict[str, UserState] = {}
    for user, event_ids in plan:
        history = [text(x) for x in next(replies)]
        session_id, session_ts = next(replies)
        vector, version = user_vector(next(replies))
        seen: set[str] = set()
        window: dict[str, float] | None = None
        if event_ids:
            scores = next(replies)
            seen = {eid for eid, score in zip(event_ids, scores, strict=True) if score is not None}
            whole = next(replies)
            if whole:  # 'W', then id, score pairs
                window = {text(whole[k]): float(whole[k + 1]) for k in range(1, len(whole), 2)}
        out[user] = UserState(
            history,
            seen,
            text(session_id) if session_id is not None else None,
            float(session_ts) if session_ts is not None else None,
            vector,
            version,
            window,
        )
    return meta, out


def conflict_of(delta: StateDelta, result: Any) -> WatermarkConflict | None:
    """The batch script's reply: 1 when applied, else the watermark it found."""
    # A retried call whose first attempt did write (only the reply was lost) finds the watermark
    # already at this batch's end: the same records were applied, so that is a success.
    if result == 1 or text(result[1]) == str(delta.last_offset):
        return None
    return WatermarkConflict(
        f"partition {delta.partition}: watermark is {text(result[1])}, expected {delta.expected_watermark}"
    )


def parse_digests(values: list[Any], users: list[str]) -> dict[str, str | None]:
    return {u: text(v) if v is not None else None for u, v in zip(users, values, strict=True)}
