"""`liveryid serve`: the sidecar process. stdout is the wire and nothing
else may write to it, so it is claimed before anything else runs."""

from __future__ import annotations

import logging
import os
import sys
from typing import BinaryIO

from sidecar.adaptation import Adaptation
from sidecar.config import Settings
from sidecar.engine import Engine
from sidecar.entries import Entries
from sidecar.export import Exporter
from sidecar.identification import Identification
from sidecar.protocol.endpoint import Endpoint
from sidecar.protocol.framing import Codec, FrameWriter, FramingLost, WireName, read_frames

log = logging.getLogger(__name__)


def claim_stdout() -> BinaryIO:
    """Keep the real stdout for protocol frames and point file descriptor 1,
    and Python's sys.stdout, at stderr: a library that prints (from Python or
    from C) then writes to the log, never into the wire."""
    sys.stdout.flush()
    wire = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return wire


def serve(settings: Settings, wire: WireName, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Serve until shutdown or end of input; the process exit code."""
    codec = Codec(wire)
    engine = Engine(settings)
    handlers = {
        **engine.handlers(), **Identification(engine).handlers(), **Exporter(engine).handlers(),
        **Entries(engine).handlers(), **Adaptation(engine).handlers(),
    }
    endpoint = Endpoint(handlers, codec, FrameWriter(stdout, wire), settings.workers)
    log.info("serving JSON-RPC on stdio, %s wire, models in %s", wire, settings.models_dir)
    try:
        endpoint.serve(read_frames(stdin, wire, settings.max_frame_bytes))
    except FramingLost as exc:
        log.error("framing lost, exiting: %s", exc)
        return 2
    finally:
        engine.close()
    log.info("shut down")
    return 0
