"""The number reader's models: PP-OCRv6 text detection and recognition
(PaddleOCR, Apache-2.0) as the PyPI wheel `rapidocr` ships them, ONNX
already; copied out byte for byte. Which file is chosen by the output
name (`ppocr-v6-det-small.onnx` or `ppocr-v6-rec-small.onnx`).

The sidecar runs them with its own onnxruntime session; rapidocr itself is
never installed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from wheels import fetch_from_wheel

PACKAGE = "rapidocr"
VERSION = "3.10.0"
MEMBERS = {
    "ppocr-v6-det-small.onnx": "rapidocr/models/PP-OCRv6_det_small.onnx",
    "ppocr-v6-rec-small.onnx": "rapidocr/models/PP-OCRv6_rec_small.onnx",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    shutil.copyfile(fetch_from_wheel(PACKAGE, VERSION, MEMBERS[args.output.name], args.cache), args.output)


if __name__ == "__main__":
    main()
