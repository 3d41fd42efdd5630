"""ntfy push (https://docs.ntfy.sh/publish/): priority, tags, click URL, an Acknowledge button.

We publish as JSON to the server's root URL rather than with headers:
Spanish titles are UTF-8, which HTTP headers do not carry reliably (ntfy
would need RFC 2047 encoding), while the JSON body does. The "http" action
button POSTs to our API with a signed, expiring token; ``clear`` dismisses
the notification once the acknowledgement went through.
"""

from __future__ import annotations

from typing import Any

import requests

from secadero.server.notifiers import Outgoing
from secadero.server.notifiers.http_errors import post
from secadero.settings import NtfySettings

PRIORITY = {"critical": 5, "warning": 4, "info": 3}
# Emoji short codes from ntfy's docs/emojis.md.
TAGS = {
    "rain_forecast": ["umbrella"],
    "rain_now": ["cloud_with_rain", "rotating_light"],
    "trays_still_out": ["rotating_light"],
    "all_clear": ["white_check_mark"],
    "humidity_surge": ["warning"],
}
ACK_LABEL = {"es": "Recibido", "en": "Acknowledge"}


def payload(message: Outgoing) -> dict[str, Any]:
    """The JSON body ntfy expects for one message."""
    body: dict[str, Any] = {
        "topic": message.address,
        "title": f"{message.title} - {message.yard}",
        "message": message.body,
        "priority": PRIORITY.get(message.severity, 3),
        "tags": TAGS.get(message.kind, ["warning"]),
    }
    if message.ack_url:
        # Tapping the notification opens the alert's page (GET /alerts/{id}?token=...).
        base, _, query = message.ack_url.partition("/ack?")
        body["click"] = base.replace("/api/alerts/", "/alerts/") + "?" + query
        if message.event not in ("all_clear", "recovered"):
            body["actions"] = [{"action": "http", "label": ACK_LABEL.get(message.language,
                                                                         "Acknowledge"),
                                "url": message.ack_url, "method": "POST", "clear": True}]
    return body


class NtfyNotifier:
    """Push through an ntfy server (ntfy.sh or self-hosted)."""

    name = "ntfy"
    channel = "push"

    def __init__(self, settings: NtfySettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()

    def send(self, message: Outgoing) -> str | None:
        headers = {"Content-Type": "application/json"}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        response = post(self.session, self.settings.url + "/", json=payload(message),
                        headers=headers, timeout_s=self.settings.timeout_s)
        try:
            return str(response.json().get("id")) or None
        except (ValueError, AttributeError):
            return None

    def close(self) -> None:
        self.session.close()
