"""The one place that imports onnxruntime."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail

from sidecar.inference.turns import MODEL_TURNS

log = logging.getLogger(__name__)


class OrtSession:
    """An ONNX Runtime CPU session with explicit thread counts, its runs
    taking turns with every other session's (`turns.py`) so that models do
    not oversubscribe the cores and interactive requests go first, a
    background run under way stopping for them."""

    def __init__(self, model: Path | bytes, intra_op_threads: int, spin_wait: bool = False) -> None:
        """`model`: an ONNX file, or a serialised graph (training runs an edited copy of one)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # ORT warnings go to stderr; keep them for real problems
        self._session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                             providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def metadata(self) -> dict[str, str]:
        """The model's custom metadata (a text recogniser keeps its alphabet there)."""
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def run(self, outputs: list[str], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        while True:
            options = ort.RunOptions()
            # Set from another thread, the flag ends the run between two operators.
            with MODEL_TURNS.turn(stop=lambda: setattr(options, "terminate", True)):
                try:
                    return self._session.run(outputs, inputs, options)
                except Fail:
                    if not options.terminate:
                        raise
            log.debug("a background run stopped for an interactive request: running it again")
