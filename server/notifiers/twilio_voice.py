"""Twilio Programmable Voice: the escalation ladder's last step, a call that reads the alert.

Send: ``POST {api}/2010-04-01/Accounts/{AccountSid}/Calls.json``, form fields
``To``, ``From`` and ``Twiml`` (the instructions inline, so Twilio needs no URL
of ours to fetch them); HTTP Basic auth with the account SID and auth token;
201 with the call's ``sid``. The TwiML is one ``<Say language="es-MX">`` with
the message's text, read ``loop`` times: a worker at the trays may pick up late.

With ``callback_base_url`` the call carries ``StatusCallback`` (our
``/api/twilio/call-status``) and ``StatusCallbackEvent=completed``: Twilio POSTs
the call's end, ``CallSid`` and ``CallStatus`` (``completed``, ``busy``,
``no-answer``, ``failed``, ``canceled``), signed like every webhook. With
``machine_detection`` it also asks ``MachineDetection=Enable``, and the callback
carries ``AnsweredBy`` (``human``, ``machine_start``, ``fax``, ``unknown`` ...),
since a voicemail that picks up is ``completed`` too. ``AlertService.call_status``
records it; an unanswered call is placed again at the next trays round.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

import requests

from secadero.server.notifiers import NotifierError, Outgoing
from secadero.server.notifiers.twilio import create
from secadero.settings.notifiers import TwilioVoiceSettings

CALL_STATUS_PATH = "/api/twilio/call-status"


def twiml(text: str, language: str, loop: int = 1) -> str:
    """The TwiML that reads ``text`` aloud in ``language`` (``es-MX``), ``loop`` times."""
    return (f'<Response><Say language={quoteattr(language)} loop="{loop}">'
            f"{escape(' '.join(text.split()))}</Say></Response>")


class TwilioVoiceNotifier:
    """Voice calls through Twilio's REST API (channel ``voice``)."""

    name = "twilio_voice"
    channel = "voice"

    def __init__(self, settings: TwilioVoiceSettings,
                 session: requests.Session | None = None) -> None:
        if not settings.auth_token:
            raise ValueError("Twilio voice needs an auth token (auth_token_env or "
                             "auth_token_file)")
        self.settings = settings
        self.session = session or requests.Session()
        self.url = (f"{settings.api_url}/2010-04-01/Accounts/{settings.account_sid}"
                    "/Calls.json")

    def send(self, message: Outgoing) -> str | None:
        if not message.address:
            raise NotifierError("no phone number", retryable=False)
        text = f"{message.title}. {message.body}" if message.title else message.body
        form = {"To": message.address, "From": self.settings.from_number,
                "Twiml": twiml(text, self.settings.language, self.settings.loop)}
        if self.settings.callback_base_url:
            form["StatusCallback"] = (self.settings.callback_base_url.rstrip("/")
                                      + CALL_STATUS_PATH)
            # Only the end of the call (Twilio's default, said out loud).
            form["StatusCallbackEvent"] = "completed"
        if self.settings.machine_detection:
            form["MachineDetection"] = "Enable"
        return create(self.session, self.url, form, account_sid=self.settings.account_sid,
                      auth_token=self.settings.auth_token, timeout_s=self.settings.timeout_s)

    def close(self) -> None:
        self.session.close()
