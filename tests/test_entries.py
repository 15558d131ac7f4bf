"""Entry lists: CSV reading, and import through the sidecar (create, update, problems)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.entries import read_entry_list
from sidecar.errors import InvalidParams
from tests.sidecar_process import SidecarProcess


def test_an_organisers_export_is_read_with_its_own_column_names() -> None:
    text = ("Nr.\tFahrer\tEntrant\tCat.\tVehicle\tLivery\tSponsor\n"
            "24B\tA. Rider\tMoto Team\tSuperbike\tR1\tblue + white\tAcme\n"
            "\n"
            "5\tB. Rider\t\t\t\t\t\textra\n"
            "\t\t\t\t\t\t\n")
    entries, problems = read_entry_list(text)
    assert [index for index, _ in entries] == [0]
    (_, entry), = entries
    assert (entry.number, entry.driver, entry.team, entry.car_class, entry.car) == ("24B", "A. Rider", "Moto Team", "Superbike", "R1")
    assert entry.colours == ["blue", "white"] and entry.meta == {"Sponsor": "Acme"}
    assert [(p.row, "more cells" in p.message) for p in problems] == [(2, True)]


def test_quoted_cells_keep_their_separators() -> None:
    (_, entry), = read_entry_list('number,driver,team\n7,"Driver, A. / Driver, B.","Team, Ltd"\n')[0]
    assert (entry.driver, entry.team) == ("Driver, A. / Driver, B.", "Team, Ltd")


def test_a_list_without_a_number_or_label_column_is_refused_by_name() -> None:
    with pytest.raises(InvalidParams, match="no number or label column"):
        read_entry_list("driver,team\nA,B\n")


def test_import_creates_then_updates_and_reports_the_rows_it_leaves_out(tmp_path: Path) -> None:
    process = SidecarProcess("json")
    try:
        process.request("initialize", {"library": str(tmp_path / "lib")}, id="init")
        first = process.request("entries.import", {"rows": [
            {"number": "#7", "driver": "A", "team": "T", "class": "GT3"},
            {"number": "7", "driver": "B", "class": "GT4"},   # the same number in another class: another car
            {"number": "7", "class": "gt3"},                  # the first row again
            {"driver": "nobody"},                             # neither number nor label
            {"label": "Safety car", "meta": {"role": "official"}},
        ]}, id="first")["result"]
        assert (first["created"], first["updated"]) == (3, 0)
        assert [p["row"] for p in first["problems"]] == [2, 3]
        assert [c["label"] for c in first["cars"]] == ["#7 A", "#7 B", "Safety car"]
        gt3, gt4, safety = first["cars"]

        again = process.request("entries.import", {"rows": [
            {"number": "7", "class": "GT3", "driver": "A / C", "colours": ["red"]},
            {"number": "7"},                                  # two cars carry 7: which one?
            {"label": "Safety car", "team": "FIA"},
        ]}, id="again")["result"]
        assert (again["created"], again["updated"]) == (0, 2)
        assert [p["row"] for p in again["problems"]] == [1] and "class" in again["problems"][0]["message"]
        updated = {c["id"]: c for c in again["cars"]}
        assert updated[gt3["id"]]["driver"] == "A / C" and updated[gt3["id"]]["label"] == "#7 A"  # label kept
        assert updated[gt3["id"]]["meta"] == {"class": "GT3", "colours": ["red"]}
        assert updated[safety["id"]]["team"] == "FIA" and updated[safety["id"]]["meta"] == {"role": "official"}
        assert len(process.request("cars.list", id="list")["result"]["cars"]) == 3

        both = process.request("entries.import", {"rows": [], "csv": "x.csv"}, id="both")["error"]
        assert both["code"] == -32602 and "exactly one" in both["message"]
        assert gt4["number"] == "7"
        assert "uptime_s" in process.request("ping", id="ping")["result"]
    finally:
        process.kill()
