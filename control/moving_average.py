"""A moving average over the last `window_s` seconds, in fixed memory: a ring of time buckets.

The window is cut into `slots` buckets (1 s each for 5 minutes by default); each keeps the sum and the
count of the samples that fell in it, and the totals are kept as buckets enter and leave the window,
so adding a sample or reading the average costs O(1) and allocates nothing, whatever the sample rate
(a 100 ms cycle for days). Samples may come irregularly; a gap (no usable input) simply adds nothing.
The totals are recomputed from the buckets once per turn of the ring, so rounding never accumulates.

Own code rather than numpy or a deque of samples: a deque grows with the sample rate and a numpy window
recomputes its sum; here the memory is fixed by the window's resolution, not by how often it is fed.
"""

from __future__ import annotations

import math
from array import array


class MovingAverage:
    def __init__(self, window_s: float = 300.0, slots: int = 300) -> None:
        if not window_s > 0 or slots < 1:
            raise ValueError(f"a moving average needs a window > 0 s and >= 1 slot, got {window_s!r} s, {slots!r}")
        self.window_s = float(window_s)
        self.slots = slots
        self.width = self.window_s / slots
        self._sums = array("d", bytes(8 * slots))
        self._counts = array("d", bytes(8 * slots))
        self._sum = 0.0
        self._count = 0.0
        self._bucket: int | None = None  # the absolute bucket number of the newest sample
        self._first: float | None = None  # when the oldest sample still in the window was taken

    def _advance(self, t: float) -> None:
        """Move the ring to time `t`: buckets that left the window are emptied (at most one turn's work)."""
        bucket = math.floor(t / self.width)
        if self._bucket is None:
            self._bucket = bucket
            return
        if bucket <= self._bucket:
            return  # the same bucket (or a clock that did not move)
        steps = min(bucket - self._bucket, self.slots)
        for b in range(self._bucket + 1, self._bucket + 1 + steps):
            i = b % self.slots
            self._sum -= self._sums[i]
            self._count -= self._counts[i]
            self._sums[i] = self._counts[i] = 0.0
            if i == 0:  # once per turn: the totals afresh from the buckets, so rounding never builds up
                self._sum, self._count = math.fsum(self._sums), math.fsum(self._counts)
        self._bucket = bucket
        if self._count <= 0.0:
            self._sum, self._count, self._first = 0.0, 0.0, None
        elif self._first is not None and self._first < t - self.window_s:
            self._first = t - self.window_s  # older samples have left: the window now starts here

    def add(self, t: float, x: float) -> None:
        """A sample `x` taken at monotonic time `t` (seconds); non-finite samples are left out."""
        self._advance(t)
        if not math.isfinite(x):
            return
        i = math.floor(t / self.width) % self.slots
        self._sums[i] += x
        self._counts[i] += 1.0
        self._sum += x
        self._count += 1.0
        if self._first is None:
            self._first = t

    def value(self, t: float) -> float | None:
        """The mean of the samples of the last `window_s` at time `t` (None: none)."""
        self._advance(t)
        return self._sum / self._count if self._count > 0 else None

    def span(self, t: float) -> float:
        """How many seconds of the window the samples cover at time `t` (`window_s` once it is full)."""
        self._advance(t)
        return 0.0 if self._first is None else min(t - self._first, self.window_s)

    def clear(self) -> None:
        for i in range(self.slots):
            self._sums[i] = self._counts[i] = 0.0
        self._sum = self._count = 0.0
        self._bucket = self._first = None
