"""A generic webhook: one JSON POST per message, optionally signed with HMAC-SHA256.

For whatever the cooperative already runs (a chat bot, a PLC gateway). The
receiver checks ``X-Secadero-Signature: sha256=<hex>`` over the raw body
with the shared secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict

import requests

from secadero.server.notifiers import Outgoing
from secadero.server.notifiers.http_errors import post
from secadero.settings import WebhookSettings


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    name = "webhook"
    channel = "webhook"

    def __init__(self, settings: WebhookSettings,
                 session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()

    def send(self, message: Outgoing) -> str | None:
        body = json.dumps(asdict(message), ensure_ascii=False, sort_keys=True).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.settings.secret:
            headers["X-Secadero-Signature"] = signature(self.settings.secret, body)
        post(self.session, self.settings.url, data=body, headers=headers,
             timeout_s=self.settings.timeout_s)
        return None

    def close(self) -> None:
        self.session.close()
