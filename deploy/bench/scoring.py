"""The session model's scoring cost at a mature state, in process: no broker, no Redis.

Over a long replay the scoring process sets the engine's rate (docs/performance.md): the item
indexes are at their caps and each user's ~100 neighbours list ~30 items each. This learns
``--events`` generator events (the ingest bench's stream) into the streaming preset, then for
each of ``--warm-polls`` + ``--polls`` polls of ``--batch`` events learns the poll and scores
the latest context of each user in it, as the scoring process does with a shortlist of 20 + 2
per user and 100 always-kept items. (Since 2026-12-08 the scoring process keeps a trending item
only where its share can lift it into the list, ``Shortlist.gains``; the bench keeps the older
shortlist, which every revision takes, so that revisions compare alike.) Only the last
``--polls`` polls are timed. The digest of every
score is printed, so that two revisions can be checked to score alike as well as compared for
speed.

The rules a poll buffers are added before its scoring is timed (counted as learning).
``--best-of N`` scores each timed poll N times and counts the fastest: on a machine whose speed
drifts by the minute, the best of a few runs compares two revisions more steadily than one run.

Run: ``python -m deploy.bench.scoring [--events 1000000] [--polls 10] [--best-of 5]`` (~1 minute;
the learning takes most of it).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import time

from deploy.bench.common import event_chunks
from engine.evaluation.base import Context
from engine.session_blend import Shortlist
from engine.session_kernels import warm_up
from engine.sessionknn import PRESETS, SessionKNN, session_of


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events learnt first")
    parser.add_argument("--warm-polls", type=int, default=10, help="polls scored before timing")
    parser.add_argument("--polls", type=int, default=10, help="polls timed")
    parser.add_argument("--batch", type=int, default=2000, help="events a poll")
    parser.add_argument(
        "--best-of", type=int, default=1, help="score each timed poll this often, count the fastest"
    )
    args = parser.parse_args(argv)
    if args.events < 0 or args.polls < 1 or args.warm_polls < 0 or args.batch < 1 or args.best_of < 1:
        parser.error("need --events >= 0, --polls >= 1, --warm-polls >= 0, --batch >= 1 and --best-of >= 1")

    n_polls = args.warm_polls + args.polls
    events = [e for chunk in event_chunks(args.events + n_polls * args.batch) for e in chunk]
    model = SessionKNN(PRESETS["sessions"])
    warm_up()
    started = time.perf_counter()
    for n, event in enumerate(events[: args.events], 1):
        model.learn_one(event)
        if n % 200_000 == 0:
            print(
                f"learnt {n:,} of {args.events:,} events ({time.perf_counter() - started:.0f} s)", flush=True
            )
    gc.collect()
    gc.freeze()  # as the scoring process does with its long-lived replica (consumers.heap)

    always = [f"i{n}" for n in range(100)]
    digest = hashlib.sha256()
    learn_s = score_s = 0.0
    n_contexts = 0
    for p in range(n_polls):
        poll = events[args.events + p * args.batch : args.events + (p + 1) * args.batch]
        t0 = time.perf_counter()
        for event in poll:
            model.learn_one(event)
        len(model.rules)  # adds the rules the poll buffered: learning, not the first scoring's
        t1 = time.perf_counter()
        latest = {event.user_id: event for event in poll}
        contexts = [
            Context(user, tuple(model.sessions[session_of(e)]), e.ts, session_of(e))
            for user, e in latest.items()
        ]
        shortlist = Shortlist([22] * len(contexts), [()] * len(contexts), always)
        fastest = float("inf")
        for _ in range(args.best_of if p >= args.warm_polls else 1):  # scoring leaves the model as it is
            t2 = time.perf_counter()
            scores = model.scores_many(contexts, shortlist)
            fastest = min(fastest, time.perf_counter() - t2)
        if p >= args.warm_polls:
            learn_s += t1 - t0
            score_s += fastest
            n_contexts += len(contexts)
            for one in scores:
                digest.update(repr(sorted(one.items())).encode())
    timed_events = args.polls * args.batch
    print(
        f"{args.polls} polls of {args.batch:,} events after {args.events:,}: {n_contexts:,} users scored; "
        f"scoring {1e6 * score_s / n_contexts:.0f} µs a user = {1e6 * score_s / timed_events:.1f} µs an event; "
        f"learning {1e6 * learn_s / timed_events:.1f} µs an event; scores digest {digest.hexdigest()[:16]}"
        + (f" (scoring: the best of {args.best_of} runs a poll)" if args.best_of > 1 else "")
    )


if __name__ == "__main__":
    main()
