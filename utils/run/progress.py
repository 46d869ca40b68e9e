"""Where a long loop is: a tqdm bar for a person at a terminal, else a line every N seconds.

A bar is useless in a log file (a batch job, `nohup`, a pipe), and silence for hours is worse: so
without a bar, `Progress` logs one line through `logging` at a fixed interval, with the step, the
total, the time spent and the estimated time left. The same numbers go to the run's own log
(log.jsonl, meta_log.jsonl) as a `{"event": "progress", ...}` record, with or without a bar, so
that the run's file says where the run was whether or not a person watched it.

    with Progress(len(seeds), "seeds", bar=enabled, log=run_log.log, unit="seed") as progress:
        for seed in seeds:
            ...
            progress.update()
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 60.0
PROGRESS_EVENT = "progress"


def format_duration(seconds: float) -> str:
    """A short human duration: 45s, 12m05s, 3h07m."""
    whole = max(0, int(round(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Progress of a loop of `total` steps: a bar, or a periodic line, and periodic log records.

    Args:
        total: the number of steps the loop will take in all (including `initial`).
        description: what the loop is ("training", "Reptile", "seeds"); it starts every line.
        bar: draw a tqdm bar (for a person at a terminal). Without a bar, a line is logged every
            `interval_s` seconds instead.
        log: where progress records go (e.g. `JsonlLog.log`), every `interval_s` seconds; None for
            none.
        interval_s: seconds between two lines / records; None turns both off (a process other
            than the main one, which must not repeat the main one's lines). 0 reports every step.
        clock: seconds from an arbitrary origin (tests pass a fake one).
        initial: steps already done before this loop started (a resumed run); the rate and the
            time left are measured on the steps done here.
        unit: the name of one step, for the bar.
        file: the bar's stream (default stderr).
        leave: keep the finished bar on the screen (False for a short inner loop such as an
            evaluation inside training).

    Raises:
        ValueError: a negative total, initial step or interval.
    """

    def __init__(self, total: int, description: str, *, bar: bool, log: Callable[[dict[str, Any]], None] | None = None,
                 interval_s: float | None = PROGRESS_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 initial: int = 0, unit: str = "step", file: TextIO | None = None, leave: bool = True) -> None:
        if total < 0 or initial < 0:
            raise ValueError(f"total must be >= 0 and initial >= 0, got total={total}, initial={initial}")
        if interval_s is not None and interval_s < 0:
            raise ValueError(f"interval_s must be >= 0 or None, got {interval_s}")
        self.total = total
        self.description = description
        self.step = initial
        self._initial = initial
        self._log = log
        self._interval = interval_s
        self._clock = clock
        self._started = clock()
        self._last_report = self._started
        self._postfix: dict[str, str] = {}
        self.bar = tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True,
                        file=file, leave=leave) if bar else None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """`n` more steps done; reports when `interval_s` has passed since the last report."""
        self.step += n
        if self.bar is not None:
            self.bar.update(n)
        if self._interval is None:
            return
        now = self._clock()
        if now - self._last_report >= self._interval:
            self._last_report = now
            self._report(now)

    def set_postfix(self, **values: Any) -> None:
        """Latest values (a loss, a rate) shown after the bar and at the end of the periodic line."""
        self._postfix = {key: str(value) for key, value in values.items()}
        if self.bar is not None:
            self.bar.set_postfix(self._postfix)

    def record(self, now: float | None = None) -> dict[str, Any]:
        """The progress record at `now` (default: the clock's time): step, total, elapsed_s, eta_s.

        eta_s is the time left at the rate of the steps done so far in this loop; None before
        the first step.
        """
        now = self._clock() if now is None else now
        elapsed = now - self._started
        done = self.step - self._initial
        eta = (self.total - self.step) * elapsed / done if done > 0 else None
        return {"event": PROGRESS_EVENT, "description": self.description, "step": self.step, "total": self.total,
                "elapsed_s": round(elapsed, 3), "eta_s": None if eta is None else round(max(0.0, eta), 3)}

    def close(self) -> None:
        """Close the bar (no final line: the caller logs what the loop achieved)."""
        if self.bar is not None:
            self.bar.close()

    def _report(self, now: float) -> None:
        record = self.record(now)
        if self._log is not None:
            self._log(record)
        if self.bar is None:  # the bar already shows all of it
            share = f" ({100.0 * self.step / self.total:.0f}%)" if self.total else ""
            eta = "unknown" if record["eta_s"] is None else format_duration(record["eta_s"])
            extra = "".join(f", {key} {value}" for key, value in self._postfix.items())
            logger.info("%s: %d of %d%s, %s elapsed, ETA %s%s", self.description, self.step, self.total, share,
                        format_duration(record["elapsed_s"]), eta, extra)
