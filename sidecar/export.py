"""Exports of the tagging results: a CSV or JSON report, or XMP sidecar
files whose keywords Lightroom and Photo Mechanic read. Originals are never
touched; every file is written beside and renamed into place."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from sidecar.engine import Engine
from sidecar.files import write_atomic
from sidecar.library.store import CarRow, DetectionRow
from sidecar.protocol.endpoint import RequestContext
from sidecar.protocol.messages import ExportParams, ExportResult

CSV_COLUMNS = [
    "photo", "detection_id", "x1", "y1", "x2", "y2", "detector_score", "decision", "car_id", "car", "number", "team",
    "driver", "score", "review", "sensor_x1", "sensor_y1", "sensor_x2", "sensor_y2", "number_read", "decided_by",
    "conflict", "words_read",
]
PAGE = 5000


def sensor_box(row: DetectionRow) -> list[float] | None:
    """A RAW photo's box in sensor pixels (its preview was analysed)."""
    if row.sensor_scale is None:
        return None
    return [round(v * row.sensor_scale, 1) for v in row.box]


def identified_car(row: DetectionRow) -> str | None:
    """The car a detection stands for after review: a confirmed car, or an
    unreviewed match; a rejected match stands for nothing."""
    if row.review == "rejected":
        return None
    return row.car_id if (row.review == "confirmed" or row.decision == "match") else None


def xmp_document(cars: list[CarRow], numbers: list[str]) -> str:
    """Keywords for the identified cars and for the racing numbers read in a
    photo (a number is worth a keyword even on a car nobody enrolled)."""
    keywords: list[str] = []
    hierarchy: list[str] = []
    for car in cars:
        keywords += [car.label] + ([f"#{car.number}"] if car.number else []) + [v for v in (car.team, car.driver) if v]
        hierarchy.append(f"Cars|{car.label}")
        hierarchy += [f"Teams|{car.team}"] if car.team else []
        hierarchy += [f"Drivers|{car.driver}"] if car.driver else []
    for number in numbers:
        keywords.append(f"#{number}")
        hierarchy.append(f"Numbers|{number}")

    def bag(items: list[str]) -> str:
        unique = list(dict.fromkeys(items))
        return "".join(f"\n     <rdf:li>{escape(item)}</rdf:li>" for item in unique)

    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="liveryid">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        '    xmlns:lr="http://ns.adobe.com/lightroom/1.0/">\n'
        f"   <dc:subject>\n    <rdf:Bag>{bag(keywords)}\n    </rdf:Bag>\n   </dc:subject>\n"
        f"   <lr:hierarchicalSubject>\n    <rdf:Bag>{bag(hierarchy)}\n    </rdf:Bag>\n   </lr:hierarchicalSubject>\n"
        "  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n<?xpacket end=\"w\"?>\n"
    )


class Exporter:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _all_detections(self) -> list[DetectionRow]:
        store = self.engine.library().store
        rows: list[DetectionRow] = []
        while True:
            page, total = store.query_detections(None, None, None, None, None, PAGE, len(rows))
            rows += page
            if not page or len(rows) >= total:
                return rows

    def export(self, params: ExportParams, context: RequestContext) -> ExportResult:
        library = self.engine.library()
        cars = {car.id: car for car in library.store.cars()}
        rows = self._all_detections()
        if params.format == "xmp":
            return self._xmp(rows, cars, params.overwrite)
        output = Path(params.output) if params.output else library.folder / f"export.{params.format}"
        if params.format == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(CSV_COLUMNS)
            for row in rows:
                car = cars.get(row.car_id) if row.car_id else None
                evidence = row.evidence or {}
                raw_box = sensor_box(row)
                in_sensor: list[object] = list(raw_box) if raw_box else ["", "", "", ""]
                writer.writerow([
                    row.path, row.id, *row.box, row.detector_score, row.decision, row.car_id or "",
                    car.label if car else "", (car.number or "") if car else "", (car.team or "") if car else "",
                    (car.driver or "") if car else "", "" if row.score is None else row.score, row.review or "",
                    *in_sensor, row.number or "", "+".join(evidence.get("decided_by", [])),
                    evidence.get("conflict") or "", " ".join(evidence.get("words", [])),
                ])
            write_atomic(output, buffer.getvalue())
        else:
            photos: dict[str, list[dict[str, object]]] = defaultdict(list)
            for row in rows:
                car = cars.get(row.car_id) if row.car_id else None
                photos[row.path].append({
                    "detection_id": row.id, "box": row.box, "detector_score": row.detector_score,
                    "decision": row.decision, "car_id": row.car_id, "car": car.label if car else None,
                    "number": car.number if car else None, "team": car.team if car else None,
                    "driver": car.driver if car else None, "score": row.score, "review": row.review,
                    "sensor_box": sensor_box(row), "number_read": row.number, "evidence": row.evidence,
                })
            document = {"photos": [{"path": path, "detections": dets} for path, dets in sorted(photos.items())]}
            write_atomic(output, json.dumps(document, indent=2) + "\n")
        return ExportResult(format=params.format, files=[str(output)], skipped=[], rows=len(rows))

    def _xmp(self, rows: list[DetectionRow], cars: dict[str, CarRow], overwrite: bool) -> ExportResult:
        # RAW+JPEG pairs share one sidecar (IMG_1.NEF and IMG_1.JPG -> IMG_1.xmp), as Lightroom does.
        by_sidecar: dict[Path, tuple[list[CarRow], list[str]]] = defaultdict(lambda: ([], []))
        for row in rows:
            car_id = identified_car(row)
            photo_cars, numbers = by_sidecar[Path(row.path).with_suffix(".xmp")]
            if car_id in cars and cars[car_id] not in photo_cars:
                photo_cars.append(cars[car_id])
            if row.number and row.review != "rejected" and row.number not in numbers:
                numbers.append(row.number)
        written, skipped = [], []
        for sidecar, (photo_cars, numbers) in sorted(by_sidecar.items()):
            if not photo_cars and not numbers:
                continue
            if sidecar.exists() and not overwrite:
                skipped.append(str(sidecar))
                continue
            write_atomic(sidecar, xmp_document(photo_cars, numbers))
            written.append(str(sidecar))
        return ExportResult(format="xmp", files=written, skipped=skipped, rows=len(rows))

    def handlers(self) -> dict[str, Callable[[Any, RequestContext], Any]]:
        return {"export": self.export}
