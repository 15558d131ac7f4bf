"""Model runs take turns, and background work pauses for interactive requests."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sidecar.inference.session import OrtSession
from sidecar.inference.turns import MODEL_TURNS, ModelTurns, background


def wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_an_interactive_request_goes_before_background_runs_that_waited_longer() -> None:
    turns = ModelTurns()
    order: list[str] = []
    release, holding, identify_in = threading.Event(), threading.Event(), threading.Event()

    def tag_run(name: str, hold: bool) -> None:
        with background(), turns.turn():
            order.append(name)
            if hold:
                holding.set()
                release.wait(5)

    def identify() -> None:
        with turns.interactive():
            identify_in.set()
            with turns.turn():
                order.append("identify detect")
            time.sleep(0.02)  # between its runs (cropping, say) the tag must not slip in
            with turns.turn():
                order.append("identify embed")

    threads = [threading.Thread(target=tag_run, args=("tag photo 1", True))]
    threads[0].start()
    holding.wait(5)
    threads.append(threading.Thread(target=tag_run, args=("tag photo 2", False)))
    threads[1].start()
    time.sleep(0.05)  # photo 2 queues first
    threads.append(threading.Thread(target=identify))
    threads[2].start()
    identify_in.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    assert order == ["tag photo 1", "identify detect", "identify embed", "tag photo 2"]


def test_decoding_ahead_pauses_while_an_interactive_request_is_in_flight() -> None:
    turns = ModelTurns()
    decoded = threading.Event()
    with turns.interactive():
        decoder = threading.Thread(target=lambda: (turns.pause_for_interactive(), decoded.set()))
        decoder.start()
        assert not decoded.wait(0.1)
    assert decoded.wait(5)
    decoder.join(5)


def test_runs_of_a_kind_never_overlap_and_no_background_run_starts_during_an_interactive_one() -> None:
    turns = ModelTurns()
    inside = {True: 0, False: 0}
    most = {True: 0, False: 0}
    background_started_during_interactive = 0
    lock = threading.Lock()

    def run(is_background: bool) -> None:
        nonlocal background_started_during_interactive
        for _ in range(20):
            with background() if is_background else nullcontext(), turns.turn():
                with lock:
                    if is_background and inside[False]:
                        background_started_during_interactive += 1
                    inside[is_background] += 1
                    most[is_background] = max(most[is_background], inside[is_background])
                time.sleep(0.0005)
                with lock:
                    inside[is_background] -= 1

    threads = [threading.Thread(target=run, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most == {True: 1, False: 1} and background_started_during_interactive == 0


def test_an_interactive_request_shares_the_cores_with_a_background_run_that_cannot_stop() -> None:
    turns = ModelTurns()
    order: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def training_part() -> None:  # a torch part: no way to stop it
        with background(), turns.turn():
            inside.set()
            release.wait(5)
            order.append("training part ended")

    part = threading.Thread(target=training_part)
    part.start()
    inside.wait(5)
    with turns.interactive(), turns.turn():
        order.append("identify's run")
    release.set()
    part.join(5)
    assert order == ["identify's run", "training part ended"]


def test_background_marks_only_its_own_thread() -> None:
    turns = ModelTurns()
    ran = threading.Event()

    def run() -> None:
        with turns.turn():
            ran.set()

    with turns.interactive(), background():
        # Started from a background block, this thread is not background: it runs during the interactive request.
        other = threading.Thread(target=run)
        other.start()
        assert ran.wait(5)
        other.join(5)


def test_an_interactive_request_stops_the_background_run_under_way_and_no_other() -> None:
    turns = ModelTurns()
    stopped: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def tag_run() -> None:
        with background(), turns.turn(stop=lambda: stopped.append("tag")):
            inside.set()
            release.wait(5)

    tag = threading.Thread(target=tag_run)
    tag.start()
    inside.wait(5)
    with turns.interactive():
        assert stopped == ["tag"]
        release.set()
        tag.join(5)
        with turns.turn(stop=lambda: stopped.append("identify")):
            with turns.interactive():  # a second request does not stop an interactive run
                pass
    with background(), turns.turn(stop=lambda: stopped.append("tag, later")):
        pass
    with turns.interactive():  # nor a run that has ended
        pass
    assert stopped == ["tag"]


def matmul_chain(path: Path, size: int, length: int) -> None:
    """A model that takes a while: `length` products with one square matrix (scaled to keep values finite)."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [size, size],
                                (np.random.default_rng(0).standard_normal((size, size)) / np.sqrt(size)).astype(np.float32).ravel())
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", "w"], ["y" if i == length - 1 else f"h{i + 1}"])
             for i in range(length)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_a_background_model_run_gives_way_to_an_interactive_request_then_runs_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)
    # Long enough to be caught running whatever the CPU: 150 products take about 0.1 s with AVX-512.
    length = 150
    while True:
        matmul_chain(tmp_path / "chain.onnx", 512, length)
        session = OrtSession(tmp_path / "chain.onnx", 2)
        start = time.perf_counter()
        expected = session.run(["y"], {"x": x})[0]
        took = time.perf_counter() - start
        if took >= 0.6 or length >= 4800:
            break
        length *= 2
    order: list[str] = []
    got: list[np.ndarray] = []

    def tag_run() -> None:
        with background():
            got.append(session.run(["y"], {"x": x})[0])
        order.append("tag's run returned")

    caplog.set_level(logging.DEBUG, logger="sidecar.inference.session")
    tag = threading.Thread(target=tag_run)
    tag.start()
    time.sleep(took / 4)  # into the run
    with MODEL_TURNS.interactive(), MODEL_TURNS.turn():
        order.append("identify's run")
    tag.join(30)
    assert order == ["identify's run", "tag's run returned"]
    assert "stopped for an interactive request" in caplog.text
    np.testing.assert_array_equal(got[0], expected)
