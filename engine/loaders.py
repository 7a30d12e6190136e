"""Event-log loaders: a file in one of the known layouts -> a time-sorted list of :class:`Event`.

Formats (``fmt``):

- ``events``: our own log, CSV with a header (``ts,user_id,item_id,type`` or ``event_type``, optional
  ``session_id,price,category,rating,event_id``) or JSON lines with the same names.
- ``yoochoose``: session-rec's tab-separated ``SessionId ItemId Time``, or the original RecSys'15
  ``session,timestamp(ISO),item,category`` clicks without header. Every row is a click; the session
  id is also the user id.
- ``movielens``: RecBole ``.inter``, classic ``u.data``, ``ratings.csv`` or ``ratings.dat``.
  Every rating is a ``view`` carrying its rating.
- ``taobao``: Alibaba ``UserBehavior.csv`` (``user_id,item_id,category_id,behavior,timestamp``).
- ``retailrocket``: ``events.csv`` (``timestamp,visitorid,event,itemid,transactionid``, milliseconds).

Every event gets a deterministic id from its format and 0-based data-row number, so loading the
same file twice yields the same ids (and a replay is deduplicated). A row that cannot be parsed is
a :class:`LoaderError` naming the file, the line and the reason; only blank lines are skipped.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

import orjson

from engine.errors import LoaderError
from engine.events import EVENT_TYPES, MAX_ID_LENGTH, MAX_TS, MIN_TS, Event, make_event_id

FORMATS: tuple[str, ...] = ("events", "yoochoose", "movielens", "taobao", "retailrocket")
CSV_COLUMNS: tuple[str, ...] = (
    "ts",
    "user_id",
    "item_id",
    "type",
    "session_id",
    "price",
    "category",
    "rating",
    "event_id",
)

_OWN_TYPES = {kind: kind for kind in EVENT_TYPES}
_TAOBAO_TYPES = {"pv": "view", "fav": "click", "cart": "add_to_cart", "buy": "purchase"}
_RETAILROCKET_TYPES = {"view": "view", "addtocart": "add_to_cart", "transaction": "purchase"}
_BY_TS = attrgetter("ts")

Row = list[str]
Parser = Callable[[Row, int], Event]  # (fields, 0-based data-row number) -> event


class _BadRow(ValueError):
    """A data row that cannot be read; the message is the reason (file and line are added later)."""


# --- field helpers -------------------------------------------------------------------------------


def _ident(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _BadRow(f"{name} must be a string or integer, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise _BadRow(f"empty {name}")
    if len(text) > MAX_ID_LENGTH:
        raise _BadRow(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if "\n" in text or "\r" in text or "\x00" in text:
        raise _BadRow(f"{name} contains control characters")
    return text


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or value is None:
        raise _BadRow(f"{name} {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _BadRow(f"{name} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise _BadRow(f"{name} {value!r} is not finite")
    return number


def _timestamp(
    value: Any, name: str = "timestamp", divisor: float = 1.0, number: float | None = None
) -> float:
    ts = (_number(value, name) if number is None else number) / divisor
    if not MIN_TS <= ts < MAX_TS:
        hint = " (milliseconds instead of seconds?)" if ts >= MAX_TS else ""
        raise _BadRow(f"{name} {value!r} is outside unix seconds 1990..2100{hint}")
    return ts


def _iso_timestamp(value: str, name: str = "timestamp") -> float:
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _BadRow(f"{name} {value!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _timestamp(value, name, number=moment.timestamp())


def _optional(value: Any) -> Any:
    """``None`` for a missing or empty value, else the value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


def _mapped(value: Any, table: dict[str, str], name: str) -> str:
    mapped = table.get(value.strip().lower()) if isinstance(value, str) else None
    if mapped is None:
        raise _BadRow(f"unknown {name} {str(value)[:40]!r}; expected one of {', '.join(table)}")
    return mapped


def _width(row: Row, width: int) -> None:
    if len(row) != width:
        raise _BadRow(f"expected {width} fields, got {len(row)}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- reading -------------------------------------------------------------------------------------


class _Source:
    """One open file: its first non-blank line (to detect the layout) and its rows with line numbers."""

    def __init__(self, path: Path, fh: IO[str]) -> None:
        self.name = path.name
        self.fh = fh

    def first_line(self) -> str:
        for line in self.fh:
            if line.strip():
                break
        else:
            line = ""
        self.fh.seek(0)
        return line

    def error(self, line_num: int, reason: object) -> LoaderError:
        return LoaderError(f"{self.name}, line {line_num}: {reason}")

    def csv_rows(self, delimiter: str) -> Iterator[tuple[int, Row]]:
        reader = csv.reader(self.fh, delimiter=delimiter, strict=True)
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                yield reader.line_num, row
        except csv.Error as exc:
            raise self.error(reader.line_num, exc) from None

    def split_rows(self, separator: str) -> Iterator[tuple[int, Row]]:
        for line_num, line in enumerate(self.fh, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield line_num, line.split(separator)

    def parse(self, rows: Iterable[tuple[int, Row]], parse: Parser, limit: int | None) -> list[Event]:
        events: list[Event] = []
        if limit == 0:
            return events
        append = events.append
        n = 0
        for line_num, row in rows:
            try:
                append(parse(row, n))
            except _BadRow as exc:
                raise self.error(line_num, exc) from None
            n += 1
            if n == limit:
                break
        return events


def _layout(
    src: _Source,
    rows: Iterator[tuple[int, Row]],
    wanted: dict[str, tuple[str, ...]],
    default_width: int,
    optional: dict[str, tuple[str, ...]] | None = None,
) -> tuple[Iterator[tuple[int, Row]], dict[str, int | None], int] | None:
    """Column positions from a header row, or the default order (``wanted`` then ``optional``) when
    the first row is data (its first field is a number). ``None`` for a file without rows."""
    first = next(rows, None)
    if first is None:
        return None
    optional = optional or {}
    line_num, row = first
    if _is_number(row[0]):
        names = [*wanted, *optional]
        return chain([first], rows), {key: i for i, key in enumerate(names)}, default_width
    columns = {name.split(":")[0].strip().lower(): i for i, name in enumerate(row)}  # RecBole name:type
    found = {
        key: next((columns[a] for a in aliases if a in columns), None)
        for key, aliases in {**wanted, **optional}.items()
    }
    missing = [aliases[0] for key, aliases in wanted.items() if found[key] is None]
    if missing:
        raise src.error(line_num, f"header lacks column(s) {', '.join(missing)}")
    return rows, found, len(row)


# --- formats -------------------------------------------------------------------------------------

_OWN_REQUIRED = {
    "ts": ("ts", "timestamp"),
    "user_id": ("user_id",),
    "item_id": ("item_id",),
    "type": ("type", "event_type"),
}
_OWN_OPTIONAL = {name: (name,) for name in ("session_id", "price", "category", "rating", "event_id")}


def _own_event(n: int, fields: dict[str, Any]) -> Event:
    ts = _timestamp(fields["ts"], "ts")
    user_id = _ident(fields["user_id"], "user_id")
    item_id = _ident(fields["item_id"], "item_id")
    etype = _mapped(fields["type"], _OWN_TYPES, "event type")
    session, price, category, rating, event_id = (_optional(fields.get(k)) for k in _OWN_OPTIONAL)
    if price is not None and (price := _number(price, "price")) < 0:
        raise _BadRow(f"price {price!r} is negative")
    return Event(
        event_id=make_event_id("events", n, user_id, item_id, ts, etype)
        if event_id is None
        else _ident(event_id, "event_id"),
        ts=ts,
        user_id=user_id,
        item_id=item_id,
        type=etype,
        session_id=None if session is None else _ident(session, "session_id"),
        price=price,
        category=None if category is None else _ident(category, "category"),
        rating=None if rating is None else _number(rating, "rating"),
    )


def _load_own(src: _Source, limit: int | None) -> list[Event]:
    if src.first_line().lstrip().startswith("{"):
        return _load_jsonl(src, limit)
    layout = _layout(src, src.csv_rows(","), _OWN_REQUIRED, len(CSV_COLUMNS), _OWN_OPTIONAL)
    if layout is None:
        return []
    rows, idx, width = layout
    present = [(key, i) for key, i in idx.items() if i is not None]

    def parse(row: Row, n: int) -> Event:
        _width(row, width)
        return _own_event(n, {key: row[i] for key, i in present})

    return src.parse(rows, parse, limit)


def _load_jsonl(src: _Source, limit: int | None) -> list[Event]:
    def rows() -> Iterator[tuple[int, Any]]:
        for line_num, line in enumerate(src.fh, start=1):
            if line.strip():
                try:
                    yield line_num, orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise src.error(line_num, f"not valid JSON: {exc}") from None

    def parse(obj: Any, n: int) -> Event:
        if not isinstance(obj, dict):
            raise _BadRow(f"expected a JSON object, got {type(obj).__name__}")
        if "type" not in obj and "event_type" in obj:
            obj["type"] = obj["event_type"]
        for name in _OWN_REQUIRED:
            if obj.get(name) is None:
                raise _BadRow(f"missing field '{name}'")
        return _own_event(n, obj)

    return src.parse(rows(), parse, limit)


def _click(n: int, session: str, item: str, ts: float, category: str | None = None) -> Event:
    return Event(
        make_event_id("yoochoose", n, session, item, ts, "click"),
        ts,
        session,
        item,
        "click",
        session,
        category=category,
    )


def _load_yoochoose(src: _Source, limit: int | None) -> list[Event]:
    if "\t" in src.first_line():  # session-rec: SessionId ItemId Time (unix seconds)
        wanted = {
            "session": ("sessionid", "session_id"),
            "item": ("itemid", "item_id"),
            "time": ("time", "timestamp"),
        }
        layout = _layout(src, src.csv_rows("\t"), wanted, 3)
        if layout is None:
            return []
        rows, idx, width = layout
        i_session, i_item, i_time = idx["session"], idx["item"], idx["time"]

        def parse(row: Row, n: int) -> Event:
            _width(row, width)
            return _click(
                n,
                _ident(row[i_session], "SessionId"),
                _ident(row[i_item], "ItemId"),
                _timestamp(row[i_time], "Time"),
            )

        return src.parse(rows, parse, limit)

    # RecSys'15 clicks: session,timestamp(ISO),item,category, no header
    wanted = {
        "session": ("session", "session_id"),
        "time": ("timestamp", "time"),
        "item": ("item", "item_id"),
        "category": ("category",),
    }
    layout = _layout(src, src.csv_rows(","), wanted, 4)
    if layout is None:
        return []
    rows, idx, width = layout
    i_session, i_time, i_item, i_cat = (idx[k] for k in wanted)

    def parse_clicks(row: Row, n: int) -> Event:
        _width(row, width)
        category = row[i_cat].strip()  # "0" means unknown in this dataset
        return _click(
            n,
            _ident(row[i_session], "session"),
            _ident(row[i_item], "item"),
            _iso_timestamp(row[i_time]),
            _ident(category, "category") if category not in ("", "0") else None,
        )

    return src.parse(rows, parse_clicks, limit)


def _load_movielens(src: _Source, limit: int | None) -> list[Event]:
    first_line = src.first_line()
    if not first_line:
        return []
    if "::" in first_line:
        rows = src.split_rows("::")
    elif "\t" in first_line or "," in first_line:
        rows = src.csv_rows("\t" if "\t" in first_line else ",")
    else:
        raise src.error(1, "cannot tell the MovieLens layout: expected tab, comma or '::' separated fields")
    wanted = {
        "user": ("user_id", "userid", "user"),
        "item": ("item_id", "movieid", "movie_id", "itemid", "item"),
        "ts": ("timestamp", "ts", "time"),
    }
    # without a header the order is user, item, rating, timestamp
    layout = _layout(
        src,
        rows,
        {"user": wanted["user"], "item": wanted["item"]},
        4,
        {"rating": ("rating",), "ts": wanted["ts"]},
    )
    if layout is None:
        return []
    rows, idx, width = layout
    i_user, i_item, i_rating, i_ts = idx["user"], idx["item"], idx["rating"], idx["ts"]
    if i_ts is None:
        raise src.error(1, "header lacks column(s) timestamp")

    def parse(row: Row, n: int) -> Event:
        _width(row, width)
        user = _ident(row[i_user], "user_id")
        item = _ident(row[i_item], "item_id")
        rating = None if i_rating is None else _number(row[i_rating], "rating")
        ts = _timestamp(row[i_ts])
        return Event(
            make_event_id("movielens", n, user, item, ts, "view"), ts, user, item, "view", rating=rating
        )

    return src.parse(rows, parse, limit)


def _load_taobao(src: _Source, limit: int | None) -> list[Event]:
    # no header in the dataset; a header line, if any, is skipped by _layout (its columns unused)
    wanted = {
        "user": ("user_id",),
        "item": ("item_id",),
        "category": ("category_id",),
        "behavior": ("behavior",),
        "ts": ("timestamp",),
    }
    layout = _layout(src, src.csv_rows(","), wanted, 5)
    if layout is None:
        return []
    rows, idx, width = layout
    i_user, i_item, i_cat, i_beh, i_ts = (idx[k] for k in wanted)

    def parse(row: Row, n: int) -> Event:
        _width(row, width)
        user = _ident(row[i_user], "user_id")
        item = _ident(row[i_item], "item_id")
        etype = _mapped(row[i_beh], _TAOBAO_TYPES, "behavior")
        ts = _timestamp(row[i_ts])
        return Event(
            make_event_id("taobao", n, user, item, ts, etype),
            ts,
            user,
            item,
            etype,
            category=_ident(row[i_cat], "category_id"),
        )

    return src.parse(rows, parse, limit)


def _load_retailrocket(src: _Source, limit: int | None) -> list[Event]:
    wanted = {"ts": ("timestamp",), "user": ("visitorid",), "event": ("event",), "item": ("itemid",)}
    layout = _layout(src, src.csv_rows(","), wanted, 5)
    if layout is None:
        return []
    rows, idx, width = layout
    i_ts, i_user, i_event, i_item = (idx[k] for k in wanted)

    def parse(row: Row, n: int) -> Event:
        _width(row, width)
        ts = _timestamp(row[i_ts], "timestamp (ms)", divisor=1000.0)
        user = _ident(row[i_user], "visitorid")
        item = _ident(row[i_item], "itemid")
        etype = _mapped(row[i_event], _RETAILROCKET_TYPES, "event")
        return Event(make_event_id("retailrocket", n, user, item, ts, etype), ts, user, item, etype)

    return src.parse(rows, parse, limit)


_LOADERS: dict[str, Callable[[_Source, int | None], list[Event]]] = dict(
    zip(FORMATS, (_load_own, _load_yoochoose, _load_movielens, _load_taobao, _load_retailrocket), strict=True)
)


# --- public API ----------------------------------------------------------------------------------


def load_events(path: Path | str, fmt: str, limit: int | None = None) -> list[Event]:
    """Read ``path`` in format ``fmt`` (one of :data:`FORMATS`), at most ``limit`` data rows.

    Returns the events sorted by timestamp; the sort is stable, so ties keep file order.
    Raises :class:`LoaderError` for a missing file, an unknown format or a row that cannot be read.
    """
    loader = _LOADERS.get(fmt.strip().lower()) if isinstance(fmt, str) else None
    if loader is None:
        raise LoaderError(f"unknown event-log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if limit is not None and limit < 0:
        raise LoaderError(f"limit must not be negative, got {limit}")
    path = Path(path)
    if not path.exists():
        raise LoaderError(f"event log {str(path)!r} does not exist")
    if not path.is_file():
        raise LoaderError(f"event log {str(path)!r} is not a file")
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            events = loader(_Source(path, fh), limit)
    except UnicodeDecodeError as exc:
        raise LoaderError(
            f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start} of a chunk)"
        ) from None
    except OSError as exc:
        raise LoaderError(f"{path.name}: cannot read: {exc.strerror or exc}") from None
    events.sort(key=_BY_TS)
    return events


def _cell(value: object) -> str:
    # repr of a float is the shortest text that reads back as the same float
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def write_events_csv(events: Iterable[Event], path: Path | str) -> int:
    """Write ``events`` in the ``events`` CSV layout (header :data:`CSV_COLUMNS`); returns the row count.

    ``load_events(path, "events")`` reads the same events back, ids included.
    """
    path = Path(path)
    count = 0
    try:
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for ev in events:
                writer.writerow([_cell(getattr(ev, name)) for name in CSV_COLUMNS])
                count += 1
    except OSError as exc:
        raise LoaderError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    return count
