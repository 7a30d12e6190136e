"""Engine settings: which co-occurrence rows a batch writes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.config import EngineSettings


@pytest.mark.parametrize(
    ("session_model", "rows", "kept"),
    [
        ("sessions", "auto", False),  # the session model's rule rows rank
        ("users", "auto", False),
        ("off", "auto", True),  # co-occurrence scoring needs its rows
        ("sessions", "on", True),
        ("users", "off", False),
        ("off", "on", True),
    ],
)
def test_rows_are_kept_where_they_rank_unless_asked(session_model: str, rows: str, kept: bool) -> None:
    settings = EngineSettings(session_model=session_model, cooccurrence_rows=rows)  # type: ignore[arg-type]
    assert settings.keeps_cooccurrence is kept


def test_switching_off_the_rows_that_rank_is_refused() -> None:
    with pytest.raises(ValidationError, match="co-occurrence rows are what ranks"):
        EngineSettings(session_model="off", cooccurrence_rows="off")


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_ENGINE_COOCCURRENCE_ROWS", "on")
    assert EngineSettings().keeps_cooccurrence
