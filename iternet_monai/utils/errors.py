"""User-facing errors: a bad input ends a command with one line per problem, naming the file or key, never with a
traceback.

Every error about the user's input is an :class:`InputError`. The ``iternet-monai`` command catches it; bundle
runs (``python -m monai.bundle run ...``) call :func:`report_input_errors` in ``initialize``, because MONAI wraps an
error raised while a config item is built in its own ``RuntimeError``, which would otherwise print 50+ lines. Both
print it with :func:`print_problem`, as the command does for a file it skips and goes on without. Bundle runs also
call :func:`hide_empty_input_summary`, so a run without overrides does not print MONAI's empty summary.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from types import TracebackType
from typing import TypeVar

__all__ = [
    "InputError",
    "OutputError",
    "DISK_ERRORS",
    "flag",
    "optional",
    "error_chain",
    "disk_error",
    "find_input_error",
    "BUNDLE_PREFIX",
    "COMMAND_PREFIX",
    "print_problem",
    "report_input_errors",
    "hide_empty_input_summary",
]

# What a problem's line starts with in bundle runs and in the iternet-monai command.
BUNDLE_PREFIX = "iternet"
COMMAND_PREFIX = "iternet-monai"
# The logger on which MONAI's StatsHandler logs an engine's error with its traceback.
STATS_LOGGER = "monai.handlers.StatsHandler"
# Errors of a write that say the disk cannot take the file, whatever the writer: full, over quota, too large, read-only.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)

# How a true/false config key may be written on the command line.
FLAG_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
# How "no value" may be written on the command line, in any case.
NONE_WORDS = ("", "none")

T = TypeVar("T")


class InputError(ValueError):
    """An input that cannot be used. The message names the file, folder or key and says what to do."""


class OutputError(InputError):
    """A file that cannot be written (no space left on the device, no permission, a read-only disk). The message
    names the file and the cause; it is reported in one line as every :class:`InputError` is."""


def flag(value: object, key: str) -> bool:
    """The true/false config key ``key`` as given: ``python -m monai.bundle run ... --tta false`` passes the string
    "false", which Python takes for true (``--overwrite false`` would overwrite). Booleans, 0/1 and true/false,
    yes/no, on/off in any case are read; anything else is an InputError naming the key."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in FLAG_WORDS:
        raise InputError(f"--{key} {value!r} is neither true nor false; pass --{key} true or --{key} false")
    return FLAG_WORDS[word]


def optional(value: T) -> T | None:
    """``value``, or None where it says "no value": None, or a string or path that is empty or ``none`` in any case
    (``python -m monai.bundle run ... --resume None`` passes the string "None", a config's ``null`` None).

    Args:
        value: a config value or command-line argument.
    """
    if value is None or (isinstance(value, (str, os.PathLike)) and str(value).strip().lower() in NONE_WORDS):
        return None
    return value


def error_chain(error: BaseException | None) -> list[BaseException]:
    """``error`` and its causes, outermost first (MONAI and ignite wrap errors)."""
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def disk_error(error: BaseException | None) -> OSError | None:
    """The OSError in ``error``'s chain that says the disk refused a write (:data:`DISK_ERRORS`), or None."""
    return next((e for e in error_chain(error) if isinstance(e, OSError) and e.errno in DISK_ERRORS), None)


def _weights_of_another_shape(error: BaseException) -> bool:
    """Whether ``error`` is the network's refusal of weights of another shape (``IterNet.load_state_dict``, as
    MONAI's ``CheckpointLoader`` calls it). Looked up in ``sys.modules``: this module does not import torch, and
    where the network module was never imported no such error exists."""
    networks = sys.modules.get("iternet_monai.networks.iternet")
    return networks is not None and isinstance(error, networks.WeightsShapeError)


def find_input_error(error: BaseException | None) -> InputError | None:
    """The :class:`InputError` in ``error``'s chain of causes (the network's refusal of weights of another shape is
    one), else an :class:`OutputError` for a write the disk refused anywhere in it (a library's own write: a full
    disk says so in one line too), or None."""
    chain = error_chain(error)
    found = next((e for e in chain if isinstance(e, InputError)), None)
    if found is None:
        found = next((InputError(str(e)) for e in chain if _weights_of_another_shape(e)), None)
    refused = disk_error(error)
    if found is None and refused is not None:
        where = f" {refused.filename}" if refused.filename else ""
        found = OutputError(f"cannot write{where}: {refused.strerror}")
    return found


def print_problem(problem: object, prefix: str = BUNDLE_PREFIX) -> None:
    """Print ``<prefix>: <problem>`` on stderr, the one way an input problem reaches the user.

    Args:
        problem: an :class:`InputError`, or the line of a file that was skipped.
        prefix: :data:`BUNDLE_PREFIX` or :data:`COMMAND_PREFIX`.
    """
    print(f"{prefix}: {problem}", file=sys.stderr)


def report_input_errors(prefix: str = BUNDLE_PREFIX) -> None:
    """Make an uncaught error whose chain holds an :class:`InputError` (or a write the disk refused) print
    ``<prefix>: <message>`` alone on stderr (exit status 1); any other error keeps its full traceback. Such an
    error is not printed with its traceback where a library logs it on the way (MONAI's ``StatsHandler``) or where a
    thread ends with it (TensorBoard's writer, which raises it again in the main thread at its next write)."""
    previous = sys.excepthook
    if getattr(previous, "reports_input_errors", False):
        return
    for handler in logging.getLogger().handlers:
        handler.addFilter(_without_input_error_traceback)
    from monai.apps.utils import get_logger  # set up as StatsHandler sets it up, before it is made

    get_logger(STATS_LOGGER).addFilter(_without_input_error_traceback)
    previous_thread_hook = threading.excepthook

    def thread_hook(arguments: threading.ExceptHookArgs) -> None:
        if find_input_error(arguments.exc_value) is None:
            previous_thread_hook(arguments)

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        found = find_input_error(error)
        if found is None:
            previous(kind, error, traceback)
        else:
            print_problem(found, prefix)

    hook.reports_input_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    threading.excepthook = thread_hook


def _without_input_error_traceback(record: logging.LogRecord) -> bool:
    """A logging filter: keep the record, without the traceback of an input error it carries."""
    if record.exc_info and find_input_error(record.exc_info[1]) is not None:
        record.exc_info, record.exc_text = None, None
    return True


class _InputSummaryFilter(logging.Filter):
    """Hold the header of MONAI's input summary until a ``> key: value`` line follows it: a summary listing nothing
    is left out whole, and a listed one ends with its ``---`` line, without the two blank lines MONAI adds."""

    HEADER = "--- input summary of "

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger
        self.header: logging.LogRecord | None = None
        self.listed = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.HEADER):
            self.header, self.listed = record, False
            return False
        if self.header is None:
            return True
        if message.startswith("> "):
            if not self.listed:
                self.listed = True
                for handler in self.logger.handlers:
                    handler.handle(self.header)
            return True
        if message.strip() == "---":
            self.header = None
            record.msg, record.args = "---", ()
            return self.listed
        return True


def hide_empty_input_summary() -> None:
    """Make MONAI's bundle runs print their input summary (the overrides given) only when it lists something."""
    logger = logging.getLogger("monai.bundle.scripts")
    if not any(isinstance(f, _InputSummaryFilter) for f in logger.filters):
        logger.addFilter(_InputSummaryFilter(logger))
