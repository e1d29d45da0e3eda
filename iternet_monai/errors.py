"""User-facing errors: a bad input ends a command with one line per problem, naming the file or key, never with a
traceback.

Every error about the user's input is an :class:`InputError`. The ``iternet-monai`` command catches it; bundle
runs (``python -m monai.bundle run ...``) call :func:`report_input_errors` in ``initialize``, because MONAI wraps an
error raised while a config item is built in its own ``RuntimeError``, which would otherwise print 50+ lines. They
also call :func:`hide_empty_input_summary`, so a run without overrides does not print MONAI's empty summary.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType

__all__ = ["InputError", "flag", "find_input_error", "report_input_errors", "hide_empty_input_summary"]

# How a true/false config key may be written on the command line.
FLAG_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


class InputError(ValueError):
    """An input that cannot be used. The message names the file, folder or key and says what to do."""


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


def find_input_error(error: BaseException | None) -> InputError | None:
    """The :class:`InputError` in ``error``'s chain of causes (MONAI and ignite wrap errors), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def report_input_errors(prefix: str = "iternet") -> None:
    """Make an uncaught error whose chain holds an :class:`InputError` print ``<prefix>: <message>`` alone on
    stderr (exit status 1); any other error keeps its full traceback."""
    previous = sys.excepthook
    if getattr(previous, "reports_input_errors", False):
        return

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        found = find_input_error(error)
        if found is None:
            previous(kind, error, traceback)
        else:
            print(f"{prefix}: {found}", file=sys.stderr)

    hook.reports_input_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook


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
