"""Turn a requests outcome into NotifierError with the right ``retryable`` flag."""

from __future__ import annotations

import requests

from secadero.server.notifiers import NotifierError


def post(session: requests.Session, url: str, *, timeout_s: float, **kwargs: object
         ) -> requests.Response:
    """POST; 2xx returns the response; 429/5xx/timeouts are retryable, other 4xx are not."""
    try:
        response = session.post(url, timeout=timeout_s, **kwargs)  # type: ignore[arg-type]
    except requests.Timeout as exc:
        raise NotifierError(f"timeout after {timeout_s:g} s") from exc
    except requests.RequestException as exc:
        raise NotifierError(f"{type(exc).__name__}: cannot reach {url.split('?')[0]}") from exc
    if 200 <= response.status_code < 300:
        return response
    retryable = response.status_code == 429 or response.status_code >= 500
    raise NotifierError(f"HTTP {response.status_code}: {response.text[:200]}",
                        retryable=retryable)
