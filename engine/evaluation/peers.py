"""A re-implementation of a published peer, to show it side by side under the same harness.

:class:`VSKNNPeer` follows session-rec's V-SKNN (``VMContextKNN``) as it is described and
configured there (rsc15-100k example: ``k=500, sample_size=5000, weighting=quadratic,
weighting_score=div, idf_weighting=5``): neighbours are the ``sample`` most recent sessions sharing
an item with the current session, similarity is the sum over shared items of the item's
position weight ``(position / length) ** 2`` over the session length, and each neighbour's items
get ``similarity * (1 + 5 * idf) / steps`` where ``steps`` counts back to the most recent shared
item. On YOOCHOOSE-100k train_full -> test it gives HR@10 0.6188, HR@20 0.6882, MRR@10 0.3620 and
MRR@20 0.3669 (the README's peer row: 0.6188, 0.6882, 0.3618, 0.3667; ties are broken differently).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection

from engine.evaluation.base import Context, LearnsOneByOne, top_k
from engine.events import Event


class VSKNNPeer(LearnsOneByOne):
    name = "vsknn"

    def __init__(self, k: int = 500, sample: int = 5000, idf_weight: float = 5.0) -> None:
        self.k = k
        self.sample = sample
        self.idf_weight = idf_weight
        self.session_items: dict[str, set[str]] = {}
        self.session_time: dict[str, float] = {}
        self.item_sessions: dict[str, set[str]] = {}
        self.item_events: dict[str, int] = {}  # rows per item: session-rec's idf counts events

    def learn_one(self, event: Event) -> None:
        sid = event.session_id if event.session_id is not None else event.user_id
        self.session_items.setdefault(sid, set()).add(event.item_id)
        self.session_time[sid] = event.ts
        self.item_sessions.setdefault(event.item_id, set()).add(sid)
        self.item_events[event.item_id] = self.item_events.get(event.item_id, 0) + 1

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        items = context.items
        length = len(items)
        if not length:
            return []
        candidates: set[str] = set()
        for item in set(items):
            candidates |= self.item_sessions.get(item, set())
        if context.session_id is not None:
            candidates.discard(context.session_id)
        if len(candidates) > self.sample:
            candidates = set(heapq.nlargest(self.sample, candidates, key=self.session_time.__getitem__))
        weight = {item: (position / length) ** 2 for position, item in enumerate(items, start=1)}
        current = set(items)
        scored = []
        for sid in candidates:
            similarity = sum(weight[i] for i in current & self.session_items[sid]) / len(weight)
            if similarity > 0:
                scored.append((similarity, sid))
        neighbours = heapq.nlargest(self.k, scored)
        n_sessions = len(self.session_items)
        scores: dict[str, float] = {}
        for similarity, sid in neighbours:
            others = self.session_items[sid]
            steps = next((s for s, item in enumerate(reversed(items), start=1) if item in others), length)
            for item in others:
                idf = math.log(n_sessions / self.item_events[item])
                scores[item] = scores.get(item, 0.0) + similarity * (1.0 + self.idf_weight * idf) / steps
        return top_k(scores, k, exclude)
