"""A synthetic, realistic e-commerce event stream for tests, demos and benchmarks.

The catalogue has Zipf-like item popularity; items belong to categories (``c0``..) of uneven size
and carry a price around their category's price level. Each user (``u0``..) prefers one or two
categories and has a lognormal activity level. Users browse in sessions of a few events: mostly
views, some clicks and add-to-carts of items viewed earlier in the session, and a few purchases,
always of an item viewed in the same session (usually one put in the cart). Sessions of different
users overlap in time; a user's next session starts at least half an hour after the last one.

The output is sorted by timestamp and fully determined by the arguments::

    >>> evs = generate_events(100, n_users=10, n_items=50, seed=1)
    >>> len(evs), evs == generate_events(100, n_users=10, n_items=50, seed=1)
    (100, True)
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from engine.events import Event, make_event_id

ZIPF_EXPONENT = 0.8
MEAN_SESSION_EVENTS = 6.0
MEAN_SESSION_GAP_S = 30.0  # between the starts of consecutive sessions (all users together)
MEAN_EVENT_GAP_S = 25.0  # between events of one session
MIN_USER_PAUSE_S = 1800.0  # between two sessions of one user
PREFERRED_SHARE = 0.8  # share of a session's new views taken from the user's preferred categories

# Per step after the first view: view a new item, click / add to cart / buy an item seen before.
P_VIEW, P_CLICK, P_CART = 0.66, 0.16, 0.11  # the rest (0.07) is a purchase attempt
P_BUY_UNCARTED = 0.2  # a purchase attempt with nothing in the cart buys a viewed item this often


def _cumulative(weights: np.ndarray) -> list[float]:
    cum = np.cumsum(weights, dtype=np.float64)
    return (cum / cum[-1]).tolist()


def generate_events(
    n_events: int,
    n_users: int = 2000,
    n_items: int = 5000,
    seed: int = 0,
    start_ts: float = 1_700_000_000.0,
    session_gap_s: float = MEAN_SESSION_GAP_S,
) -> list[Event]:
    """``n_events`` events from ``n_users`` users over ``n_items`` items, sorted by timestamp.

    The same arguments always give the same events, ids included
    (``make_event_id("gen", seed, index, user_id, item_id, ts, type)``, index after sorting).
    ``session_gap_s`` is the mean time between the starts of consecutive sessions: a session lasts
    ~``MEAN_SESSION_EVENTS x MEAN_EVENT_GAP_S`` (150 s), so the default keeps ~5 sessions open at
    once, and a smaller gap more (as many as the users allow: a user's sessions never overlap).
    """
    if n_events < 0 or n_users < 1 or n_items < 1 or not session_gap_s > 0:
        raise ValueError("need n_events >= 0, n_users >= 1, n_items >= 1 and session_gap_s > 0")
    rng = np.random.default_rng(seed)

    # Catalogue: popularity by Zipf rank, categories of uneven size, prices per category level.
    n_categories = max(1, min(n_items, round(float(np.sqrt(n_items)) / 2)))
    popularity = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** ZIPF_EXPONENT
    popularity = popularity[rng.permutation(n_items)]
    category_share = rng.dirichlet(np.full(n_categories, 2.0))
    item_category = rng.choice(n_categories, size=n_items, p=category_share)
    category_price = rng.lognormal(np.log(30.0), 0.8, size=n_categories)
    item_price = np.maximum(0.5, category_price[item_category] * rng.lognormal(0.0, 0.35, size=n_items))
    prices = np.round(item_price, 2).tolist()
    categories = [f"c{c}" for c in item_category.tolist()]
    item_names = [f"i{i}" for i in range(n_items)]

    all_items = list(range(n_items))
    all_cum = _cumulative(popularity)
    by_category: list[tuple[list[int], list[float]]] = []
    category_weight = np.zeros(n_categories)
    for c in range(n_categories):
        members = np.flatnonzero(item_category == c)
        if len(members):
            category_weight[c] = popularity[members].sum()
            by_category.append((members.tolist(), _cumulative(popularity[members])))
        else:
            by_category.append((all_items, all_cum))

    # Users: one or two preferred categories (popular ones more often), uneven activity.
    category_p = category_weight / category_weight.sum()
    first_pref = rng.choice(n_categories, size=n_users, p=category_p).tolist()
    second_pref = rng.choice(n_categories, size=n_users, p=category_p).tolist()
    has_second = (rng.random(n_users) < 0.4).tolist()
    preferred = [
        (a, b) if two and b != a else (a,)
        for a, b, two in zip(first_pref, second_pref, has_second, strict=True)
    ]
    activity = rng.lognormal(0.0, 0.8, size=n_users)
    user_names = [f"u{u}" for u in range(n_users)]

    # Randomness drawn in bulk: per session (at most n_events sessions) and per event.
    session_len = rng.geometric(1.0 / MEAN_SESSION_EVENTS, size=n_events).tolist()
    session_user = rng.choice(n_users, size=n_events, p=activity / activity.sum()).tolist()
    session_gap = rng.exponential(session_gap_s, size=n_events).tolist()
    event_gap = (1.0 + rng.exponential(MEAN_EVENT_GAP_S - 1.0, size=n_events)).tolist()
    u_action, u_pref, u_item, u_pick = rng.random((4, n_events)).tolist()

    rows: list[tuple[float, int, int, str, int]] = []  # (ts, user, item, type, session)
    user_free_at: dict[int, float] = {}
    clock = start_ts
    k = 0  # event index into the per-event draws
    session = 0
    while k < n_events:
        user = session_user[session]
        clock += session_gap[session]
        ts = max(clock, user_free_at.get(user, clock))
        length = min(session_len[session], n_events - k)
        prefs = preferred[user]
        viewed: list[int] = []
        carted: list[int] = []
        for step in range(length):
            if step:
                ts += event_gap[k]
            action = u_action[k]
            if not step or action < P_VIEW:
                if u_pref[k] < PREFERRED_SHARE:
                    members, cum = by_category[prefs[int(u_pick[k] * len(prefs))]]
                else:
                    members, cum = all_items, all_cum
                item = members[min(bisect_right(cum, u_item[k]), len(members) - 1)]
                kind = "view"
                viewed.append(item)
            elif action < P_VIEW + P_CLICK:
                # usually the item just viewed, sometimes an earlier one
                item = viewed[-1] if u_pick[k] < 0.6 else viewed[int(u_item[k] * len(viewed))]
                kind = "click"
            elif action < P_VIEW + P_CLICK + P_CART:
                item = viewed[-1] if u_pick[k] < 0.5 else viewed[int(u_item[k] * len(viewed))]
                kind = "add_to_cart"
                carted.append(item)
            elif carted:
                item = carted.pop(int(u_item[k] * len(carted)))
                kind = "purchase"
            elif u_pick[k] < P_BUY_UNCARTED:
                item = viewed[int(u_item[k] * len(viewed))]
                kind = "purchase"
            else:  # browsing on instead: view the most popular-by-chance item of a preferred category
                members, cum = by_category[prefs[0]]
                item = members[min(bisect_right(cum, u_item[k]), len(members) - 1)]
                kind = "view"
                viewed.append(item)
            rows.append((round(ts, 3), user, item, kind, session))
            k += 1
        user_free_at[user] = ts + MIN_USER_PAUSE_S
        session += 1

    rows.sort(key=lambda row: row[0])  # stable: a session's events keep their order on equal times
    events = []
    for index, (ts, user, item, kind, sess) in enumerate(rows):
        user_id, item_id = user_names[user], item_names[item]
        events.append(
            Event(
                event_id=make_event_id("gen", seed, index, user_id, item_id, ts, kind),
                ts=ts,
                user_id=user_id,
                item_id=item_id,
                type=kind,
                session_id=f"s{sess}",
                price=prices[item],
                category=categories[item],
            )
        )
    return events
