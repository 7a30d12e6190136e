"""``eval_command``: tiny logs in the real layouts through the whole report (table, JSON, plot)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from deploy.eval_command import eval_command
from engine.errors import ConfigurationError, LoaderError

T0 = 1_400_000_000


def yoochoose_file(path: Path, sessions: range, seed: int, start: float) -> Path:
    """Sessions walking a ring of 30 items, in session-rec's tab-separated layout."""
    rng = random.Random(seed)
    lines = ["SessionId\tItemId\tTime"]
    ts = start
    for s in sessions:
        item = rng.randrange(30)
        for _ in range(rng.randint(2, 5)):
            lines.append(f"{s}\t{1000 + item}\t{ts:.3f}")
            ts += 7.5
            item = (item + 1) % 30
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def movielens_files(folder: Path) -> Path:
    rng = random.Random(4)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    seen: set[tuple[int, int]] = set()
    ts = T0
    while len(lines) <= 600:  # header + 600 ratings
        user, item = rng.randrange(25), rng.randrange(60)
        if (user, item) in seen:
            continue
        seen.add((user, item))
        lines.append(f"{user}\t{item}\t{rng.randint(1, 5)}\t{ts}")
        ts += 60
    inter = folder / "tiny.inter"
    inter.write_text("\n".join(lines) + "\n", encoding="utf-8")
    genres = ["Action", "Comedy", "Drama", "Horror"]
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{i}\tFilm {i}\t1995\t{genres[i % 4]} {genres[(i + 1) % 4]}" for i in range(60)]
    (folder / "tiny.item").write_text("\n".join(items) + "\n", encoding="utf-8")
    return inter


def quiet_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=160, color_system=None), buffer


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_next_item_report_table_json_and_plot(tmp_path: Path) -> None:
    train = yoochoose_file(tmp_path / "train.txt", range(0, 150), seed=1, start=T0)
    test = yoochoose_file(tmp_path / "test.txt", range(150, 190), seed=2, start=T0 + 10_000)
    console, buffer = quiet_console()
    report = eval_command(
        train, test, "yoochoose", "next-item", "frozen", [20, 10], "default",
        tmp_path / "report.json", tmp_path / "curves.png", console=console,
    )  # fmt: skip
    assert report["model"] == "session-knn"
    assert report["ks"] == [10, 20]
    assert report["n_targets"] > 50
    assert {"HR@20", "MRR@20", "NDCG@10", "Precision@10", "Recall@20", "Coverage@20", "PopBias@20"} <= set(
        report["metrics"]
    )
    assert set(report["baselines"]) == {"popularity", "recent-popularity", "cooccurrence", "als", "vsknn"}
    assert report["metrics"]["HR@20"] > report["baselines"]["popularity"]["HR@20"]
    assert report["config"]["preset"] == "sessions"
    written = orjson.loads((tmp_path / "report.json").read_bytes())
    assert written["n_targets"] == report["n_targets"]
    assert written["metrics"] == report["metrics"]
    assert written["baselines"] == report["baselines"]
    curve = written["curves"]["by_model"]["session-knn"]["HR@20"]
    assert curve and curve[-1][0] == report["n_targets"]
    text = buffer.getvalue()
    assert "next-item (frozen)" in text and "session-knn" in text and "cooccurrence" in text
    if has_matplotlib():
        assert report["plot"] == str(tmp_path / "curves.png")
        assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert report["plot"] is None and "matplotlib is not installed" in report["plot_error"]
        assert "matplotlib is not installed" in text
        assert not (tmp_path / "curves.png").exists()


def test_prequential_report_with_ratings_genres_and_segments(tmp_path: Path) -> None:
    inter = movielens_files(tmp_path)
    console, buffer = quiet_console()
    report = eval_command(
        None, inter, "movielens", "prequential", "frozen", [5], "session-knn", None, None,
        baselines=["popularity", "svd"], console=console,
    )  # fmt: skip
    assert report["mode"] == "streaming"  # prequential always learns
    assert report["config"]["preset"] == "users"
    assert report["info"]["warmup_events"] == 120
    assert report["info"]["categories"] == 60
    assert 0.0 <= report["metrics"]["ILD@5"] <= 1.0
    assert "RMSE" in report["baselines"]["svd"] and "MAE" in report["baselines"]["svd"]
    assert set(report["segments"]) <= {"warm", "cold-user", "new-item"}
    assert sum(s["n_targets"] for s in report["segments"].values()) == report["n_targets"]
    assert "RMSE" in buffer.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "next-item", "train": None}, "needs --train"),
        ({"protocol": "prequential"}, "one log"),
        ({"protocol": "sideways"}, "unknown protocol"),
        ({"mode": "later"}, "unknown mode"),
        ({"ks": [0]}, "cut-offs"),
        ({"model": "magic"}, "unknown model"),
        ({"fmt": "parquet"}, "unknown format"),
    ],
)
def test_bad_options_are_clear_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    train = yoochoose_file(tmp_path / "train.txt", range(0, 5), seed=1, start=T0)
    args = dict(
        train=train, test=train, fmt="yoochoose", protocol="next-item", mode="frozen", ks=[10],
        model="session-knn", json_path=None, plot_path=None,
    )  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ConfigurationError, match=message):
        eval_command(**args, console=quiet_console()[0])


def test_missing_log_is_a_loader_error(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="does not exist"):
        eval_command(
            None, tmp_path / "nope.inter", "movielens", "prequential", "frozen", [10], "default", None, None,
            console=quiet_console()[0],
        )  # fmt: skip
