"""Event-log loaders: every layout on small inline files, the error messages, and the real datasets."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import LoaderError
from engine.events import Event, make_event_id, validate_event
from engine.loaders import CSV_COLUMNS, FORMATS, load_events, write_events_csv

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def ev(fmt: str, row: int, ts: float, user: str, item: str, kind: str, **extra: object) -> Event:
    """The event that row ``row`` of a ``fmt`` file should become (generated id)."""
    return Event(make_event_id(fmt, row, user, item, ts, kind), ts, user, item, kind, **extra)  # type: ignore[arg-type]


def error_of(path: Path, fmt: str) -> str:
    with pytest.raises(LoaderError) as info:
        load_events(path, fmt)
    return str(info.value)


# --- events (our own layout) ---------------------------------------------------------------------


def test_formats_are_the_documented_five() -> None:
    assert FORMATS == ("events", "yoochoose", "movielens", "taobao", "retailrocket")


def test_events_csv_sorted_with_generated_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "log.csv",
        (
            "ts,user_id,item_id,event_type,session_id,price,category,rating\n"
            "1700000020,u1,i2,purchase,s1,9.5,c3,\n"
            "1700000010,u1,i2,view,s1,9.5,c3,\n"
            "1700000010,u2,i7,click,,,,4.5\n"
        ),
    )
    assert load_events(path, "events") == [
        ev("events", 1, 1700000010.0, "u1", "i2", "view", session_id="s1", price=9.5, category="c3"),
        ev("events", 2, 1700000010.0, "u2", "i7", "click", rating=4.5),  # tie: file order kept
        ev("events", 0, 1700000020.0, "u1", "i2", "purchase", session_id="s1", price=9.5, category="c3"),
    ]


def test_events_csv_keeps_event_id_and_accepts_type_column_in_any_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "log.csv",
        ("event_id,user_id,type,item_id,ts\ne-1,u1,add_to_cart,i9,1700000000.5\n,u2,view,i9,1700000001\n"),
    )
    first, second = load_events(path, "events")
    assert first == Event("e-1", 1700000000.5, "u1", "i9", "add_to_cart")
    assert second == ev("events", 1, 1700000001.0, "u2", "i9", "view")  # empty id -> generated


def test_events_json_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "log.jsonl",
        (
            '{"ts": 1700000005, "user_id": 7, "item_id": "i1", "event_type": "view", "price": 3}\n'
            "\n"
            '{"event_id": "x9", "ts": 1700000001.25, "user_id": "u8", "item_id": 42, "type": "purchase",'
            ' "session_id": "s", "category": "c1", "rating": 5}\n'
        ),
    )
    assert load_events(path, "events") == [
        Event("x9", 1700000001.25, "u8", "42", "purchase", session_id="s", category="c1", rating=5.0),
        ev("events", 0, 1700000005.0, "7", "i1", "view", price=3.0),
    ]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            "ts,user_id,item_id,type\n1700000000,u,i,view\n\n1700000000,u,i,like\n",
            4,
            "unknown event type 'like'",
        ),
        ("ts,user_id,item_id,type\nnoon,u,i,view\n", 2, "ts 'noon' is not a number"),
        ("ts,user_id,item_id,type\n1700000000000,u,i,view\n", 2, "milliseconds"),
        ("ts,user_id,item_id,type\n1700000000,u,i\n", 2, "expected 4 fields, got 3"),
        ("ts,user_id,item_id,type\n1700000000,,i,view\n", 2, "empty user_id"),
        ("ts,user_id,item_id,type,price\n1700000000,u,i,view,-1\n", 2, "negative"),
        ("ts,user,item_id,type\n1700000000,u,i,view\n", 1, "header lacks column(s) user_id"),
        (
            '{"ts": 1700000000, "user_id": "u", "item_id": "i", "type": "view"}\n{"ts": 17\n',
            2,
            "not valid JSON",
        ),
        ('{"ts": 1700000000, "user_id": "u", "type": "view"}\n', 1, "missing field 'item_id'"),
        ('{"ts": 1700000000, "user_id": "u", "item_id": "i", "type": "view"}\n[1]\n', 2, "JSON object"),
    ],
)
def test_events_errors_name_file_line_and_reason(tmp_path: Path, text: str, line: int, reason: str) -> None:
    message = error_of(write(tmp_path, "bad.csv", text), "events")
    assert f"bad.csv, line {line}:" in message
    assert reason in message


# --- yoochoose -----------------------------------------------------------------------------------


def test_yoochoose_session_rec_layout(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "clicks.txt",
        "SessionId\tItemId\tTime\n3\t214716935\t1396437466.94\n"
        "3\t214832672\t1396438212.318\n1\t5\t1396437000\n",
    )
    assert load_events(path, "yoochoose") == [
        ev("yoochoose", 2, 1396437000.0, "1", "5", "click", session_id="1"),
        ev("yoochoose", 0, 1396437466.94, "3", "214716935", "click", session_id="3"),
        ev("yoochoose", 1, 1396438212.318, "3", "214832672", "click", session_id="3"),
    ]


def test_yoochoose_original_recsys15_clicks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "yoochoose-clicks.dat",
        "1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500,S\n",
    )
    t0 = datetime(2014, 4, 7, 10, 51, 9, 277000, tzinfo=UTC).timestamp()
    t1 = datetime(2014, 4, 7, 10, 54, 9, 868000, tzinfo=UTC).timestamp()
    assert load_events(path, "yoochoose") == [
        ev("yoochoose", 0, t0, "1", "214536502", "click", session_id="1"),  # category 0 = unknown
        ev("yoochoose", 1, t1, "1", "214536500", "click", session_id="1", category="S"),
    ]
    bad = write(tmp_path, "bad.dat", "1,2014-04-07T10:51:09.277Z,214536502,0\n2,yesterday,5,0\n")
    assert "bad.dat, line 2: timestamp 'yesterday' is not an ISO 8601 date-time" in error_of(bad, "yoochoose")


# --- movielens -----------------------------------------------------------------------------------

MOVIELENS_EXPECTED = [
    ev("movielens", 1, 881250000.0, "186", "302", "view", rating=3.0),
    ev("movielens", 0, 881250949.0, "196", "242", "view", rating=3.5),
]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "ml.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3.5\t881250949\n"
            "186\t302\t3\t881250000\n",
        ),
        ("u.data", "196\t242\t3.5\t881250949\n186\t302\t3\t881250000\n"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n196,242,3.5,881250949\n186,302,3.0,881250000\n"),
        ("ratings.dat", "196::242::3.5::881250949\r\n186::302::3::881250000\r\n"),
    ],
)
def test_movielens_layouts_give_the_same_events(tmp_path: Path, name: str, text: str) -> None:
    assert load_events(write(tmp_path, name, text), "movielens") == MOVIELENS_EXPECTED


def test_movielens_bad_rating_line(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", "196\t242\t3\t881250949\n\n186\t302\tgood\t881250000\n")
    assert "u.data, line 3: rating 'good' is not a number" in error_of(path, "movielens")


# --- taobao --------------------------------------------------------------------------------------


def test_taobao_behaviours_and_categories(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "UserBehavior.csv",
        (
            "1,2268318,2520377,pv,1511544070\n"
            "1,2268318,2520377,fav,1511544080\n"
            "1,2268318,2520377,cart,1511544090\n"
            "1,2268318,2520377,buy,1511544100\n"
            "2,5,7,pv,1511500000\n"
        ),
    )
    assert load_events(path, "taobao") == [
        ev("taobao", 4, 1511500000.0, "2", "5", "view", category="7"),
        ev("taobao", 0, 1511544070.0, "1", "2268318", "view", category="2520377"),
        ev("taobao", 1, 1511544080.0, "1", "2268318", "click", category="2520377"),
        ev("taobao", 2, 1511544090.0, "1", "2268318", "add_to_cart", category="2520377"),
        ev("taobao", 3, 1511544100.0, "1", "2268318", "purchase", category="2520377"),
    ]
    bad = write(tmp_path, "UB.csv", "1,2,3,pv,1511544070\n1,2,3,like,1511544070\n")
    assert "UB.csv, line 2: unknown behavior 'like'; expected one of pv, fav, cart, buy" in error_of(
        bad, "taobao"
    )


# --- retailrocket --------------------------------------------------------------------------------


def test_retailrocket_milliseconds_and_events(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "events.csv",
        (
            "timestamp,visitorid,event,itemid,transactionid\n"
            "1433221332117,257597,view,355908,\n"
            "1433224214164,992329,addtocart,248676,\n"
            "1433221000000,992329,transaction,248676,4000\n"
        ),
    )
    assert load_events(path, "retailrocket") == [
        ev("retailrocket", 2, 1433221000.0, "992329", "248676", "purchase"),
        ev("retailrocket", 0, 1433221332.117, "257597", "355908", "view"),
        ev("retailrocket", 1, 1433224214.164, "992329", "248676", "add_to_cart"),
    ]
    bad = write(
        tmp_path, "ev.csv", "timestamp,visitorid,event,itemid,transactionid\n1433221332117,1,click,2,\n"
    )
    assert "ev.csv, line 2: unknown event 'click'" in error_of(bad, "retailrocket")


# --- common behaviour ----------------------------------------------------------------------------


def test_missing_file_directory_and_unknown_format(tmp_path: Path) -> None:
    assert "does not exist" in error_of(tmp_path / "nope.csv", "events")
    assert "is not a file" in error_of(tmp_path, "events")
    message = error_of(write(tmp_path, "a.csv", "x"), "parquet")
    assert "'parquet'" in message and ", ".join(FORMATS) in message


def test_not_utf8_is_a_loader_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"ts,user_id,item_id,type\n1700000000,caf\xe9,i,view\n")
    assert "not UTF-8" in error_of(path, "events")


def test_empty_and_blank_files_give_no_events(tmp_path: Path) -> None:
    for fmt in FORMATS:
        assert load_events(write(tmp_path, "empty.txt", ""), fmt) == []
        assert load_events(write(tmp_path, "blank.txt", "\n  \n\n"), fmt) == []


def test_limit_reads_the_first_rows_then_sorts(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", "1\t1\t5\t900000003\n\n2\t2\t5\t900000001\n3\t3\t5\t900000000\n")
    assert [e.user_id for e in load_events(path, "movielens", limit=2)] == ["2", "1"]
    assert load_events(path, "movielens", limit=0) == []
    assert len(load_events(path, "movielens", limit=10)) == 3
    with pytest.raises(LoaderError, match="negative"):
        load_events(path, "movielens", limit=-1)


def test_ids_are_deterministic_and_distinct_per_row(tmp_path: Path) -> None:
    # two identical rows are two events (a user may view an item twice in a second)
    path = write(
        tmp_path, "UserBehavior.csv", "1,2,3,pv,1511544070\n1,2,3,pv,1511544070\n4,5,6,buy,1511544071\n"
    )
    first = load_events(path, "taobao")
    second = load_events(path, "taobao")
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert len({e.event_id for e in first}) == 3
    # the id depends on the format too
    assert make_event_id("taobao", 0, "1", "2", 1511544070.0, "view") == first[0].event_id
    assert make_event_id("events", 0, "1", "2", 1511544070.0, "view") != first[0].event_id


def test_every_loaded_event_is_valid(tmp_path: Path) -> None:
    path = write(tmp_path, "UserBehavior.csv", "1,2,3,pv,1511544070\n4,5,6,buy,1511544071\n")
    for event in load_events(path, "taobao"):
        assert validate_event(event.to_dict()) == event


def test_write_events_csv_round_trips(tmp_path: Path) -> None:
    events = [
        Event("a", 1700000000.123456, "u1", "i1", "view", session_id="s,1", price=0.1 + 0.2, category="007"),
        Event("b", 1700000001.0, "u2", 'i"2', "purchase", rating=4.5),
        ev("events", 2, 1700000002.0, "u3", "i3", "add_to_cart", price=0.0),
    ]
    out = tmp_path / "out.csv"
    assert write_events_csv(events, out) == 3
    assert out.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert load_events(out, "events") == events
    # and a loaded foreign log survives the trip with its ids
    src = write(tmp_path, "UserBehavior.csv", "1,2,3,pv,1511544070\n4,5,6,buy,1511544071\n")
    loaded = load_events(src, "taobao")
    write_events_csv(loaded, out)
    assert load_events(out, "events") == loaded


# --- the real datasets ---------------------------------------------------------------------------


def real(relative: str) -> Path:
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"real dataset {path} is absent (see shared/data/README.md)")
    return path


def test_real_movielens_100k() -> None:
    path = real("ml-100k/ml-100k.inter")
    started = time.perf_counter()
    events = load_events(path, "movielens")
    elapsed = time.perf_counter() - started
    assert len(events) == 100_000
    assert len({e.user_id for e in events}) == 943
    assert len({e.item_id for e in events}) == 1682
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:], strict=False))
    assert {e.rating for e in events} == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len({e.event_id for e in events}) == 100_000
    head = load_events(path, "movielens", limit=100)
    assert len(head) == 100 and {e.event_id for e in head} <= {e.event_id for e in events}
    assert elapsed < 3.0  # about 0.4 s on a laptop core; generous for slow CI


def test_real_taobao_sample() -> None:
    events = load_events(real("taobao-sample/UserBehavior.csv"), "taobao")
    assert len(events) == 4321
    assert len({e.user_id for e in events}) == 43
    assert len({e.item_id for e in events}) == 3276
    assert sum(e.type == "purchase" for e in events) == 77
    assert {e.type for e in events} == {"view", "click", "add_to_cart", "purchase"}
    assert all(e.category for e in events)


def test_real_yoochoose_train_full() -> None:
    events = load_events(real("yoochoose-100k/yoochoose-clicks-100k_train_full.txt"), "yoochoose")
    assert len(events) == 70_278
    assert {e.type for e in events} == {"click"}
    assert all(e.user_id == e.session_id for e in events)
    test = load_events(real("yoochoose-100k/yoochoose-clicks-100k_test.txt"), "yoochoose")
    assert len(test) == 13_568
    assert len({e.session_id for e in test}) == 3_416
