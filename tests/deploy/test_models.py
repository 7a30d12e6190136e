"""Model lifecycle pieces that need no servers: cold items get content vectors in the trained space."""

from __future__ import annotations

import numpy as np

from deploy.models import add_cold_items, train
from engine.generator import generate_events
from models.content import texts_from_events
from models.settings import TrainSettings


def test_cold_items_land_near_warm_items_of_their_category() -> None:
    events = generate_events(20_000, n_users=300, n_items=400, seed=4)
    category = {e.item_id: e.category for e in events}
    cold_ids = sorted(category)[::10]  # every tenth item: never seen by the trainer
    warm_events = [e for e in events if e.item_id not in set(cold_ids)]
    trained = train(warm_events, TrainSettings(epochs=10, dim=32, patience=0, seed=1))
    merged, added = add_cold_items(trained, texts_from_events(events))

    assert added == len([i for i in cold_ids if i not in set(trained.item_ids)]) > 0
    assert set(merged.item_ids) == set(trained.item_ids) | set(cold_ids)
    pos = merged.positions()
    warm = [i for i in trained.item_ids]
    warm_matrix = merged.vectors[[pos[i] for i in warm]]
    warm_matrix /= np.linalg.norm(warm_matrix, axis=1, keepdims=True)
    same, chance = [], []
    for item in cold_ids:
        v = merged.vectors[pos[item]]
        nearest = np.argsort(-(warm_matrix @ (v / np.linalg.norm(v))))[:10]
        same.append(np.mean([category[warm[j]] == category[item] for j in nearest]))
        chance.append(np.mean([category[w] == category[item] for w in warm]))
    assert np.mean(same) > 2 * np.mean(chance)
