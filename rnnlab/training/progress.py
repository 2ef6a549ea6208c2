"""What a run shows while it trains: a progress bar on a terminal; elsewhere (a log file, a CI
job) at most ``LINES`` lines a run, or a line per log point with ``verbose``."""

from __future__ import annotations

import sys

from tqdm import tqdm

LINES = 20  # progress lines of a run outside a terminal (a 100k-iteration run logs 1,000 points)


class Progress:
    """``update`` is called every ``log_every`` iterations with the latest figures."""

    def __init__(
        self, total: int, start: int, label: str, enabled: bool = True, verbose: bool = False
    ):
        self.total, self.label = total, label
        self.enabled = enabled
        self.every = 1 if verbose else max(1, total // LINES)  # iterations between lines
        self.bar = None
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=start, desc=label, unit="it", leave=True)
        self._last = start

    def update(self, iteration: int, smooth_loss: float, chars_per_sec: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(iteration - self._last)
            self.bar.set_postfix(smooth_loss=f"{smooth_loss:.3f}", chars_s=f"{chars_per_sec:,.0f}")
        elif iteration // self.every > self._last // self.every or iteration == self.total:
            print(
                f"{self.label} iter {iteration}/{self.total}  smooth_loss {smooth_loss:.4f}  "
                f"{chars_per_sec:,.0f} chars/s",
                file=sys.stderr,
                flush=True,
            )
        self._last = iteration

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
