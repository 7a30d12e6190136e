"""What the storefront page shows: ML-100k titles when the dataset is at hand, else generated products.

Item ids match the events the rest of streamrec sees: ML-100k item ids for the demo's replay,
``i<n>`` for the synthetic generator (engine/generator.py names its items that way).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelError, StreamrecError

ML100K_ITEMS = Path("shared") / "data" / "ml-100k" / "ml-100k.item"

_ADJECTIVES = (
    "Classic",
    "Compact",
    "Deluxe",
    "Everyday",
    "Nordic",
    "Organic",
    "Pocket",
    "Retro",
    "Smart",
    "Urban",
)
_NOUNS = (
    "Backpack", "Blender", "Candle", "Desk Lamp", "Headphones", "Kettle", "Mug", "Notebook",
    "Plant Pot", "Rain Jacket", "Running Shoes", "Scarf", "Sunglasses", "Teapot", "Watch",
)  # fmt: skip


@dataclass
class Catalogue:
    source: str
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "items": self.items}


def default_path() -> Path | None:
    """ML-100k next to the working directory or next to this checkout (../shared/data)."""
    here = Path(__file__).resolve()
    for base in (Path.cwd().parent, Path.cwd(), here.parents[3] if len(here.parents) > 3 else here.parent):
        candidate = base / ML100K_ITEMS
        if candidate.is_file():
            return candidate
    return None


def movielens(path: Path) -> Catalogue:
    from models.content import load_movielens_items

    try:
        rows = load_movielens_items(path)
    except ModelError as exc:
        raise StreamrecError(f"cannot read the catalogue: {exc}") from None
    items = [
        {
            "item_id": row.item_id,
            "title": row.title or f"Item {row.item_id}",
            "subtitle": " · ".join(filter(None, [str(row.year or ""), ", ".join(row.categories[:3])])),
        }
        for row in rows
    ]
    return Catalogue(source=f"MovieLens-100k ({path.name})", items=items)


def generated(n_items: int = 300, seed: int = 7) -> Catalogue:
    rng = random.Random(seed)
    items = []
    for i in range(n_items):
        title = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        items.append({"item_id": f"i{i}", "title": title, "subtitle": f"${rng.uniform(4, 180):.2f}"})
    return Catalogue(source="generated products", items=items)


def load_catalogue(path: Path | None) -> Catalogue:
    """The configured file, else ML-100k if found, else generated products."""
    path = path or default_path()
    if path is None:
        return generated()
    if not path.is_file():
        raise StreamrecError(f"catalogue file {str(path)!r} does not exist")
    return movielens(path)
