"""Who uses the cores next: requests the app waits on before background work.

Every model run takes all the cores (its session's intra-op threads, or
torch's during adapt: each embedding batch and part of a training step is a
run), so runs take turns through the process's one `ModelTurns`. Long jobs
(tag, an embedder switch, adapt) mark their thread with `background()`;
the requests the app waits on (identify, detect, embed, enroll) are marked
`interactive()` for their whole length.

While an interactive request is in flight, background work starts no model
run and tag's read-ahead decodes no photo (`pause_for_interactive`). The
request never waits for a background run: one under way is stopped where
its session allows (ONNX Runtime ends a run between two operators when
asked; its work is lost and it runs again afterwards), and one that cannot
stop (a torch training part, up to a second) shares the cores with the
request until it ends: waiting for it would cost the request more than
sharing (bench.responsiveness --during adapt measured both). Interactive
runs take turns among themselves, background runs among themselves and
after interactive ones. Background work resumes when no interactive request
is left; a steady stream of them would hold it back, as the app's user is
then working with it.
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
        self._background_running = False
        self._interactive_running = False
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
        """Hold the models for one run. An interactive run waits for the
        interactive run under way only; a background run waits for any run
        under way and for every interactive request in flight. A background
        run's `stop` is called (from the request's thread) when an
        interactive request arrives during it; the run then ends early and
        its caller runs it again at its next turn."""
        in_background = _background.get()

        def idle() -> bool:
            if in_background:
                return not (self._background_running or self._interactive_running or self._interactive)
            return not self._interactive_running

        with self._changed:
            self._changed.wait_for(idle)
            if in_background:
                self._background_running, self._stop_running = True, stop
            else:
                self._interactive_running = True
        try:
            yield
        finally:
            with self._changed:
                if in_background:
                    self._background_running, self._stop_running = False, None
                else:
                    self._interactive_running = False
                self._changed.notify_all()


MODEL_TURNS = ModelTurns()
interactive = MODEL_TURNS.interactive
