"""systemd's notify protocol (sd_notify(3)) without a dependency.

``Type=notify`` units learn "ready" from ``READY=1`` and, with
``WatchdogSec=``, restart the service when ``WATCHDOG=1`` stops coming. The
socket path comes from ``NOTIFY_SOCKET``; outside systemd every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends notify messages to systemd if the process was started by it."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self._address = address or None
        usec = env.get("WATCHDOG_USEC", "")
        # Pet the dog at half the timeout, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s: float | None = (int(usec) / 2e6 if usec.isdigit() and
                                                  int(usec) > 0 else None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> None:
        if self._address is None:
            return
        with contextlib.suppress(OSError), \
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), self._address)

    def ready(self) -> None:
        self.notify("READY=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")
