"""Entry lists: the organiser's list of who races (number, drivers, team,
class, car), imported as cars. A car from the list has no references until
the user enrolls some; its number alone lets identify name it."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from sidecar.engine import Engine
from sidecar.errors import InvalidParams
from sidecar.library.store import CarRow
from sidecar.protocol.endpoint import RequestContext
from sidecar.identification import car_message
from sidecar.protocol.messages import EntriesImportParams, EntriesImportResult, Entry, EntryProblem
from sidecar.stages.fuse import normalise_number

MAX_ENTRY_LIST_BYTES = 10 * 1024 * 1024
# Header names organisers' exports use, lower-cased, for each Entry field.
COLUMNS = {
    "number": {"number", "no", "no.", "nr", "nr.", "#", "num", "car number", "car no", "car no.", "race number", "startnummer"},
    "label": {"label", "name", "entry"},
    "driver": {"driver", "drivers", "driver(s)", "rider", "riders", "crew", "pilot", "pilote", "fahrer"},
    "team": {"team", "entrant", "team name", "équipe", "equipe"},
    "class": {"class", "category", "cat", "cat.", "klasse", "classe"},
    "car": {"car", "car model", "model", "vehicle", "make", "chassis", "fahrzeug"},
    "colours": {"colours", "colors", "colour", "color", "livery"},
}
COLOUR_SEPARATORS = re.compile(r"\s*[/,;+&]\s*")


def read_entry_list(text: str) -> tuple[list[tuple[int, Entry]], list[EntryProblem]]:
    """The (row index, entry) of a CSV entry list (header row first; `,` `;`
    tab or `|` separated), and the rows that cannot be read."""
    header = text.split("\n", 1)[0]
    # The header's most frequent separator (csv.Sniffer gives up on lists with empty cells).
    separator = max(",;\t|", key=header.count)
    rows = list(csv.reader(io.StringIO(text), delimiter=separator))
    if not rows:
        return [], []
    fields = {}
    for position, name in enumerate(rows[0]):
        key = name.strip().lower()
        fields[position] = next((field for field, names in COLUMNS.items() if key in names), name.strip())
    if not any(field in ("number", "label") for field in fields.values()):
        raise InvalidParams("the entry list's header names no number or label column "
                            f"(it has: {', '.join(c.strip() for c in rows[0])})", {"field": "params.csv"})
    entries, problems = [], []
    for index, row in enumerate(rows[1:]):
        if not any(cell.strip() for cell in row):
            continue
        values: dict[str, Any] = {"meta": {}}
        for position, cell in enumerate(row):
            field, cell = fields.get(position), cell.strip()
            if field is None:
                problems.append(EntryProblem(row=index, message=f"more cells ({len(row)}) than header columns ({len(fields)})"))
                break
            if not cell:
                continue
            if field == "colours":
                values["colours"] = [c for c in COLOUR_SEPARATORS.split(cell) if c]
            elif field in COLUMNS:
                values[field] = cell
            else:
                values["meta"][field] = cell
        else:
            entries.append((index, msgspec.convert(values, Entry)))
    return entries, problems


class Entries:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def import_entries(self, params: EntriesImportParams, context: RequestContext) -> EntriesImportResult:
        library = self.engine.library()
        problems: list[EntryProblem] = []
        if params.csv is not None:
            rows, problems = read_entry_list(_read_text(Path(params.csv)))
        else:
            rows = list(enumerate(params.rows or []))
        existing = library.store.cars()
        planned: list[tuple[str, dict[str, Any], bool]] = []
        seen: set[tuple[str, str]] = set()
        for index, entry in rows:
            number = normalise_number(entry.number or "") or None
            if number is None and not entry.label:
                problems.append(EntryProblem(row=index, message="a row needs a number or a label"))
                continue
            key = ("number", f"{number}|{(entry.car_class or '').lower()}") if number else ("label", entry.label or "")
            if key in seen:
                problems.append(EntryProblem(row=index, message=f"an earlier row has the same {key[0]} ({number or entry.label})"))
                continue
            seen.add(key)
            matches = _same_car(existing, number, entry)
            if len(matches) > 1:
                problems.append(EntryProblem(row=index, message=(
                    f"{len(matches)} enrolled cars carry number {number}: give the row a class to say which")))
                continue
            fields = _fields(entry, number, matches[0] if matches else None)
            planned.append((matches[0].id if matches else f"car-{uuid.uuid4().hex[:10]}", fields, not matches))
        saved = library.save_cars([(car_id, fields) for car_id, fields, _ in planned])
        created = sum(new for _, _, new in planned)
        return EntriesImportResult(
            created=created, updated=len(planned) - created, cars=[car_message(row) for row in saved],
            problems=sorted(problems, key=lambda p: p.row))

    def handlers(self) -> dict[str, Callable[[Any, RequestContext], Any]]:
        return {"entries.import": self.import_entries}


def _read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_ENTRY_LIST_BYTES:
            raise InvalidParams(f"the entry list {path} is over {MAX_ENTRY_LIST_BYTES // 2**20} MB", {"field": "params.csv"})
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidParams(f"cannot read the entry list {path}: {exc.strerror or exc}", {"field": "params.csv"}) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # spreadsheet exports on Windows


def _same_car(cars: list[CarRow], number: str | None, entry: Entry) -> list[CarRow]:
    """Enrolled cars a row stands for: same number (and class, when both say), else same label."""
    if number is None:
        return [car for car in cars if car.label == entry.label]
    found = [car for car in cars if car.number and normalise_number(car.number) == number]
    if entry.car_class and len(found) > 1:
        found = [car for car in found if str(car.meta.get("class", "")).lower() == entry.car_class.lower()]
    return found


def _fields(entry: Entry, number: str | None, existing: CarRow | None) -> dict[str, Any]:
    """The car fields a row sets: those it gives (an existing car keeps the others, and its references)."""
    meta = dict(existing.meta) if existing else {}
    meta.update(entry.meta)
    meta.update({k: v for k, v in (("class", entry.car_class), ("car", entry.car), ("colours", entry.colours)) if v})
    fields: dict[str, Any] = {"meta": meta}
    fields.update({k: v for k, v in (("number", number), ("driver", entry.driver), ("team", entry.team)) if v})
    if entry.label or existing is None:
        fields["label"] = entry.label or " ".join(
            part for part in (f"#{number}" if number else None, entry.driver or entry.team) if part)
    return fields

