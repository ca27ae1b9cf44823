"""Restart intensity: at most ``intensity`` restarts within ``period`` seconds (OTP MaxR/MaxT).

Example:
    >>> from nonsense_hpc.supervise.intensity import RestartIntensity
    >>> r = RestartIntensity(intensity=1, period=5.0)
    >>> r.add(now=0.0), r.add(now=1.0)
    (True, False)
    >>> RestartIntensity(1, 5.0).add(0.0), RestartIntensity(1, 5.0).add(10.0)
    (True, True)
"""

from __future__ import annotations

import collections

from nonsense_hpc.errors import ConfigError

__all__ = ["RestartIntensity"]


class RestartIntensity:
    """A sliding window of restart times.

    Args:
        intensity: restarts allowed within ``period`` (0: none, the first death gives up).
        period: the window in seconds.
    """

    def __init__(self, intensity: int, period: float) -> None:
        if intensity < 0 or period <= 0:
            raise ConfigError(f"need intensity >= 0 and period > 0, got {intensity}, {period}")
        self.intensity = intensity
        self.period = period
        self._times: collections.deque[float] = collections.deque()

    def add(self, now: float) -> bool:
        """Record a restart at ``now``; False when it exceeds the intensity (give up)."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.period:
            self._times.popleft()
        return len(self._times) <= self.intensity

    def count(self, now: float) -> int:
        """Restarts recorded within the period ending at ``now``."""
        return sum(1 for t in self._times if t > now - self.period)
