"""Whether INT8 models would pay on this CPU: each default model's time per
run in float32 against ONNX Runtime's two INT8 forms, dynamic (weights
INT8, activations quantised at run time) and static (both, calibrated on
development images), on the inputs tag gives them.

    .venv/bin/python -m bench.quantization [--runs 20]

INT8 convolutions pay where the CPU has VNNI instructions (AVX512-VNNI or
AVX-VNNI); without them ONNX Runtime's INT8 kernels are no faster than its
float32 ones. Printed first: which of those instructions this CPU has.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from bench.datasets import epfl_frames
from sidecar.config import settings_from_env
from sidecar.engine import Engine
from sidecar.inference.manifest import InputSpec
from sidecar.inference.session import OrtSession
from sidecar.protocol.messages import ImageRef
from sidecar.stages.decode import ImageLimits, load_image
from sidecar.stages.preprocess import letterbox, to_tensor

CALIBRATION_IMAGES = 16


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


class Images(CalibrationDataReader):
    """Model inputs made from EPFL frames (the calibration data of static quantisation)."""

    def __init__(self, name: str, tensors: list[np.ndarray]) -> None:
        self._feeds = iter([{name: t} for t in tensors])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def inputs_for(spec: InputSpec, size: tuple[int, int], letterboxed: bool, limits: ImageLimits) -> list[np.ndarray]:
    """One (1, 3, H, W) tensor per calibration frame, at `size` (width, height)."""
    frames = [load_image(ImageRef(path=str(f.path)), limits) for f in epfl_frames()[:: 50][:CALIBRATION_IMAGES]]
    fitted = [letterbox(f, *size)[0] if letterboxed else cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return [to_tensor([image], spec) for image in fitted]


def milliseconds(path: Path, name: str, tensor: np.ndarray, threads: int, runs: int) -> float:
    """Median time of a run in a session set up as the sidecar sets up its own."""
    session = OrtSession(path, threads)
    session.run(session.output_names, {name: tensor})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(session.output_names, {name: tensor})
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    flags = cpu_flags()
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    print(f"CPU: {'VNNI: ' + ', '.join(vnni) if vnni else 'no VNNI instructions'} "
          f"({'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'no AVX2'})")
    settings = settings_from_env()
    engine = Engine(settings)
    # (model, input size as tag runs it, letterboxed)
    models = [(settings.detector, None, True), (settings.embedder, None, False),
              (settings.text_detector, (960, 640), False), (settings.text_reader, (160, 48), False)]
    print("| model | input | float32 ms | INT8 dynamic ms | INT8 static ms |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, size, letterboxed in models:
            spec = engine.manifest().get(name)
            source = engine.model_file(name)
            width, height = size or (spec.input.width, spec.input.height)
            tensors = inputs_for(spec.input, (width, height), letterboxed, engine.limits)
            timings = [milliseconds(source, spec.input.name, tensors[0], settings.intra_op_threads, args.runs)]
            dynamic, static = Path(tmp) / f"{name}-dynamic.onnx", Path(tmp) / f"{name}-static.onnx"
            for build, path in [
                (lambda: quantize_dynamic(source, dynamic, weight_type=QuantType.QUInt8), dynamic),
                # Per-tensor QOperator form: the PP-OCR graphs' opset (11) has no per-channel QDQ.
                (lambda: quantize_static(source, static, Images(spec.input.name, tensors), quant_format=QuantFormat.QOperator,
                                         activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8), static),
            ]:
                try:
                    build()
                    timings.append(milliseconds(path, spec.input.name, tensors[0], settings.intra_op_threads, args.runs))
                except Exception as exc:  # a graph the quantiser cannot handle is a result too
                    print(f"<!-- {name}: {type(exc).__name__}: {exc} -->")
                    timings.append(float("nan"))
            print(f"| {name} | {width}x{height} | " + " | ".join(f"{t:.1f}" for t in timings) + " |", flush=True)


if __name__ == "__main__":
    main()
