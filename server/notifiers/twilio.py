"""Twilio Programmable Messaging: SMS out, delivery status callbacks, signed webhooks.

Send: ``POST {api}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form
fields ``To``, ``From``, ``Body``, ``StatusCallback``; HTTP Basic auth with
the account SID and auth token; 201 with the message ``sid``.

Every webhook Twilio sends us (delivery status, an inbound "OK") carries
``X-Twilio-Signature`` = Base64(HMAC-SHA1(auth token, full URL + each POST
parameter name and value, sorted by name)), as ``twilio/request_validator.py``
computes it. Without a valid signature anyone could acknowledge an alert.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

import requests

from secadero.server import gsm7
from secadero.server.notifiers import NotifierError, Outgoing
from secadero.server.notifiers.http_errors import post
from secadero.settings import TwilioSettings

STATUS_PATH = "/api/twilio/status"
INBOUND_PATH = "/api/twilio/inbound"


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The X-Twilio-Signature Twilio computes for a form-encoded POST to ``url``."""
    data = url + "".join(f"{name}{value}" for name, value in sorted(set(params)))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _without_default_port(url: str) -> str:
    for scheme, port in (("https://", ":443"), ("http://", ":80")):
        if url.startswith(scheme):
            host, _, rest = url[len(scheme):].partition("/")
            if host.endswith(port):
                return f"{scheme}{host[: -len(port)]}/{rest}"
    return url


def valid_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]],
                    received: str | None) -> bool:
    """Check a webhook's signature; like Twilio's validator, with or without :443."""
    if not received:
        return False
    pairs = list(params)
    candidates = {url, _without_default_port(url)}
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (TypeError),
    # and a header is whatever the sender put there.
    given = received.encode("utf-8", "replace")
    return any(hmac.compare_digest(signature(auth_token, candidate, pairs).encode(), given)
               for candidate in candidates)


def create(session: requests.Session, url: str, form: dict[str, str], *, account_sid: str,
           auth_token: str | None, timeout_s: float) -> str:
    """POST a Twilio resource (a Message, a Call) and return its ``sid``.

    Twilio answers 201 with the resource as JSON; ``post`` has turned every
    other answer into a ``NotifierError`` already.
    """
    response = post(session, url, data=form, auth=(account_sid, auth_token or ""),
                    timeout_s=timeout_s)
    try:
        return str(response.json()["sid"])
    except (ValueError, KeyError, TypeError) as exc:
        raise NotifierError(f"unexpected answer: {response.text[:200]}",
                            retryable=False) from exc


class TwilioNotifier:
    """SMS through Twilio's REST API."""

    name = "twilio"
    channel = "sms"

    def __init__(self, settings: TwilioSettings,
                 session: requests.Session | None = None) -> None:
        if not settings.auth_token:
            raise ValueError("Twilio needs an auth token (auth_token_env or auth_token_file)")
        self.settings = settings
        self.session = session or requests.Session()
        self.url = (f"{settings.api_url}/2010-04-01/Accounts/{settings.account_sid}"
                    "/Messages.json")

    def send(self, message: Outgoing) -> str | None:
        if not message.address:
            raise NotifierError("no phone number", retryable=False)
        form = {"To": message.address, "From": self.settings.from_number,
                # Fold to GSM-7: one 160-character segment, not UCS-2's 70.
                "Body": gsm7.fold(message.body)}
        if self.settings.callback_base_url:
            form["StatusCallback"] = self.settings.callback_base_url.rstrip("/") + STATUS_PATH
        return create(self.session, self.url, form, account_sid=self.settings.account_sid,
                      auth_token=self.settings.auth_token, timeout_s=self.settings.timeout_s)

    def close(self) -> None:
        self.session.close()
