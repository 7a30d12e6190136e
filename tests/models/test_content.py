"""Content vectors: the ML-100k item file, TF-IDF neighbours, and cold items placed in a trained space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelError
from engine.events import Event
from models.artifacts import ItemEmbeddings
from models.content import (
    ContentProjector,
    ItemText,
    TfidfModel,
    cold_items,
    content_embeddings,
    load_movielens_items,
    texts_from_events,
)
from tests.models.ml100k import ML_ITEM, ml100k_item2vec, require


@pytest.fixture(scope="module")
def items() -> list[ItemText]:
    return load_movielens_items(require(ML_ITEM))


@pytest.fixture(scope="module")
def tfidf_space(items):
    docs = [item.tokens() for item in items]
    tfidf = TfidfModel.fit(docs, min_df=2)
    x = tfidf.transform(docs).to_dense()
    return {item.item_id: i for i, item in enumerate(items)}, x


def test_loads_the_movielens_item_file(items) -> None:
    assert len(items) == 1682
    by_id = {item.item_id: item for item in items}
    assert by_id["1"] == ItemText("1", "Toy Story", ("Animation", "Children's", "Comedy"), 1995)
    assert by_id["172"].title == "Empire Strikes Back, The" and "Sci-Fi" in by_id["172"].categories
    assert by_id["267"].title == "" and by_id["267"].year is None  # "unkonwn" in the file
    assert by_id["50"].tokens() == [
        "t:star",
        "t:wars",
        "c:action",
        "c:adventure",
        "c:romance",
        "c:sci-fi",
        "c:war",
        "d:1970s",
    ]


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_movielens_items(tmp_path / "none.item")
    bad = tmp_path / "bad.item"
    bad.write_text("item_id:token\tmovie_title:token_seq\n1\tToy Story\textra\n")
    with pytest.raises(ModelError, match="line 2: expected 2 fields"):
        load_movielens_items(bad)
    bad.write_text("title:token_seq\nToy Story\n")
    with pytest.raises(ModelError, match="item_id"):
        load_movielens_items(bad)


def test_tfidf_neighbours_are_sensible(items, tfidf_space) -> None:
    pos, x = tfidf_space

    def cos(a: str, b: str) -> float:
        return float(x[pos[a]] @ x[pos[b]])

    # Star Wars (50) vs Return of the Jedi (181) / Empire Strikes Back (172) vs Toy Story (1)
    assert cos("50", "181") > 0.7 and cos("50", "172") > 0.7
    assert cos("50", "181") > cos("50", "1") + 0.5
    # Aladdin (95): its ten nearest are all animated films; its sequel (422) is far closer than a
    # thriller (98, The Silence of the Lambs).
    row = x @ x[pos["95"]]
    row[pos["95"]] = -1
    assert all("Animation" in items[i].categories for i in np.argsort(-row)[:10])
    assert cos("95", "422") > cos("95", "98") + 0.5


def test_sharing_genres_means_closer(items, tfidf_space) -> None:
    pos, x = tfidf_space
    rng = np.random.default_rng(0)
    share, disjoint = [], []
    for _ in range(4000):
        a, b = rng.choice(len(items), size=2, replace=False)
        ga, gb = set(items[a].categories), set(items[b].categories)
        sim = float(x[a] @ x[b])
        if len(ga & gb) >= 2:
            share.append(sim)
        elif not ga & gb:
            disjoint.append(sim)
    assert len(share) > 50 and len(disjoint) > 500
    assert np.mean(share) > np.mean(disjoint) + 0.3


def test_cold_items_land_near_their_trained_position(items) -> None:
    """Fit the projection on 80% of the trained items; the other 20% are 'cold'."""
    trained = ml100k_item2vec()
    pos = trained.positions()
    warm = [item for item in items if item.item_id in pos]
    order = np.random.default_rng(1).permutation(len(warm))
    held, fit_on = [warm[i] for i in order[:300]], [warm[i] for i in order[300:]]
    tfidf = TfidfModel.fit([item.tokens() for item in items], min_df=2)
    projector = ContentProjector.fit(
        tfidf,
        tfidf.transform([i.tokens() for i in fit_on]),
        trained.vectors[[pos[i.item_id] for i in fit_on]],
    )
    predicted = projector.transform([item.tokens() for item in held])
    unit = trained.vectors / np.linalg.norm(trained.vectors, axis=1, keepdims=True)
    truth = unit[[pos[item.item_id] for item in held]]
    assert np.allclose(np.linalg.norm(predicted, axis=1), 1.0, atol=1e-5)
    matched = np.sum(predicted * truth, axis=1).mean()
    shuffled = np.sum(predicted * truth[np.random.default_rng(2).permutation(len(truth))], axis=1).mean()
    assert matched > shuffled + 0.05
    # Rank of the item's own (unseen) trained vector among all items: well above chance (n / 2).
    scores = predicted @ unit.T
    ranks = [(scores[i] > scores[i, pos[item.item_id]]).sum() for i, item in enumerate(held)]
    assert np.median(ranks) < 0.35 * len(unit)


def test_content_embeddings_in_a_trained_space(items) -> None:
    trained = ml100k_item2vec()
    extra = ItemText("new-1", "Star Wars: The Next One", ("Action", "Sci-Fi"), 1999)
    embeddings, projector = content_embeddings([*items, extra], trained)
    assert len(embeddings) == 1683 and embeddings.dim == trained.dim and projector.method == "ridge"
    assert embeddings.model == "content" and embeddings.metadata["space"] == trained.version
    assert embeddings.metadata["metrics"]["warm_cosine"] > 0.5
    assert [item.item_id for item in cold_items([*items, extra], trained)] == ["new-1"]
    assert np.allclose(np.linalg.norm(embeddings.vectors, axis=1), 1.0, atol=1e-5)


def test_random_projection_keeps_similarities(items, tfidf_space) -> None:
    pos, x = tfidf_space
    first, _ = content_embeddings(items, dim=64, seed=3)
    again, _ = content_embeddings(items, dim=64, seed=3)
    np.testing.assert_array_equal(first.vectors, again.vectors)
    assert first.metadata["projection"] == "random"
    sample = np.random.default_rng(4).choice(len(items), size=200, replace=False)
    original = (x[sample] @ x[sample].T)[np.triu_indices(200, 1)]
    projected = (first.vectors[sample] @ first.vectors[sample].T)[np.triu_indices(200, 1)]
    assert np.corrcoef(original, projected)[0, 1] > 0.6


def test_content_from_event_categories() -> None:
    events = [
        Event(f"e{i}", 1.7e9 + i, "u", item, "view", category=cat)
        for i, (item, cat) in enumerate([("p1", "shoes"), ("p2", "shoes"), ("p3", "hats"), ("p1", "sale")])
    ]
    texts = texts_from_events(events)
    assert texts[0] == ItemText("p1", "", ("shoes", "sale"))
    embeddings, _ = content_embeddings(texts, dim=8, min_df=1)
    v = dict(zip(embeddings.item_ids, embeddings.vectors, strict=True))
    assert v["p1"] @ v["p2"] > v["p1"] @ v["p3"]


def test_errors() -> None:
    with pytest.raises(ModelError, match="no item metadata"):
        content_embeddings([], dim=8)
    with pytest.raises(ModelError, match="dimension"):
        content_embeddings([ItemText("a", "x y"), ItemText("b", "x z")], min_df=1)
    trained = ItemEmbeddings.create(np.eye(3, dtype=np.float32), ["p", "q", "r"], "mf")
    with pytest.raises(ModelError, match="only 0 items"):
        content_embeddings([ItemText("a", "x y"), ItemText("b", "x z")], trained, min_df=1)
