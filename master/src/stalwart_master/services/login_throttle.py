"""Failed-login throttling per user name and per client address, in the master's memory.

A sliding window of failure times per key: once a key has ``max_failures`` inside the window, every
login for it is refused (429 with ``Retry-After``) until the oldest failure slides out, even with
the right password, so guessing costs the attacker the window and not one round trip. A success
clears the user name's failures. The state is per master process: restarting the master forgets
it, which an attacker cannot trigger.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from stalwart_master.errors import TooManyRequests

# Bounds memory under a spray of user names or addresses; the oldest idle keys go first.
MAX_KEYS = 100_000


class LoginThrottle:
    def __init__(
        self,
        *,
        max_failures_per_user: int,
        max_failures_per_address: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"user": max_failures_per_user, "address": max_failures_per_address}
        self._window = window_seconds
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def check(self, username: str, address: str) -> None:
        """Raise ``TooManyRequests`` while either key is locked out."""
        now = self._clock()
        with self._lock:
            for kind, value in (("user", username), ("address", address)):
                failures = self._recent((kind, value), now)
                if len(failures) >= self._limits[kind]:
                    wait = int(failures[0] + self._window - now) + 1
                    raise TooManyRequests(
                        f"too many failed logins for this {'user' if kind == 'user' else 'address'}; "
                        f"try again in {wait} s",
                        retry_after=wait,
                    )

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= MAX_KEYS:
                for key in list(self._failures)[: MAX_KEYS // 10]:
                    del self._failures[key]
            for key in (("user", username), ("address", address)):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(("user", username), None)
