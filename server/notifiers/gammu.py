"""SMS through Gammu SMSD and a USB GSM modem: the path that needs no internet.

We hand each message to the running ``gammu-smsd`` daemon with
``gammu-smsd-inject`` (Debian package ``gammu-smsd``), which queues it in
the daemon's backend (files or SQL) and returns at once; the daemon sends
it through the modem. Without ``-unicode`` Gammu silently folds á í ó ú
into GSM-7, so we fold them ourselves (explicit and logged) and keep one
160-character segment; ``unicode = true`` sends UCS-2 (70 characters).
"""

from __future__ import annotations

import re
import subprocess

from secadero.server import gsm7
from secadero.server.notifiers import NotifierError, Outgoing
from secadero.settings import GammuSettings

_WRITTEN = re.compile(r"Written message with ID (\S+)")


class GammuNotifier:
    name = "gammu"
    channel = "sms"

    def __init__(self, settings: GammuSettings) -> None:
        self.settings = settings

    def command(self, message: Outgoing) -> list[str]:
        body = message.body if self.settings.unicode else gsm7.fold(message.body)
        argv = [self.settings.inject_command, "-c", str(self.settings.smsdrc), "TEXT",
                message.address, "-text", body]
        if self.settings.unicode:
            argv.append("-unicode")
        # Without -len gammu-smsd-inject silently cuts the text at one segment (160
        # GSM-7 or 70 UCS-2 characters; seen with Gammu 1.42); with it, a multipart SMS.
        if len(body) > (70 if self.settings.unicode else 160):
            argv += ["-len", str(len(body))]
        return argv

    def send(self, message: Outgoing) -> str | None:
        if not message.address:
            raise NotifierError("no phone number", retryable=False)
        try:
            result = subprocess.run(self.command(message), capture_output=True, text=True,
                                    timeout=self.settings.timeout_s, check=False)
        except FileNotFoundError as exc:
            raise NotifierError(f"{self.settings.inject_command} not found: install the Debian "
                                "package gammu-smsd", retryable=False) from exc
        except subprocess.TimeoutExpired as exc:
            raise NotifierError(f"gammu-smsd-inject took over {self.settings.timeout_s:g} s"
                                ) from exc
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            raise NotifierError(f"gammu-smsd-inject exit {result.returncode}: {output[-300:]}")
        match = _WRITTEN.search(output)
        return match.group(1) if match else None

    def close(self) -> None:
        pass
