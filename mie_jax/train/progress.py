"""Live progress of a phase: a tqdm bar on a terminal, plain periodic lines elsewhere.

tqdm (already a dependency of TensorFlow Datasets) draws the bar: steps done
of the phase's total, the running loss, samples per second and the time
left. Where stderr is not a terminal (CI, a log file), or with ``quiet``,
one plain line is printed at most every ``LINE_SECONDS`` and at the phase's
end, so logs stay readable.
"""

import math
import sys
import time
from typing import Optional, TextIO

from tqdm import tqdm

LINE_SECONDS = 30.0


class PhaseProgress:
    """Progress of one phase's steps, updated after every chunk.

    Args:
      label: e.g. ``"phase 3/8 (mor)"``.
      total: the phase's steps.
      done: steps already done (resuming inside the phase).
      batch_size: rows per step, for samples per second.
      bar: draw a tqdm bar (else plain lines).
      stream: where it goes (stderr by default).
    """

    def __init__(
        self, label: str, total: int, done: int, batch_size: int, *, bar: bool, stream: Optional[TextIO] = None
    ):
        self.label, self.total, self.done, self.batch_size = label, total, done, batch_size
        self.stream = stream or sys.stderr
        self.started, self.last_line, self.first_done = time.monotonic(), -math.inf, done
        self.bar = (
            tqdm(total=total, initial=done, desc=label, unit="step", file=self.stream, dynamic_ncols=True, leave=False)
            if bar
            else None
        )

    def update(self, done: int, loss: float) -> None:
        """``done`` steps of the phase are finished; ``loss`` is the last chunk's mean."""
        elapsed = time.monotonic() - self.started
        rate = (done - self.first_done) * self.batch_size / max(elapsed, 1e-9)
        if self.bar is not None:
            self.bar.update(done - self.done)
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_per_s=f"{rate:.0f}")  # Redraws: once a chunk.
        elif done == self.total or time.monotonic() - self.last_line >= LINE_SECONDS:
            left = (self.total - done) * self.batch_size / rate if rate > 0 else math.inf
            eta = f"{left:.0f} s" if math.isfinite(left) else "?"
            print(
                f"{self.label}: step {done}/{self.total} | loss {loss:.4f} | {rate:.0f} samples/s | {eta} left",
                file=self.stream,
                flush=True,
            )
            self.last_line = time.monotonic()
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def wants_bar(quiet: bool, stream: Optional[TextIO] = None) -> bool:
    """A bar only on a terminal and unless ``quiet``."""
    stream = stream or sys.stderr
    return not quiet and hasattr(stream, "isatty") and stream.isatty()
