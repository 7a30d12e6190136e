"""JSON Schemas of the records streamrec publishes, shipped as package data.

>>> recs_schema()["title"]
'streamrec recommendation record'
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def recs_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a value on the ``recs`` topic."""
    return json.loads((resources.files(__package__) / "recs.schema.json").read_text(encoding="utf-8"))
