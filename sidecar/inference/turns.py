"""Who uses the cores next: requests the app waits on before background work.

Every model run takes all the cores (its session's intra-op threads, or
torch's during adapt: each embedding batch and training step is a run), so
runs take turns, one at a time, through the process's one `ModelTurns`.
Long jobs (tag, an embedder switch, adapt) mark their thread with
`background()`; the requests the app waits on (identify, detect, embed,
enroll) are marked `interactive()` for their whole length. While an
interactive request is in flight, background work starts no model run and
tag's read-ahead decodes no photo (`pause_for_interactive`). A background
run under way when the request arrives is stopped where its session allows
(ONNX Runtime ends a run between two operators when asked) and run again
afterwards, so an identify sent during a tag waits for a few milliseconds
and the decodes under way, not for the tag's text detection (150 ms) nor
its photo, and then has the cores to itself; the stopped run's work is
lost. Background work resumes when no interactive request is left; a
steady stream of them would hold it back, as the app's user is then
working with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_background: ContextVar[bool] = ContextVar("liveryid_background", default=False)


@contextmanager
def background() -> Iterator[None]:
    """Model runs made by this thread inside the block (or the decorated
    method) wait while an interactive request is in flight."""
    token = _background.set(True)
    try:
        yield
    finally:
        _background.reset(token)


class ModelTurns:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = False
        self._stop_running: Callable[[], None] | None = None  # stops the background run under way
        self._interactive = 0  # interactive requests in flight

    @contextmanager
    def interactive(self) -> Iterator[None]:
        """A request the app waits on: background work pauses until it ends."""
        with self._changed:
            self._interactive += 1
            if self._stop_running is not None:
                self._stop_running()
                self._stop_running = None
        try:
            yield
        finally:
            with self._changed:
                self._interactive -= 1
                self._changed.notify_all()

    def pause_for_interactive(self) -> None:
        """Background work that runs no model (decoding ahead) waits here
        while an interactive request is in flight."""
        with self._changed:
            self._changed.wait_for(lambda: not self._interactive)

    @contextmanager
    def turn(self, stop: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the models for one run, after the run in progress; in the
        background, also after every interactive request in flight. A
        background run's `stop` is called (from the request's thread) when an
        interactive request arrives during it; the run then ends early and
        its caller runs it again at its next turn."""
        in_background = _background.get()
        idle = (lambda: not self._running) if not in_background else (
            lambda: not self._running and not self._interactive)
        with self._changed:
            self._changed.wait_for(idle)
            self._running = True
            self._stop_running = stop if in_background else None
        try:
            yield
        finally:
            with self._changed:
                self._running = False
                self._stop_running = None
                self._changed.notify_all()


MODEL_TURNS = ModelTurns()
interactive = MODEL_TURNS.interactive
