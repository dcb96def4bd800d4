"""Errors of bats-tf and the exit codes the commands map them to (no TensorFlow, no absl).

Exit codes: 0 done, 1 the run failed (:class:`RunError`), 2 bad input (:class:`UsageError`,
:class:`ConfigError` and the data and genotype errors), 128 + signal number after an interrupt
(Ctrl-C: 130, SIGTERM: 143).
"""

from __future__ import annotations

import signal

RUN_EXIT = 1
USAGE_EXIT = 2


class UsageError(ValueError):
    """An input given by the user (a file, a folder, a setting) is wrong; the message names it."""


class ConfigError(UsageError):
    """A setting is wrong: ``param`` names it, ``message`` says why.

    Commands report it as ``--param=value: message``; ``value`` is shown when given.
    """

    _NO_VALUE = object()

    def __init__(self, param: str, message: str, value=_NO_VALUE):
        self.param, self.message, self.value = param, message, value
        shown = param if value is self._NO_VALUE else f"{param}={value}"
        super().__init__(f"{shown}: {message}")


class RunError(RuntimeError):
    """The run cannot go on (non-finite loss, corrupt checkpoint); the message says why.

    ``param`` names the setting it comes from, if one (shown as ``param=value``).
    """

    def __init__(self, message: str, param: str | None = None, value=None):
        self.param, self.message, self.value = param, message, value
        super().__init__(f"{param}={value}: {message}" if param else message)


class WriteFailed(RunError):
    """A file or checkpoint could not be written (no space left, read-only file system, ...).

    The message names the path and the errno, and says that what was written before is kept
    (every output is written to a temporary name first, then renamed), so the same command
    continues once the cause is fixed.
    """

    def __init__(self, path: str, errno_name: str, reason: str):
        self.path, self.errno_name, self.reason = path, errno_name, reason
        super().__init__(
            f"{path}: {reason} ({errno_name}); the last checkpoint and the outputs written "
            "before are kept: free space (or fix the folder) and rerun the same command to "
            "continue"
        )


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM (the search first writes a checkpoint)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum
