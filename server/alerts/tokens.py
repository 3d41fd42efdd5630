"""Signed, expiring acknowledge tokens for the links in push messages.

Anyone subscribed to an ntfy topic can tap its buttons, so the link carries
a token that only acknowledges one episode, only until it expires, and only
once: ``<expiry>.<nonce>.<HMAC-SHA256(secret, "ack.<episode>.<expiry>.<nonce>")>``
(base64url, the MAC truncated to 128 bits). The random nonce makes each
message's token its own, so one recipient's used link does not spend
another's; the API keeps the used ones (``AlertStore.claim_ack_token``) until
they expire, so a replayed link is refused even after a restart. The secret
comes from the config (``ack_secret_env`` or ``_file``) or, if none is given,
from a file created beside the alert database with mode 0600, so links
survive a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path


def load_or_create_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


class AckTokens:
    def __init__(self, secret: str, ttl_s: float) -> None:
        if len(secret) < 16:
            raise ValueError("the acknowledge secret must be at least 16 characters")
        self._key = secret.encode()
        self.ttl_s = ttl_s

    def _mac(self, episode_id: int, expiry: int, nonce: str) -> str:
        digest = hmac.new(self._key, f"ack.{episode_id}.{expiry}.{nonce}".encode(),
                          hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def make(self, episode_id: int, now: float) -> str:
        expiry = int(now + self.ttl_s)
        nonce = secrets.token_urlsafe(6)
        return f"{expiry}.{nonce}.{self._mac(episode_id, expiry, nonce)}"

    @staticmethod
    def expiry(token: str) -> int:
        """The expiry (UNIX seconds) written in a token that ``check`` accepted."""
        return int(token.partition(".")[0])

    def sign_body(self, body: bytes) -> str:
        """Signature of a local request body (Gammu's RunOnReceive hook -> the API)."""
        return "sha256=" + hmac.new(self._key, b"body." + body, hashlib.sha256).hexdigest()

    def check_body(self, body: bytes, signature: str | None) -> bool:
        # As bytes: compare_digest raises TypeError for a str with non-ASCII characters.
        return bool(signature) and hmac.compare_digest(
            self.sign_body(body).encode(), (signature or "").encode("utf-8", "replace"))

    def check(self, episode_id: int, token: str, now: float) -> str | None:
        """None if the token is good for this episode now, else the reason. Whether it
        was used already is the store's to say (``AlertStore.claim_ack_token``)."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit() \
                or len(parts[0]) > 12 or not parts[1] or not parts[2]:
            return "malformed token"
        expiry_text, nonce, mac = parts
        if not hmac.compare_digest(self._mac(episode_id, int(expiry_text), nonce).encode(),
                                   mac.encode()):
            return "bad signature"
        if now > int(expiry_text):
            return "expired"
        return None
