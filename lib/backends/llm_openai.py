"""An LLM behind an OpenAI-compatible HTTP server (vLLM, Ollama, llama.cpp, hosted APIs).

Uses only the standard library. The API key is read from the environment variable named by
``api_key_env`` at call time and never passed as a parameter, because executed notebooks
(which record their parameters) are saved; it is also cut out of every error message (a
server may echo the request's headers). Without the variable no Authorization header is
sent, which local servers accept.

A request that may succeed when sent again is re-sent up to ``retries`` times: HTTP 5xx, 429
(rate limited) and 408, a request that timed out (``timeout`` seconds) and a connection the
server dropped. The waits double (``backoff``, 2x, 4x, ... seconds, at most
:data:`MAX_WAIT`); a ``Retry-After`` header, when the server sends one, sets the wait
instead. A server that cannot be reached (connection refused, unknown host) or that refuses
the request (other 4xx) fails at once. Each failure says which it was: ``ConnectionError``
"cannot reach", ``TimeoutError`` "did not answer within", ``RuntimeError`` "answered HTTP N"
with the server's message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from lib.backends.llm import LLM

MAX_WAIT = 120.0  # seconds: the longest wait between two tries, Retry-After included
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
DETAIL_CHARS = 300  # of the server's error body, in messages


class _Retryable(Exception):
    """One try that may succeed when sent again; ``error`` is what to raise if none does."""

    def __init__(self, error: Exception, wait: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.wait = wait


@LLM.register("openai")
class OpenAIChat:
    """``POST {base_url}/chat/completions`` and return the first choice's content."""

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60,
        retries: int = 4,
        backoff: float = 1.0,
    ):
        if not base_url:
            raise ValueError("the openai LLM backend needs base_url (disambiguate.llm_base_url)")
        if not timeout > 0:
            raise ValueError(
                f"LLM timeout must be > 0 seconds (disambiguate.llm_timeout), got {timeout}"
            )
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(
                "LLM HTTP retries must be an int >= 0 (disambiguate.llm_http_retries), "
                f"got {retries!r}"
            )
        self.model_id = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = backoff

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def chat(
        self,
        messages: list[dict],
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        seed: int = 0,
    ) -> str:
        body = {
            "model": self.model_id,
            "messages": messages,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_new_tokens,
            "seed": seed,
        }
        return self._content(self._post(body))

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, body: dict) -> Any:
        """Send ``body``, re-sending what may succeed again; the parsed JSON reply."""
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.retries + 1):
            try:
                text = self._send(data)
            except _Retryable as e:
                if attempt == self.retries:
                    raise self._final(e.error, attempt + 1) from e.__cause__
                wait = e.wait if e.wait is not None else self.backoff * 2**attempt
                time.sleep(min(wait, MAX_WAIT))
                continue
            try:
                return json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"LLM server {self.url} returned non-JSON: {self._redact(text[:200])!r}"
                ) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, data: bytes) -> str:
        """One try: the reply's text, or :class:`_Retryable`, or the error that ends it all."""
        request = urllib.request.Request(
            self.url, data=data, headers=self._headers(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            error = self._http_error(e)
            if e.code in RETRY_STATUS:
                raise _Retryable(error, retry_after(e.headers.get("Retry-After"))) from e
            raise error from None
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            kind, error = self._network_error(e)
            if kind == "unreachable":
                raise error from None
            raise _Retryable(error) from e

    def _http_error(self, e: urllib.error.HTTPError) -> RuntimeError:
        detail = e.read().decode("utf-8", "replace")[:DETAIL_CHARS]
        return RuntimeError(
            self._redact(f"LLM server {self.url} answered HTTP {e.code} {e.reason}: {detail}")
        )

    def _network_error(self, e: BaseException) -> tuple[str, Exception]:
        """("timeout" | "dropped" | "unreachable", the error that names it)."""
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        if isinstance(reason, TimeoutError):
            return "timeout", TimeoutError(
                f"LLM server {self.url} did not answer within {self.timeout:g} s"
            )
        if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                               http.client.HTTPException)):
            return "dropped", ConnectionError(
                self._redact(f"LLM server {self.url} dropped the connection: {reason}")
            )
        return "unreachable", ConnectionError(self._redact(
            f"cannot reach LLM server {self.url}: {reason}; is it running, and is "
            "disambiguate.llm_base_url right?"
        ))

    def _final(self, error: Exception, tries: int) -> Exception:
        """``error`` with how many tries it took and what to change."""
        hint = {TimeoutError: "; raise disambiguate.llm_timeout if the server is slow"}
        extra = hint.get(type(error), "")
        return type(error)(
            f"{error} (after {tries} tr{'y' if tries == 1 else 'ies'}; "
            f"disambiguate.llm_http_retries={self.retries}{extra})"
        )

    def _content(self, payload: Any) -> str:
        """``choices[0].message.content`` of a chat completion; a clear error if absent.

        A null content (a reply cut off before any text, as reasoning models give) is the
        empty answer: malformed, so :func:`lib.llm.asking.ask` retries and logs it.
        """
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(self._redact(
                f"LLM server {self.url} returned no choices[0].message.content: "
                f"{json.dumps(payload)[:200]}"
            )) from e
        if content is None:
            return ""
        if not isinstance(content, str):
            raise TypeError(
                self._redact(f"LLM server {self.url} returned non-text content: {content!r:.200}")
            )
        return content

    def _redact(self, text: str) -> str:
        """``text`` with the API key (if any) cut out: an error may quote the server."""
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "[API key]") if key else text


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

