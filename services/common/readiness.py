"""The readiness gate: every business call answers UNAVAILABLE (HTTP 503) until ready.

The health service tells balancers and probes; this tells a client that reached the
port early (a retrying SDK, a sidecar, a test) why its call was refused, instead of
letting it reach a core whose indexes, database or model are not loaded yet.
"""

from __future__ import annotations

from services.common.errors import Unavailable


class Readiness:
    """Closed until `open()`; `check()` raises UNAVAILABLE with `message` while closed."""

    def __init__(self, message: str) -> None:
        self.message = message
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def open(self) -> None:
        self._ready = True

    def check(self) -> None:
        if not self._ready:
            raise Unavailable(self.message)
