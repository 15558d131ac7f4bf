"""The sidecar's configuration: one typed object, built once at start from
the command line and environment, then passed down. Nothing reads the
environment anywhere else."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

# Where `build.py models` writes the ONNX files and where the manifest lives.
# In the Nuitka build the models folder sits beside the package, exactly as
# in the source tree, so one rule finds it in both.
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    models_dir: Path = DEFAULT_MODELS_DIR
    # The project's vehicle detector (a retrained head first, COCO's vehicle
    # classes where it finds nothing); "nanodet-m-coco" is the generic one.
    detector: str = "liveryid-vehicle-nanodet"
    # The project's re-identification embedder; "mobilenetv2-imagenet" is the
    # generic one it was trained from (a fallback, and the "before" of eval).
    embedder: str = "liveryid-reid-mnv2"
    # The number reader's two models (PP-OCR text detection and recognition).
    text_detector: str = "ppocr-v6-det-small"
    text_reader: str = "ppocr-v6-rec-small"
    # Overrides the manifest's colour fusion weight (0 = the embedding alone):
    # for measuring what the colours add, not for everyday use.
    colour_weight: float | None = None
    # Overrides the manifest's box jitter (0 = each box embedded once, not
    # averaged with its grown and shrunk copies): likewise for measuring; the
    # manifest's threshold is calibrated for its own jitter.
    box_jitter: float | None = None
    # Requests run on this many worker threads; the read loop stays free for
    # ping and cancellation.
    workers: int = 2
    # Threads each ONNX Runtime session may use inside one run. Two halves
    # the latency of a single call on a two-core machine (detect 57 -> 37 ms,
    # `python -m bench.speed`); batch throughput is tuned separately.
    intra_op_threads: int = 2
    # ONNX Runtime's threads spin, by default, waiting for the next parallel
    # section of a run. On two cores that spinning takes the CPU the
    # read-ahead decoders and the Python between runs need: without it tag
    # went from 3.1 to 4.3-4.7 photos/s (9.7 to 13-17 without numbers), and
    # single calls take about as long (`python -m bench.throughput`,
    # `LIVERYID_SPIN_WAIT=true python -m bench.speed`).
    spin_wait: bool = False
    # identify and tag decode a large JPEG at 1/2, 1/4 or 1/8 size (libjpeg's
    # DCT scaling, several times faster) while its longest side stays at least
    # this: the number reader looks at up to 960 px of each car.
    decode_side: int = 2048
    # The same when numbers are not read: the detector needs 416 px, the
    # embedder 224 per car (a car a tenth of a 1024-px photo keeps 100 px).
    decode_side_without_numbers: int = 1024
    # Photos tag reads and decodes ahead in worker threads while the models
    # run (OpenCV and hashlib release the GIL); 0 does everything in turn.
    tag_prefetch: int = 2
    # Refuse images beyond these before decoding: a 45 MP camera is ~46 M
    # pixels; 200 M leaves room for panoramas while bounding memory (~600 MB
    # of BGR pixels).
    max_image_pixels: int = 200_000_000
    max_file_bytes: int = 512 * 1024 * 1024
    # Largest protocol frame accepted (one message); images never travel in
    # messages, so this is generous.
    max_frame_bytes: int = 16 * 1024 * 1024


def settings_from_env(**overrides: object) -> Settings:
    """Settings from LIVERYID_* variables, then explicit overrides (the CLI's)."""
    values: dict[str, object] = {}
    for field in Settings.__struct_fields__:
        raw = os.environ.get(f"LIVERYID_{field.upper()}")
        if raw is not None:
            values[field] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    return msgspec.convert(values, Settings, strict=False, dec_hook=_decode_path)


def _decode_path(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise NotImplementedError
