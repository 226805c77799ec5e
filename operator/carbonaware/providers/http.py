"""The HTTP plumbing every API provider shares: one Session with retries, one error mapping.

Retries are urllib3's ``Retry`` mounted on the session: connection failures and HTTP 429/5xx
are retried with exponential backoff, and a 429's ``Retry-After`` is honoured (capped, so a
server cannot park a thread for an hour). What still fails is mapped to the typed errors in
:mod:`carbonaware.providers.base`, naming provider, zone and HTTP status, never a credential.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from carbonaware.providers.base import (
    AuthError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    UnknownZoneError,
)

log = logging.getLogger(__name__)

USER_AGENT = "carbonaware/0.1 (+https://github.com/carbonaware)"
RETRY_STATUSES = (429, 500, 502, 503, 504)

# Given (status, server's message) returns the error type to raise, or (type, what it means
# for the user, put before the server's words), or None for the default mapping.
Classifier = Callable[[int, str], type[ProviderError] | tuple[type[ProviderError], str] | None]


def make_session(
    *,
    retries: int = 3,
    backoff_factor: float = 0.5,
    backoff_max: float = 30.0,
    retry_after_max: int = 30,
) -> requests.Session:
    """A Session whose GETs retry connection errors and 429/5xx with exponential backoff.

    Read timeouts are not retried: a server that is slow once is slow again, and the caller
    (a poll loop) asks again on its next tick anyway.
    """
    retry = Retry(
        total=retries,
        connect=retries,
        read=False,  # re-raise read timeouts at once (see below)
        status=retries,
        other=0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        respect_retry_after_header=True,
        retry_after_max=retry_after_max,
        raise_on_status=False,  # hand back the last response so its status can be mapped
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept"] = "application/json"
    return session


def range_pages(
    start: datetime, end: datetime, longest: timedelta
) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut into consecutive pages of at most ``longest`` (an API's cap on one
    range request), oldest first."""
    if longest <= timedelta(0):
        raise ValueError(f"a page must be longer than 0, got {longest}")
    pages = []
    while start < end:
        pages.append((start, min(start + longest, end)))
        start = pages[-1][1]
    return pages


def get_json(
    session: requests.Session,
    url: str,
    *,
    provider: str,
    zone: str | None,
    timeout: float,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    secrets: Iterable[str] = (),
    classify: Classifier | None = None,
) -> Any:
    """GET ``url`` and return its JSON body, or raise the typed ProviderError for the failure.

    ``secrets`` are scrubbed from any text that reaches an error message.
    """
    hidden = [s for s in secrets if s]
    try:
        response = session.get(
            url, params=params, headers=headers, auth=auth, timeout=(timeout, timeout)
        )
    except requests.Timeout:
        raise ProviderUnavailableError(
            provider, zone, f"no answer within {timeout:g}s from {_where(url)}"
        ) from None
    except requests.RequestException as exc:
        reason = _scrub(type(exc).__name__, hidden)
        raise ProviderUnavailableError(
            provider, zone, f"cannot reach {_where(url)} ({reason})"
        ) from None
    status = response.status_code
    log.debug("%s GET %s -> HTTP %s", provider, _where(url), status)
    if status >= 400:
        raise _http_error(response, provider, zone, hidden, classify)
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        raise ProviderUnavailableError(
            provider, zone, f"malformed JSON from {_where(url)}", status
        ) from None


def _http_error(
    response: requests.Response,
    provider: str,
    zone: str | None,
    secrets: list[str],
    classify: Classifier | None,
) -> ProviderError:
    status = response.status_code
    raw = _server_message(response)
    message = _scrub(raw, secrets)
    where = _where(response.url)
    said = f"{where} said: {message}" if message else f"{where} failed"
    kind = classify(status, raw) if classify else None  # the server's words, unscrubbed
    meaning = ""
    if isinstance(kind, tuple):
        kind, meaning = kind
        said = f"{meaning}; {said}"
    if kind is None:
        if status in (401, 403):
            kind = AuthError
        elif status == 404:
            kind = UnknownZoneError
        elif status == 429:
            retry_after = _retry_after(response)
            return RateLimitedError(
                provider, zone, f"rate limited; {said}", status, retry_after=retry_after
            )
        elif status >= 500:
            kind = ProviderUnavailableError
        else:
            kind = ProviderError
    if kind is RateLimitedError:
        return RateLimitedError(provider, zone, said, status, retry_after=_retry_after(response))
    error = kind(provider, zone, said, status)
    error.meaning = meaning
    return error


def _server_message(response: requests.Response) -> str:
    """The human part of an error body, short.

    JSON bodies: ``error`` and ``message`` both when both are there (Electricity Maps puts
    the zone and request type in ``error`` and the explanation in ``message``), a nested
    ``{"error": {"code", "message"}}`` (UK Carbon Intensity), or ``detail`` as a string or as
    FastAPI's 422 list of ``{"loc", "msg"}`` (WattTime v3). Else the text, unless HTML.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    parts: list[str] = []
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            parts += _texts(body.get(key))
    elif response.text and "<html" not in response.text[:200].lower():
        parts = [response.text]
    text = " ".join(dict.fromkeys(p for p in parts if p))  # each part once, in order
    return " ".join(text.split())[:240]


def _texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(value.get("message") or value.get("code") or "")]
    if isinstance(value, list):  # FastAPI 422: [{"loc": ["query", "region"], "msg": ...}]
        found = []
        for item in value:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p != "query")
                found.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg")))
        return found
    return [str(value)] if value not in (None, "") else []


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _where(url: str) -> str:
    """Host and path only: query strings are left out of messages and logs."""
    return url.split("?", 1)[0]


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
