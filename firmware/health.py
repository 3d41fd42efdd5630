"""The node's own condition: Raspberry Pi supply and throttling, Wi-Fi signal, free disk.

Each reading is a small device-like class with one ``value`` property that
is ``None`` when this machine cannot tell (no Raspberry Pi firmware on a PC,
no wireless interface on a wired node): never a made-up number. The paths
are keyword options so a test points them at files it wrote; nothing here
needs root.

- ``ThrottleFlags``: the firmware's ``get_throttled`` mask. Raspberry Pi OS
  exposes it in sysfs (``/sys/devices/platform/soc/soc:firmware/get_throttled``,
  hexadecimal, readable by any user); older images only through
  ``vcgencmd get_throttled`` (``throttled=0x50005``). Bit 0: under-voltage
  now; 1: ARM frequency capped; 2: throttled; 3: soft temperature limit;
  bits 16-19: the same has happened since boot (raspberrypi.com/documentation,
  "vcgencmd"). A flickering supply is the commonest cause of a corrupt SD
  card and a DHT22 that stops answering, so the dashboard shows it.
- ``WifiSignal``: the signal level in dBm from ``/proc/net/wireless`` (the
  kernel's wireless extensions table; ``iw`` reads the same numbers).
- ``DiskFree``: bytes free on the file system of the outbox.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

SYSFS_THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
PROC_WIRELESS = Path("/proc/net/wireless")
_VCGENCMD_ANSWER = re.compile(r"throttled=(0x[0-9a-fA-F]+)")


def _run_vcgencmd(argv: Sequence[str]) -> str:
    # A hung firmware mailbox must not stall the agent's status round.
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=5,
                          check=True).stdout


class ThrottleFlags:
    """The Raspberry Pi firmware's under-voltage and throttling bit mask, or ``None``.

    Reads sysfs first; falls back to ``vcgencmd get_throttled`` when that
    command is installed. On a machine with neither (a PC, the simulated
    yard) ``value`` is ``None``.
    """

    def __init__(self, *, sysfs_path: Path = SYSFS_THROTTLED,
                 vcgencmd: str | None = "vcgencmd",
                 run: Callable[[Sequence[str]], str] = _run_vcgencmd) -> None:
        self.sysfs_path = sysfs_path
        self.vcgencmd = shutil.which(vcgencmd) if vcgencmd else None
        self._run = run

    @property
    def value(self) -> int | None:
        try:
            return int(self.sysfs_path.read_text().strip(), 16)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.debug("cannot read %s: %s", self.sysfs_path, exc)
        if self.vcgencmd is None:
            return None
        try:
            answer = self._run([self.vcgencmd, "get_throttled"])
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("vcgencmd get_throttled failed: %s", exc)
            return None
        match = _VCGENCMD_ANSWER.search(answer)
        return int(match.group(1), 16) if match else None

    def close(self) -> None:
        """Nothing to release; here so every device closes alike."""


class WifiSignal:
    """The Wi-Fi signal level in dBm of ``interface`` (or the first one listed), or ``None``.

    ``/proc/net/wireless`` has two header lines, then one line per
    interface: ``wlan0: 0000   54.  -56.  -256  ...`` (status, link quality,
    signal level, noise). Drivers that report the level in dBm give a
    negative number; a few report an unsigned byte (200 = -56 dBm).
    """

    def __init__(self, *, path: Path = PROC_WIRELESS, interface: str | None = None) -> None:
        self.path = path
        self.interface = interface

    @property
    def rssi_dbm(self) -> float | None:
        try:
            lines = self.path.read_text().splitlines()[2:]
        except OSError:
            return None
        for line in lines:
            name, _, rest = line.partition(":")
            if self.interface is not None and name.strip() != self.interface:
                continue
            columns = rest.split()
            if len(columns) < 3:
                continue
            try:
                level = float(columns[2].rstrip("."))
            except ValueError:
                continue
            if level > 0:  # an unsigned byte: 256 + dBm
                level -= 256
            if -120 <= level <= 0:
                return level
        return None

    @property
    def value(self) -> float | None:
        return self.rssi_dbm

    def close(self) -> None:
        """Nothing to release."""


class DiskFree:
    """Bytes free on the file system that holds ``path`` (the outbox's folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def value(self) -> int | None:
        folder = self.path if self.path.is_dir() else self.path.parent
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            return None

    def close(self) -> None:
        """Nothing to release."""
