"""Tunable parameters of the engine's pure logic (state deltas and scoring)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    """Environment: ``STREAMREC_ENGINE_<FIELD>`` (e.g. ``STREAMREC_ENGINE_TOP_K=50``)."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_ENGINE_", extra="ignore")

    top_k: int = Field(20, ge=1, le=1000, description="recommendations per user")
    history_length: int = Field(50, ge=1, le=10_000, description="recent items kept per user")
    cooccurrence_window: int = Field(5, ge=1, le=100, description="earlier items an event is paired with")
    cooccurrence_decay: float = Field(0.8, gt=0, le=1, description="weight factor per step of distance")
    max_neighbours: int = Field(100, ge=1, description="neighbours kept per item (trimmed at 2x)")
    dedup_window: int = Field(1000, ge=1, description="recent event ids remembered per user")
    popularity_half_life_s: float = Field(86_400.0, gt=0, description="half-life of trending scores")
    weight_view: float = 1.0
    weight_click: float = 1.0
    weight_add_to_cart: float = 3.0
    weight_purchase: float = 5.0
    recent_items: int = Field(10, ge=1, description="recent items whose neighbours are candidates")
    recency_decay: float = Field(0.7, gt=0, le=1, description="weight of the n-th most recent item")
    trending_weight: float = Field(0.05, ge=0, description="blend weight of trending items")
    trending_candidates: int = Field(100, ge=1)
    trending_refresh_s: float = Field(
        1.0,
        ge=0,
        description="longest a worker's scoring reuses the trending items it read (they decay over "
        "`popularity_half_life_s`); 0: read them for every poll",
    )
    exclude_history: bool = Field(True, description="never recommend items in the user's recent history")
    history_cache_users: int = Field(
        100_000,
        ge=0,
        description="users whose recent histories a worker's scoring keeps in memory, fed by its "
        "own writes, while it holds the session replica (owns every partition), instead of reading "
        "them back every poll; the least recently scored go first. 0: read them every poll",
    )
    user_vector_decay: float = Field(0.9, gt=0, le=1, description="per-event decay of the user embedding")
    ann_weight: float = Field(0.5, ge=0, description="blend weight of embedding (ANN) candidates")
    ann_candidates: int = Field(50, ge=1, description="nearest items fetched per user vector")
    session_gap_s: float = Field(1800.0, gt=0, description="inactivity that starts a new session")
    session_model: Literal["sessions", "users", "off"] = Field(
        "sessions",
        description="session-kNN + sequential-rules preset that ranks candidates (engine.sessionknn."
        "PRESETS): `sessions` for session-based shops, `users` for long user histories; `off`: "
        "co-occurrence scoring",
    )

    cooccurrence_rows: Literal["auto", "on", "off"] = Field(
        "auto",
        description="keep the symmetric co-occurrence rows (`co:<item>`, `cooccurrence_window` items "
        "apart) in the state: `auto` keeps them only when they rank (`session_model` off); with the "
        "session model on, its sequential-rule rows are the item-item co-occurrence that ranks, and "
        "they also give cold items their vectors. Changing it on a live state needs a replay",
    )

    @model_validator(mode="after")
    def _rows_that_rank(self) -> EngineSettings:
        if self.session_model == "off" and self.cooccurrence_rows == "off":
            raise ValueError(
                "cooccurrence_rows=off needs a session model: with session_model=off the "
                "co-occurrence rows are what ranks"
            )
        return self

    @property
    def keeps_cooccurrence(self) -> bool:
        """Whether batches write the co-occurrence rows (see ``cooccurrence_rows``)."""
        if self.cooccurrence_rows == "auto":
            return self.session_model == "off"
        return self.cooccurrence_rows == "on"

    def type_weight(self, event_type: str) -> float:
        return float(getattr(self, f"weight_{event_type}"))
