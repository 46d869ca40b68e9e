"""What a person or a log file sees of a run: the entry point, logging set-up, progress of long loops.

Without a terminal (a batch job, a pipe) `Progress` logs a line at a fixed interval instead of a
tqdm bar; the same numbers go to the run's log as `{"event": "progress", ...}` records.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

from tqdm.auto import tqdm

from utils.run.errors import ToolkitError

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 60.0


def format_duration(seconds: float) -> str:
    """A short human duration: 45s, 12m05s, 3h07m."""
    minutes, secs = divmod(max(0, int(round(seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Progress of `total` steps (`initial` done before, by a resumed run; the rate counts those done
    here): a tqdm bar if `bar`, else a logged line, and a record to `log`, every `interval_s`
    seconds (None: never; 0: every step). `unit`, `file` and `leave` are the bar's."""

    def __init__(self, total: int, description: str, *, bar: bool, log: Callable[[dict[str, Any]], None] | None = None,
                 interval_s: float | None = PROGRESS_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 initial: int = 0, unit: str = "step", file: TextIO | None = None, leave: bool = True) -> None:
        if total < 0 or initial < 0 or (interval_s is not None and interval_s < 0):
            raise ValueError(f"total, initial and interval_s must be >= 0, got {total}, {initial}, {interval_s}")
        self.total, self.description, self.step, self._initial = total, description, initial, initial
        self._log, self._interval, self._clock = log, interval_s, clock
        self._started = self._last_report = clock()
        self._postfix: dict[str, str] = {}
        self.bar = tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True, file=file,
                        leave=leave) if bar else None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """`n` more steps done; reports when `interval_s` has passed since the last report."""
        self.step += n
        if self.bar is not None:
            self.bar.update(n)
        now = self._clock()
        if self._interval is None or now - self._last_report < self._interval:
            return
        self._last_report, record = now, self.record(now)
        if self._log is not None:
            self._log(record)
        if self.bar is None:  # the bar already shows all of it
            share = f" ({100.0 * self.step / self.total:.0f}%)" if self.total else ""
            eta = "unknown" if record["eta_s"] is None else format_duration(record["eta_s"])
            extra = "".join(f", {key} {value}" for key, value in self._postfix.items())
            logger.info("%s: %d of %d%s, %s elapsed, ETA %s%s", self.description, self.step, self.total, share,
                        format_duration(record["elapsed_s"]), eta, extra)

    def set_postfix(self, **values: Any) -> None:
        """Latest values (a loss, a rate) shown after the bar and at the end of the periodic line."""
        self._postfix = {key: str(value) for key, value in values.items()}
        if self.bar is not None:
            self.bar.set_postfix(self._postfix)

    def record(self, now: float | None = None) -> dict[str, Any]:
        """The progress record at `now` (default: the clock's): step, total, elapsed_s and eta_s, the
        time left at this loop's rate so far (None before its first step)."""
        elapsed = (self._clock() if now is None else now) - self._started
        done = self.step - self._initial
        eta = max(0.0, (self.total - self.step) * elapsed / done) if done > 0 else None
        return {"event": "progress", "description": self.description, "step": self.step, "total": self.total,
                "elapsed_s": round(elapsed, 3), "eta_s": None if eta is None else round(eta, 3)}

    def close(self) -> None:
        """Close the bar (no final line: the caller logs what the loop achieved)."""
        if self.bar is not None:
            self.bar.close()


def progress_enabled(no_progress: bool) -> bool:
    """Progress bars only for a person watching a terminal."""
    return not no_progress and sys.stderr.isatty()


def silence_library_progress_bars() -> None:
    """Turn off the bars transformers and datasets draw on their own, for a run without a terminal."""
    # Imported here, not at the top: a command answers --help or a bad flag before they load.
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def configure_logging(level: int = logging.INFO) -> None:
    """One timestamped format for every script; transformers logs errors only (unless
    TRANSFORMERS_VERBOSITY is set): its load report and long-sequence warnings are false alarms here."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if os.environ.get("TRANSFORMERS_VERBOSITY"):
        return
    if "transformers" in sys.modules:  # it reads the variable when it loads; once loaded, its own setter
        sys.modules["transformers"].utils.logging.set_verbosity_error()
    else:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"


def run_entry_point(main: Callable[[], Any]) -> NoReturn:
    """Run a script's main(); a user error (`ToolkitError`, or an `OSError`: a path that cannot be
    read or written, a full disk) becomes one line on stderr and exit status 2. Bugs keep their trace."""
    configure_logging()
    try:
        main()
    except (ToolkitError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
