"""Content vectors for cold items: TF-IDF over title/category text, projected into the trained space.

A trained model has no vector for an item nobody has touched yet. Its metadata does exist, so:

1. each item's text becomes field-tagged tokens (``t:star``, ``c:sci-fi``, ``d:1970s``) - tagging
   keeps the genre "Drama" apart from the title word "drama";
2. TF-IDF (smoothed idf, sublinear tf, L2-normalised rows) in a small numpy CSR matrix;
3. a linear map into the embedding dimension: either a fixed seeded random projection (no trained
   model yet: cosine is roughly preserved, Johnson-Lindenstrauss), or ridge regression from the
   TF-IDF of *warm* items onto their trained unit vectors, so that a cold item lands where trained
   items with similar content live and can be served from the same ANN index.

Large vocabularies are first reduced with a seeded random projection to ``rank`` columns; the
ridge normal equations are accumulated in row chunks, so memory is bounded by ``rank**2`` and a
chunk, not by the catalogue.

>>> docs = [ItemText("1", "Star Wars", ("Sci-Fi", "War")), ItemText("2", "Toy Story", ("Animation",)),
...         ItemText("3", "Return of the Jedi", ("Sci-Fi", "War"))]
>>> tfidf = TfidfModel.fit([d.tokens() for d in docs])
>>> x = tfidf.transform([d.tokens() for d in docs]).to_dense()
>>> bool(x[0] @ x[2] > x[0] @ x[1])
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelError
from engine.events import Event
from models.artifacts import ItemEmbeddings

NAME = "content"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Title words that say nothing about a movie or product; everything else is left to idf.
_STOPWORDS = frozenset("a an and at by for from in into is it of on or the to with".split())
_UNKNOWN = frozenset({"", "unknown", "unkonwn", "none", "null", "nan", "0"})  # ML-100k has "unkonwn"
_CHUNK = 8192


@dataclass(frozen=True, slots=True)
class ItemText:
    """The content of one item: a title, categories/genres, and an optional year.

    >>> ItemText("50", "Star Wars", ("Sci-Fi", "War"), 1977).tokens()
    ['t:star', 't:wars', 'c:sci-fi', 'c:war', 'd:1970s']
    """

    item_id: str
    title: str = ""
    categories: tuple[str, ...] = ()
    year: int | None = None

    def tokens(self) -> list[str]:
        """Field-tagged tokens: title words, categories, and the decade."""
        out = [f"t:{w}" for w in _WORD.findall(self.title.lower()) if w not in _STOPWORDS]
        out += [f"c:{c.strip().lower()}" for c in self.categories if c.strip().lower() not in _UNKNOWN]
        if self.year is not None:
            # The decade only: an exact year is rare, so idf would make it outweigh every genre.
            out.append(f"d:{self.year // 10 * 10}s")
        return out


def load_movielens_items(path: Path | str) -> list[ItemText]:
    """Read a RecBole ``.item`` file (``item_id:token movie_title:token_seq release_year:token
    class:token_seq``, tab-separated, typed header). Genres are space-separated tokens."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelError(f"item metadata file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path.name}: cannot read: {exc}") from None
    if not lines:
        return []
    header = [name.split(":")[0].strip().lower() for name in lines[0].split("\t")]

    def column(*names: str) -> int | None:
        return next((header.index(n) for n in names if n in header), None)

    i_id, i_title = column("item_id"), column("movie_title", "title")
    i_year, i_class = column("release_year", "year"), column("class", "genre", "genres", "category")
    if i_id is None:
        raise ModelError(f"{path.name}, line 1: header lacks an item_id column")
    items: list[ItemText] = []
    for line_num, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ModelError(
                f"{path.name}, line {line_num}: expected {len(header)} fields, got {len(fields)}"
            )
        item_id = fields[i_id].strip()
        if not item_id:
            raise ModelError(f"{path.name}, line {line_num}: empty item_id")
        title = fields[i_title].strip() if i_title is not None else ""
        year_text = fields[i_year].strip() if i_year is not None else ""
        year = int(year_text) if year_text.isdigit() else None
        classes = tuple(fields[i_class].split()) if i_class is not None else ()
        items.append(ItemText(item_id, "" if title.lower() in _UNKNOWN else title, classes, year))
    return items


def texts_from_events(events: Iterable[Event]) -> list[ItemText]:
    """Item content from the events themselves: the categories each item was seen with."""
    categories: dict[str, dict[str, None]] = {}
    for event in events:
        seen = categories.setdefault(event.item_id, {})
        if event.category is not None:
            seen[event.category] = None
    return [ItemText(item, "", tuple(cats)) for item, cats in categories.items()]


# --- TF-IDF --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SparseRows:
    """A CSR matrix [n, n_cols] in three numpy arrays (no scipy in the dependencies)."""

    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int64 [nnz]
    data: np.ndarray  # float32 [nnz]
    n_cols: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def rows(self, start: int, stop: int) -> SparseRows:
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        return SparseRows(self.indptr[start : stop + 1] - a, self.indices[a:b], self.data[a:b], self.n_cols)

    def dot(self, dense: np.ndarray) -> np.ndarray:
        """``self @ dense`` for a dense [n_cols, d] matrix."""
        # Row sums as differences of a running sum: vectorised, and empty rows come out as zero.
        terms = self.data[:, None].astype(np.float64) * dense[self.indices]
        running = np.vstack([np.zeros((1, dense.shape[1])), np.cumsum(terms, axis=0)])
        return running[self.indptr[1:]] - running[self.indptr[:-1]]

    def to_dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.n_cols), dtype=np.float32)
        out[np.repeat(np.arange(len(self)), np.diff(self.indptr)), self.indices] = self.data
        return out


# Genres/categories describe what an item *is*; title words are noisier (a shared "story" or
# "the" says little) and a decade is weak evidence. Applied on top of idf, per field tag.
FIELD_WEIGHTS: dict[str, float] = {"c": 1.0, "t": 0.6, "d": 0.3}


@dataclass(frozen=True, eq=False)
class TfidfModel:
    """A fitted vocabulary and its inverse document frequencies (times the field weight)."""

    vocabulary: dict[str, int]
    idf: np.ndarray  # float32 [V], field weight included

    @classmethod
    def fit(
        cls,
        docs: Sequence[Sequence[str]],
        min_df: int = 1,
        max_features: int | None = None,
        field_weights: dict[str, float] | None = None,
    ) -> TfidfModel:
        """Tokens seen in at least ``min_df`` documents (the ``max_features`` most frequent).

        ``field_weights`` maps a token's tag (before ``:``) to a multiplier, default
        :data:`FIELD_WEIGHTS`; untagged or unlisted tags weigh 1.
        """
        weights = FIELD_WEIGHTS if field_weights is None else field_weights
        df: dict[str, int] = {}
        for doc in docs:
            for token in set(doc):
                df[token] = df.get(token, 0) + 1
        kept = sorted((t for t, c in df.items() if c >= min_df), key=lambda t: (-df[t], t))
        if max_features is not None:
            kept = kept[:max_features]
        n = len(docs)
        # sklearn's smoothed idf: as if one extra document held every token (no division by zero).
        idf = np.array(
            [(math.log((1 + n) / (1 + df[t])) + 1.0) * weights.get(t.partition(":")[0], 1.0) for t in kept],
            dtype=np.float32,
        )
        return cls({t: i for i, t in enumerate(kept)}, idf)

    def __len__(self) -> int:
        return len(self.vocabulary)

    def transform(self, docs: Sequence[Sequence[str]]) -> SparseRows:
        """Rows of ``(1 + log tf) * idf``, L2-normalised; unknown tokens are ignored."""
        indptr, indices, data = [0], [], []
        for doc in docs:
            counts: dict[int, int] = {}
            for token in doc:
                col = self.vocabulary.get(token)
                if col is not None:
                    counts[col] = counts.get(col, 0) + 1
            cols = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
            weights = (
                1.0 + np.log(np.array([counts[c] for c in cols.tolist()], dtype=np.float32))
            ) * self.idf[cols]
            norm = float(np.linalg.norm(weights))
            indices.append(cols)
            data.append(weights / norm if norm > 0 else weights)
            indptr.append(indptr[-1] + len(cols))
        return SparseRows(
            np.array(indptr, dtype=np.int64),
            np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
            np.concatenate(data).astype(np.float32) if data else np.zeros(0, dtype=np.float32),
            len(self),
        )


# --- projection into the embedding space ---------------------------------------------------------


def _gaussian(rows: int, cols: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0 / math.sqrt(cols), size=(rows, cols))


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class ContentProjector:
    """TF-IDF -> ``dim``-d vectors: ``x @ weights + intercept``, then L2-normalised."""

    tfidf: TfidfModel
    weights: np.ndarray  # float64 [V, dim]
    intercept: np.ndarray  # float64 [dim]
    method: str  # "random" or "ridge"

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    @classmethod
    def random(cls, tfidf: TfidfModel, dim: int, seed: int = 0) -> ContentProjector:
        """A fixed seeded Gaussian projection (same seed and vocabulary -> same space)."""
        return cls(tfidf, _gaussian(len(tfidf), dim, seed), np.zeros(dim), "random")

    @classmethod
    def fit(
        cls,
        tfidf: TfidfModel,
        x: SparseRows,
        targets: np.ndarray,
        reg: float = 1.0,
        rank: int = 1024,
        seed: int = 0,
    ) -> ContentProjector:
        """Ridge regression of ``targets`` (trained vectors, one row per row of ``x``) on TF-IDF.

        Targets are unit-normalised first: serving compares by cosine, and long vectors of
        popular items should not dominate the fit. Vocabularies above ``rank`` are reduced by a
        seeded random projection first (the solve is then ``rank x rank``).
        """
        if len(x) != len(targets) or len(x) == 0:
            raise ModelError(f"ridge fit needs one target per row: {len(x)} rows, {len(targets)} targets")
        y = _unit(np.asarray(targets, dtype=np.float64)).astype(np.float64)
        v = len(tfidf)
        reduce = _gaussian(v, rank, seed) if v > rank else None
        r = rank if reduce is not None else v
        gram, cross = np.zeros((r + 1, r + 1)), np.zeros((r + 1, y.shape[1]))
        for start in range(0, len(x), _CHUNK):
            part = x.rows(start, min(start + _CHUNK, len(x)))
            z = part.dot(reduce) if reduce is not None else part.to_dense().astype(np.float64)
            z = np.hstack([z, np.ones((len(z), 1))])  # the last column fits an intercept
            gram += z.T @ z
            cross += z.T @ y[start : start + len(z)]
        penalty = np.full(r + 1, reg)
        penalty[-1] = 1e-6  # do not shrink the intercept (the mean direction of the space)
        solution = np.linalg.solve(gram + np.diag(penalty), cross)
        w, b = solution[:-1], solution[-1]
        return cls(tfidf, reduce @ w if reduce is not None else w, b, "ridge")

    def transform(self, docs: Sequence[Sequence[str]]) -> np.ndarray:
        """Unit vectors [n, dim] float32; a document with no known token gets the intercept
        (the centre of the warm items) - or zeros for a random projection."""
        x = self.tfidf.transform(docs)
        out = np.empty((len(x), self.dim), dtype=np.float32)
        for start in range(0, len(x), _CHUNK):
            part = x.rows(start, min(start + _CHUNK, len(x)))
            out[start : start + len(part)] = part.dot(self.weights) + self.intercept
        return _unit(out)


def content_embeddings(
    items: Sequence[ItemText],
    trained: ItemEmbeddings | None = None,
    dim: int | None = None,
    reg: float = 1.0,
    min_df: int = 2,
    seed: int = 0,
) -> tuple[ItemEmbeddings, ContentProjector]:
    """Content vectors for every item in ``items``, in ``trained``'s space when given.

    With ``trained``, the projection is a ridge fit on the items both know (at least 2 needed),
    and ``metadata["metrics"]["warm_cosine"]`` is the mean cosine between a warm item's content
    vector and its trained vector (a fit diagnostic, in-sample). Without it, a random projection
    into ``dim`` dimensions. Use :func:`cold_items` to keep only what the model lacks.
    """
    if not items:
        raise ModelError("no item metadata to build content vectors from")
    docs = [item.tokens() for item in items]
    tfidf = TfidfModel.fit(docs, min_df=min_df)
    if len(tfidf) == 0:
        raise ModelError("item metadata has no usable tokens (titles/categories are all empty)")
    metrics: dict[str, float] = {}
    if trained is None:
        if dim is None:
            raise ModelError("content vectors need a dimension (dim) or a trained space to fit")
        projector = ContentProjector.random(tfidf, dim, seed)
    else:
        pos = trained.positions()
        warm = [i for i, item in enumerate(items) if item.item_id in pos]
        if len(warm) < 2:
            raise ModelError(f"only {len(warm)} items have both metadata and a trained vector; need 2")
        x_warm = tfidf.transform([docs[i] for i in warm])
        y_warm = trained.vectors[[pos[items[i].item_id] for i in warm]]
        projector = ContentProjector.fit(tfidf, x_warm, y_warm, reg=reg, seed=seed)
    vectors = projector.transform(docs)
    if trained is not None:
        rows = [i for i, item in enumerate(items) if item.item_id in pos]
        truth = _unit(trained.vectors[[pos[items[i].item_id] for i in rows]])
        metrics["warm_cosine"] = round(float(np.mean(np.sum(vectors[rows] * truth, axis=1))), 6)
    embeddings = ItemEmbeddings.create(
        vectors,
        [item.item_id for item in items],
        NAME,
        trained_on={"items": len(items), "vocabulary": len(tfidf)},
        metrics=metrics,
        projection=projector.method,
        space=trained.version if trained is not None else None,
    )
    return embeddings, projector


def cold_items(items: Iterable[ItemText], trained: ItemEmbeddings) -> list[ItemText]:
    """The items the trained model has no vector for."""
    known = set(trained.item_ids)
    return [item for item in items if item.item_id not in known]
