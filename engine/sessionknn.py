"""Session-aware neighbourhood recommender that learns one event at a time, in bounded memory.

Four parts, each optional, added into one score per item:

- **session kNN** (V-SKNN and STAN, Ludewig et al. 2018 / Garg et al. 2019): past sessions are the
  "users". The sessions sharing items with the current one are the candidates; the most recent
  ``sample`` of them are compared with it. Similarity sums the weights of the shared items, where an
  item counts ``exp(-d / position_decay)`` when it is ``d`` steps from the end of the current session,
  optionally divided by ``distinct items(neighbour) ** length_norm`` and discounted by the
  neighbour's age (half-life ``recency_half_life_s``). The ``k`` most similar sessions vote for
  their items: a vote is the similarity, times ``exp(-steps / anchor_decay)`` where ``steps`` is how
  far from the end of the current session the most recent shared item (the anchor) is, times
  ``exp(-d / item_decay)`` for an item ``d`` positions from the anchor in the neighbour (a further
  ``before_weight`` before it; one vote per item with ``distinct_votes``), times
  ``1 + idf_weight * log(sessions / sessions with the item)``. The votes are divided by their maximum.
- **sequential rules** (SR): ``item -> later item`` weights, a pair ``d <= sr_steps`` steps apart
  adding ``d ** -sr_distance_power`` (both ways with ``sr_symmetric``). The ``sr_items`` most recent
  distinct context items vote with their rules (the n-th most recent with ``sr_items_decay ** n``,
  each row first divided by its maximum with ``sr_row_norm``); a rule's target is divided by its
  popularity ``** sr_pop_norm``. The votes are divided by their maximum, times ``sr_weight``.
- **reminders**: each item of the current session gets ``reminder_weight * exp(-steps from the end /
  reminder_decay)`` (shoppers re-click what they just looked at).
- **trend**: candidates get ``trend_weight`` times their forward-decayed popularity (half-life
  ``trend_half_life_s``) over the largest one.

Memory is bounded: each item keeps its ``max_item_sessions`` most recent sessions, each session its
last ``max_session_length`` items, the model its ``max_sessions`` most recently active sessions
(an evicted session also leaves the index of the items it lists, so the index is bounded by
sessions, not by the catalogue), each item its ``max_rules`` strongest rules (trimmed at twice
that). With ``max_item_sessions >= sample`` the capped index gives the same neighbours as an
unbounded one. The current session is
never its own neighbour, so learning it while it is being served (streaming) is safe.

:data:`PRESETS` holds the tuned configurations (see :mod:`engine.evaluation.tuning`).

>>> from engine.events import Event
>>> model = SessionKNN()
>>> clicks = [("s1", "a"), ("s1", "b"), ("s2", "a"), ("s2", "b"), ("s3", "a"), ("s3", "c")]
>>> model.learn(Event(str(n), 1e9 + n, s, i, "click", s) for n, (s, i) in enumerate(clicks))
>>> model.recommend(Context("new", ("a",), 1e9 + 10, "new"), 2)
['a', 'b']
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from engine.evaluation.base import Context, top_k
from engine.events import Event
from engine.sequential_rules import RuleStore, rule_weights
from engine.session_blend import Shortlist, blend_many
from engine.session_kernels import AVAILABLE as COMPILED_KERNELS
from engine.session_kernels import VoteScratch
from engine.session_neighbours import neighbourhoods
from engine.session_numbers import Candidates, SessionNumbers
from engine.session_votes import (
    EMPTY_NEIGHBOURHOOD,
    Neighbourhood,
    idf_factors,
    latest_positions,
    neighbour_votes,
    position_weights,
    ranked_neighbourhoods,
    vote_arrays,
)

# Contexts whose neighbour votes share one vectorised pass: enough to amortise numpy's per-call
# cost, few enough to bound the pass's arrays (k neighbours x their items per context).
VOTE_CHUNK = 64


@dataclass(frozen=True, slots=True)
class SessionKNNConfig:
    k: int = 100  # neighbour sessions that vote
    sample: int = 1000  # most recent candidate sessions compared
    position_decay: float = 2.0  # current-session item weight exp(-steps from the end / this)
    length_norm: float = 0.5  # similarity / len(neighbour) ** this (0.5: cosine-like)
    recency_half_life_s: float | None = None  # age discount of a neighbour session; None: off
    anchor_decay: float | None = None  # neighbour vote x exp(-steps of its anchor from the end / this)
    item_decay: float = 3.0  # neighbour item weight exp(-|distance to anchor| / this)
    before_weight: float = 1.0  # extra factor for neighbour items before the anchor
    distinct_votes: bool = False  # a neighbour votes once per item (its occurrence nearest the anchor)
    idf_weight: float = 0.0  # vote x (1 + idf_weight * log(sessions / sessions with the item))
    sr_weight: float = 0.5  # blend weight of sequential rules (0: off)
    sr_steps: int = 10  # rules span at most this many steps
    sr_distance_power: float = 1.0  # a pair d steps apart adds 1 / d ** this
    sr_symmetric: bool = False  # also learn the backward rule (order-free co-occurrence)
    sr_items: int = 1  # this many most recent context items vote with their rules ...
    sr_items_decay: float = 0.5  # ... the n-th most recent one with weight this ** n
    sr_pop_norm: float = 0.0  # a rule's weight / (sessions with its target) ** this
    sr_row_norm: bool = False  # divide each voting item's rules by their maximum first
    trend_weight: float = 0.0  # + this x decayed popularity / its maximum (candidates only)
    trend_half_life_s: float = 86_400.0
    reminder_weight: float = 0.0  # items of the current session + this x exp(-steps from end / decay)
    reminder_decay: float = 1.0
    max_item_sessions: int = 1000
    max_session_length: int = 50
    max_sessions: int = 500_000
    max_rules: int = 500
    by_user: bool = False  # a user's whole history is one sequence (ignore shop session ids)

    def __post_init__(self) -> None:
        for name in ("sr_steps", "max_session_length", "max_item_sessions", "max_sessions", "max_rules"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        # weights within 2 ** 40 of each other: no sum rounds back to one weight (apply_batch.lua)
        if not abs(self.sr_distance_power) * math.log2(self.sr_steps) <= 40:
            raise ValueError("sr_distance_power is too large for sr_steps (sr_steps ** |power| > 2 ** 40)")

    def with_(self, **changes: Any) -> SessionKNNConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def session_of(event: Event) -> str:
    return event.session_id if event.session_id is not None else event.user_id


class SessionKNN:
    """Incremental V-SKNN/STAN-style session neighbourhoods blended with sequential rules."""

    name = "session-knn"

    def __init__(self, config: SessionKNNConfig | None = None, **overrides: Any) -> None:
        self.config = (config or SessionKNNConfig()).with_(**overrides)
        # session -> its last items, oldest first; ordered by last activity (oldest first)
        self.sessions: OrderedDict[str, list[str]] = OrderedDict()
        self.session_ts: dict[str, float] = {}
        # item -> its most recent sessions (an ordered set: oldest first)
        self.item_sessions: dict[str, dict[str, None]] = {}
        self.item_count: dict[str, int] = {}  # sessions that ever contained the item (idf)
        self.distinct: dict[str, int] = {}  # session -> distinct items among its kept ones
        self.n_sessions = 0
        self.rules = RuleStore(self.config.max_rules)
        self.session_counts = np.zeros(0)  # item_count by the rule store's item numbers
        self.trend: dict[str, float] = {}  # forward-decayed counts relative to trend_epoch
        self.trend_epoch: float | None = None
        self.trend_top = 0.0
        self._sids: dict[str, str] = {}  # each session id's one string object (see touch)
        self._numbers = SessionNumbers()  # the index by session number, for the neighbour search
        # The compiled loops of engine.session_kernels where numba is installed (same floats as
        # the numpy passes; the tests switch this off to compare them).
        self.vote_scratch = VoteScratch()
        self.compiled = COMPILED_KERNELS
        # Whether a session has a timestamp exactly when the model holds it (its items and size):
        # true of a model that learns, so the timestamps scoring looks up anyway also tell which
        # indexed sessions are held. (The index can list sessions it no longer holds: an item
        # trimmed from a session keeps it in its index, and eviction cleans only the items the
        # session still lists.) A store-backed reader has timestamps of sessions it did not load.
        self.stamped_when_held = True

    @property
    def compiled(self) -> bool:
        """Whether scoring runs the compiled loops of :mod:`engine.session_kernels` (numba); the
        numpy passes give the same floats (the tests switch this off to compare)."""
        return self._numbers.compiled

    @compiled.setter
    def compiled(self, value: bool) -> None:
        self._numbers.compiled = value and COMPILED_KERNELS

    # --- learning --------------------------------------------------------------------------------

    def learn(self, events: Iterable[Event]) -> None:
        for event in events:
            self.learn_one(event)

    def learn_one(self, event: Event) -> None:
        sid = event.user_id if self.config.by_user else session_of(event)
        self.touch(sid, event.item_id, event.ts)

    def touch(self, sid: str, item: str, ts: float) -> None:
        """Session ``sid`` touched ``item`` at ``ts``: what one event teaches the model.

        The Redis backend (``apply_batch.lua``, op ``Q``) implements the same steps.
        """
        # One string object per id: every event decodes its own copies, and a long-lived model
        # would otherwise keep one per (item, session) pair. (Not sys.intern: some CPython 3.12
        # releases never free interned strings, and session ids come and go.)
        sid = self._sids.setdefault(sid, sid)
        code = self.rules.number(item)
        item = self.rules.names[code]
        c = self.config
        seq = self.sessions.get(sid)
        if seq is None:
            seq = self.sessions[sid] = []
            self.n_sessions += 1
            if len(self.sessions) > c.max_sessions:
                self._forget(*self.sessions.popitem(last=False))
        else:
            self.sessions.move_to_end(sid)
        if c.sr_weight > 0 and seq:
            weights = rule_weights(c.sr_steps, c.sr_distance_power)
            if c.sr_symmetric:  # the two directions interleave: a row's slots follow first sight
                for prev, weight in zip(reversed(seq[-c.sr_steps :]), weights, strict=False):
                    self.rules.add(prev, item, weight)
                    if prev != item:
                        self.rules.add(item, prev, weight)
            else:
                self.rules.add_many(seq[: -c.sr_steps - 1 : -1], item, weights)
        if c.trend_weight > 0:
            self._add_trend(item, ts)
        index = self.item_sessions.get(item)
        if index is None:
            index = self.item_sessions[item] = {}
        if sid in index:
            del index[sid]
        else:
            self._numbers.gained(item, sid)
            self.item_count[item] = self.item_count.get(item, 0) + 1
            if code >= len(self.session_counts):
                grown = np.zeros(max(64, 2 * len(self.session_counts), code + 1))
                grown[: len(self.session_counts)] = self.session_counts
                self.session_counts = grown
            self.session_counts[code] += 1.0
            while len(index) >= c.max_item_sessions:  # also when the cap was lowered since
                oldest = next(iter(index))
                del index[oldest]
                self._numbers.lost(item, oldest)
        index[sid] = None
        if item not in seq:
            self.distinct[sid] = self.distinct.get(sid, 0) + 1
        seq.append(item)
        trimmed = len(seq) > c.max_session_length
        if trimmed:
            dropped = seq.pop(0)
            if dropped not in seq:
                self.distinct[sid] -= 1
        self.session_ts[sid] = ts
        self._numbers.touched(sid, ts, code, trimmed)

    def _forget(self, sid: str, items: list[str]) -> None:
        """Drop an evicted session, also from the index of every item it still lists, so that the
        index is bounded by ``max_sessions`` x ``max_session_length`` and not by the catalogue
        (a forgotten session never scores anyway: it has neither a timestamp nor a size)."""
        self.session_ts.pop(sid, None)
        self._numbers.forgot(sid)
        self.distinct.pop(sid, None)
        self._sids.pop(sid, None)
        for item in set(items):
            index = self.item_sessions.get(item)
            if index is not None and sid in index:
                del index[sid]
                self._numbers.lost(item, sid)
                if not index:
                    del self.item_sessions[item]

    def _add_trend(self, item: str, ts: float) -> None:
        half_life = self.config.trend_half_life_s
        if self.trend_epoch is None:
            self.trend_epoch = ts
        exponent = (ts - self.trend_epoch) / half_life
        if exponent > 60.0:  # rebase before the weights overflow
            scale = 2.0**-exponent
            for key in self.trend:
                self.trend[key] *= scale
            self.trend_top *= scale
            self.trend_epoch, exponent = ts, 0.0
        value = self.trend.get(item, 0.0) + 2.0**exponent
        self.trend[item] = value
        if value > self.trend_top:
            self.trend_top = value

    # --- scoring ---------------------------------------------------------------------------------

    def candidates(self, context: Context) -> tuple[dict[str, float], dict[str, int], list[str]]:
        """Sessions sharing items with the context: their raw similarity and anchor position, and
        the ``sample`` most recent of them (the ones compared). Needs only the item -> sessions
        index and the sessions' timestamps, so a store-backed reader can fetch the rest after it."""
        shared, chosen = self._candidates(context)
        ids = self._numbers.ids(shared.numbers)
        sim = dict(zip(ids, shared.similarities.tolist(), strict=True))
        anchor = dict(zip(ids, shared.anchors.tolist(), strict=True))
        return sim, anchor, self._numbers.ids(chosen.numbers)

    def index_parts(
        self, context: Context, latest: list[tuple[str, int, int]] | None = None
    ) -> list[tuple[int, float, int]]:
        """The context's items that have sessions (or had, since they were first searched), as
        (the slot of their sessions in the numbered view, weight, position), in order of last
        occurrence, so that a session's anchor ends as its most recent shared item. ``latest``:
        :func:`latest_positions` of the context's last ``max_session_length`` items, when the
        caller has it."""
        numbers = self._numbers
        slot_of = numbers.slot_of.get
        index_of = self.item_sessions.get
        weights = position_weights(self.config)
        parts = []
        if latest is None:
            latest = latest_positions(context.items[-self.config.max_session_length :])
        for item, position, steps in latest:
            slot = slot_of(item)
            if slot is None:
                index = index_of(item)
                if not index:
                    continue
                slot = numbers.slot(item, index, self.session_ts)
            parts.append((slot, weights[steps], position))
        return parts

    def _candidates(self, context: Context) -> tuple[Candidates, Candidates]:
        """Every session sharing items with the context, and the ``sample`` most recent of them."""
        c = self.config
        numbers = self._numbers
        numbers.rebuild_if_outgrown(len(self.session_ts))
        shared = numbers.gather(self.index_parts(context), context.session_id)
        total = len(shared.numbers)
        if total <= c.sample:
            return shared, shared
        # The `sample` most recent by (timestamp, id): ids break ties, so that a store-backed
        # reader (other numbers) picks the same sessions.
        stamps = shared.stamps
        cut = np.partition(stamps, total - c.sample)[total - c.sample]  # sample-th largest
        newer = np.flatnonzero(stamps > cut)
        at_cut = np.flatnonzero(stamps == cut)
        if len(newer) + len(at_cut) > c.sample:
            by_id = sorted(
                zip(numbers.ids(shared.numbers[at_cut]), at_cut.tolist(), strict=True), reverse=True
            )
            at_cut = np.array([position for _, position in by_id[: c.sample - len(newer)]], np.int64)
        return shared, shared.take(np.concatenate([newer, at_cut]))

    def neighbours(self, context: Context) -> list[tuple[str, float, int]]:
        """The ``k`` most similar past sessions: (session, similarity, anchor position in context)."""
        found = self.neighbourhood(context)
        return list(zip(found.sids, found.similarities.tolist(), found.anchors.tolist(), strict=True))

    def neighbourhood(self, context: Context) -> Neighbourhood:
        """:meth:`neighbours` as parallel arrays, best first (what the vote step takes)."""
        c = self.config
        _, chosen = self._candidates(context)
        if not len(chosen.numbers):
            return EMPTY_NEIGHBOURHOOD
        values = chosen.similarities
        stamps = chosen.stamps
        # A session the model indexes but does not hold is no neighbour. Sizes are looked up only
        # when the similarity needs them; else the timestamps tell, where they mark held sessions.
        distinct = self.distinct
        known: np.ndarray | None = None
        if c.length_norm:
            sizes = lookup(distinct, self._numbers.ids(chosen.numbers), 0)
            known = sizes > 0
            values = values / np.where(known, sizes, 1.0) ** c.length_norm
        elif self.stamped_when_held:
            known = stamps > -math.inf
        else:
            ids = self._numbers.ids(chosen.numbers)
            if not all(map(distinct.__contains__, ids)):
                known = np.fromiter(map(distinct.__contains__, ids), bool, len(ids))
        if c.recency_half_life_s is not None:
            now = context.ts
            # a session without a timestamp counts as seen now
            seen = np.where(stamps == -math.inf, now, stamps)
            values = values * 0.5 ** (np.maximum(0.0, now - seen) / c.recency_half_life_s)
        kept = chosen
        if known is not None and not known.all():
            held = np.flatnonzero(known)
            values, kept = values[held], chosen.take(held)
            if not len(held):
                return EMPTY_NEIGHBOURHOOD
        if len(values) > c.k:  # the k best, and every session tied with the k-th
            top = np.flatnonzero(values >= np.partition(values, len(values) - c.k)[len(values) - c.k])
            values, kept = values[top], kept.take(top)
        alone = np.zeros(len(values), np.int64)
        keys = self._numbers.keys(kept.numbers)
        return ranked_neighbourhoods(
            values, kept.anchors, kept.numbers, alone, 1, c.k, keys, self._numbers.ids
        )[0]

    def knn_scores(self, context: Context) -> dict[str, float]:
        """The neighbours' votes per item (not normalised)."""
        return neighbour_votes(self, [context], [self.neighbourhood(context)])[0]

    def session_codes(self, sid: str) -> np.ndarray:
        """A session's item numbers (int32), oldest first."""
        seq = self.sessions[sid]
        return np.fromiter(map(self.rules.numbers.__getitem__, seq), np.int32, len(seq))

    def idf_counts(self) -> np.ndarray:
        """Sessions that contained each item, by item number (idf)."""
        counts = self.session_counts
        if len(counts) < len(self.rules.names):  # a model filled from a store
            counts = np.array([self.item_count.get(name, 0) for name in self.rules.names], float)
        return counts

    def scores(self, context: Context) -> dict[str, float]:
        """Every candidate item's blended score (see the module doc)."""
        return self.scores_many([context])[0]

    def scores_many(
        self, contexts: Sequence[Context], shortlist: Shortlist | None = None
    ) -> list[dict[str, float]]:
        """:meth:`scores` of many contexts, computed together (numpy passes over a chunk of them);
        with a ``shortlist``, only the items it asks for (see :mod:`engine.session_blend`)."""
        c = self.config
        out: list[dict[str, float]] = []
        # Once per call, not per chunk: a log per catalogue item costs less than one per vote.
        idf = idf_factors(self) if c.k > 0 and c.idf_weight and len(contexts) > VOTE_CHUNK else None
        # In chunks: one pass's arrays hold every neighbour item of its contexts.
        for start in range(0, len(contexts), VOTE_CHUNK):
            chunk = contexts[start : start + VOTE_CHUNK]
            knn = None
            # each context's distinct items, for the neighbour search and the reminders
            latest = None
            if c.k > 0 or c.reminder_weight:
                latest = [latest_positions(context.items[-c.max_session_length :]) for context in chunk]
            if c.k > 0:
                found = neighbourhoods(self, chunk, with_ids=False, latest=latest)
                knn = vote_arrays(self, chunk, found, normalise=True, idf=idf)
            sources = [sr_sources(c, context.items) for context in chunk] if c.sr_weight > 0 else []
            part = None
            if shortlist is not None:
                end = start + len(chunk)
                part = replace(
                    shortlist, best=shortlist.best[start:end], protected=shortlist.protected[start:end]
                )
            out.extend(blend_many(self, chunk, knn, sources, part, latest))
        return out

    def recommend(self, context: Context, k: int, exclude: Collection[str] = ()) -> list[str]:
        # Rounded to 12 digits: a store that sums partitions in another order differs in the last
        # bits, and must still see the same ties (broken by item id).
        return top_k({item: round(value, 12) for item, value in self.scores(context).items()}, k, exclude)


# Chosen by coordinate search (engine/evaluation/tuning.py) on data that no report scores:
# "sessions" on YOOCHOOSE train_tr -> train_valid (next-item, frozen), "users" on the first 20% of
# MovieLens 100k (the prequential protocol's warm-up, replayed with its own 50% warm-up). On the
# latter the neighbourhood part did not help, so "users" is the rules and trend parts alone.
# The search's best "sessions" point had k=500, sample=1000 (validation HR@20 + MRR@20 1.0348);
# k=100, sample=500 scores 1.0346 on the same split, a tie within noise, at ~60% of the scoring
# cost once the item index is full (1.37 -> 0.82 ms a user on 1M generator events), so the
# streaming engine runs the cheaper one. Its caps were then tightened on the same split, with no
# change to the score: an item index of 500 sessions (= sample, was 1,000; ~10% less scoring time)
# and rows of 100 rules (was 500; the rule rows were the largest state in Redis); 50 rules gave
# 1.0345 and 20 gave 1.0338.
PRESETS: dict[str, SessionKNNConfig] = {
    "sessions": SessionKNNConfig(
        k=100,
        sample=500,
        position_decay=2.0,
        length_norm=0.0,
        recency_half_life_s=3 * 86_400.0,
        anchor_decay=20.0,
        item_decay=10.0,
        distinct_votes=True,
        idf_weight=0.5,
        sr_weight=0.15,
        reminder_weight=3.0,
        reminder_decay=0.5,
        max_item_sessions=500,
        max_rules=100,
    ),
    "users": SessionKNNConfig(
        by_user=True,
        k=0,
        sr_weight=1.0,
        sr_symmetric=True,
        sr_steps=20,
        sr_items=30,
        sr_items_decay=0.8,
        sr_distance_power=0.5,
        sr_pop_norm=0.1,
        sr_row_norm=True,
        trend_weight=0.05,
    ),
}


def lookup(mapping: dict[str, Any], keys: list[str], default: float, dtype: Any = np.float64) -> np.ndarray:
    """``[mapping.get(key, default) for key in keys]`` as an array, at C speed when every key is
    there (the usual case: one ``itemgetter`` call, a third faster than ``map`` over
    ``__getitem__``; the lookup with a default is about twice as slow)."""
    n = len(keys)
    if n < 2:
        return np.array([mapping.get(key, default) for key in keys], dtype)
    try:
        return np.array(itemgetter(*keys)(mapping), dtype)
    except KeyError:
        return np.fromiter(map(mapping.get, keys, repeat(default)), dtype, n)


def preset_for_engine(session_model: str) -> SessionKNNConfig | None:
    """The session model the engine runs for ``EngineSettings.session_model`` (None when off)."""
    if session_model == "off":
        return None
    try:
        return PRESETS[session_model]
    except KeyError:
        raise ValueError(
            f"unknown session model {session_model!r}; expected one of {sorted(PRESETS)} or off"
        ) from None


def sr_sources(config: SessionKNNConfig, items: Iterable[str]) -> list[tuple[str, float]]:
    """The ``sr_items`` most recent distinct items of a context (``items`` oldest first), weighted."""
    sources: list[tuple[str, float]] = []
    weight = 1.0
    for item in reversed(list(items)):
        if any(item == source for source, _ in sources):
            continue
        sources.append((item, weight))
        weight *= config.sr_items_decay
        if len(sources) >= config.sr_items:
            break
    return sources
