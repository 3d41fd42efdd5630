"""The node's self-readings: the Pi's throttling mask, Wi-Fi signal, free disk.

The readers are pointed at files written here in the kernel's and the
firmware's formats; on this PC the real paths are absent and say None.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from secadero.firmware.health import DiskFree, ThrottleFlags, WifiSignal

PROC_WIRELESS = """\
Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   54.  -56.  -256        0      0      0      0      0        0
"""


def test_throttle_flags_from_sysfs_hex(tmp_path: Path) -> None:
    sysfs = tmp_path / "get_throttled"
    sysfs.write_text("50005\n")  # under-voltage now and since boot, throttled now and since
    assert ThrottleFlags(sysfs_path=sysfs, vcgencmd=None).value == 0x50005


def test_throttle_flags_from_vcgencmd_when_sysfs_is_absent(tmp_path: Path) -> None:
    calls: list[Sequence[str]] = []

    def run(argv: Sequence[str]) -> str:
        calls.append(argv)
        return "throttled=0x10000\n"

    flags = ThrottleFlags(sysfs_path=tmp_path / "absent", vcgencmd="true", run=run)
    assert flags.value == 0x10000
    assert calls == [[shutil.which("true"), "get_throttled"]]


def test_throttle_flags_are_none_on_a_machine_without_the_pi_firmware(tmp_path: Path) -> None:
    assert ThrottleFlags(sysfs_path=tmp_path / "absent", vcgencmd=None).value is None
    assert ThrottleFlags(sysfs_path=tmp_path / "absent",
                         vcgencmd="no-such-vcgencmd-here").value is None


def test_wifi_signal_in_dbm_and_the_unsigned_form(tmp_path: Path) -> None:
    path = tmp_path / "wireless"
    path.write_text(PROC_WIRELESS)
    assert WifiSignal(path=path).rssi_dbm == -56.0
    assert WifiSignal(path=path, interface="wlan1").rssi_dbm is None
    path.write_text(PROC_WIRELESS.replace("-56.", "200."))
    assert WifiSignal(path=path).rssi_dbm == -56.0


def test_wifi_signal_is_none_without_a_wireless_interface(tmp_path: Path) -> None:
    path = tmp_path / "wireless"
    path.write_text("\n".join(PROC_WIRELESS.splitlines()[:2]) + "\n")
    assert WifiSignal(path=path).rssi_dbm is None
    assert WifiSignal(path=tmp_path / "absent").rssi_dbm is None


def test_disk_free_of_the_outbox_folder(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.sqlite3"
    free = DiskFree(outbox).value
    assert free is not None
    # Other processes write meanwhile: the same file system's figure, give or take.
    assert abs(free - shutil.disk_usage(tmp_path).free) < 64 * 1024 * 1024
    assert DiskFree(tmp_path / "no" / "such" / "dir" / "x").value is None
