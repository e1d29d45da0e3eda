"""User-facing errors: a bad input ends a command with one line per problem, naming the file or key, never with a
traceback.

Every error about the user's input is an :class:`InputError`. The ``iternet-monai`` command catches it; bundle
runs (``python -m monai.bundle run ...``) call :func:`report_input_errors` in ``initialize``, because MONAI wraps an
error raised while a config item is built in its own ``RuntimeError``, which would otherwise print 50+ lines.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["InputError", "flag", "find_input_error", "report_input_errors"]

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
