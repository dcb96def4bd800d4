"""Stopping a run cleanly on SIGINT or SIGTERM (no TensorFlow, no absl)."""

from __future__ import annotations

import signal

from bats_tf.errors import Interrupted


class InterruptFlag:
    """Turns the first SIGINT or SIGTERM into a flag checked after each step.

    A second signal stops at once (KeyboardInterrupt), keeping the last checkpoint.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        try:
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread
            self._old = {}

    def _handle(self, signum, _frame):
        if self.signum is not None:
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}


def raise_on_sigterm() -> None:
    """Makes SIGTERM unwind like Ctrl-C (raising :class:`Interrupted`), so files stay whole."""
    signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum, _frame):
    raise Interrupted("SIGTERM", signum)
