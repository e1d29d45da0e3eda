"""The cohort's progress line on stderr from the start (while Ray starts, too): images done, skipped as done before,
failed, images per second and the time left; redrawn every second on a terminal, a line every 30 s in a log."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Count the images as their rows come back and print a line at :meth:`start`, every ``interval`` seconds
    and at :meth:`stop`.

    Args:
        total: the images of the run.
        stream: where the line goes (stderr).
        interval: seconds between lines; None: 1 on a terminal (the line redrawn in place), else 30.
    """

    def __init__(self, total: int, stream: TextIO | None = None, interval: float | None = None) -> None:
        self.total, self.stream = total, stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.interval = interval if interval is not None else 1.0 if self.terminal else 30.0
        self.counts = {"segmented": 0, "done": 0, "failed": 0}
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._lock = threading.Lock()

    def start(self) -> Progress:
        self.started = time.monotonic()
        self._print()
        self._thread.start()
        return self

    def update(self, status: str) -> None:
        """Count one finished row (``segmented``, ``done`` before, or ``failed``)."""
        with self._lock:
            self.counts[status] += 1

    def line(self) -> str:
        """``cohort: 40/100 images (12 done before), 2 failed, 0.8 images/s, about 1 min 15 s left``."""
        with self._lock:
            segmented, before, failed = self.counts["segmented"], self.counts["done"], self.counts["failed"]
        finished = segmented + before + failed
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (segmented + failed) / elapsed
        left = self.total - finished
        eta = f"about {_duration(left / rate)} left" if rate > 0 and left else "time left not known yet"
        eta = "finished" if not left else eta
        return (
            f"cohort: {finished}/{self.total} images ({before} done before), {failed} failed, {rate:.2f} images/s, "
            f"{eta}, {_duration(elapsed)} so far"
        )

    def _print(self, last: bool = False) -> None:
        end = "\n" if last or not self.terminal else ""
        print(f"\r{self.line()}" if self.terminal else self.line(), end=end, file=self.stream, flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._print()

    def stop(self) -> None:
        """Stop the timer and print the last line."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._print(last=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"
