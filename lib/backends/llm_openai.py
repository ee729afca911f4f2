"""An LLM behind an OpenAI-compatible HTTP server (vLLM, Ollama, llama.cpp, hosted APIs).

Uses only the standard library. The API key is read from the environment variable named by
``api_key_env`` at call time and never passed as a parameter, because executed notebooks
(which record their parameters) are saved. Without the variable no Authorization header is
sent, which local servers accept.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from lib.backends.llm import LLM


@LLM.register("openai")
class OpenAIChat:
    """``POST {base_url}/chat/completions`` and return the first choice's content."""

    def __init__(
        self, model: str, base_url: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60
    ):
        self.model_id = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout

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
        return _content(self._post(body), self.url)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, body: dict) -> Any:
        data = json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.url, data=data, headers=self._headers(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:300]
            raise RuntimeError(
                f"LLM server {self.url} answered HTTP {e.code} {e.reason}: {detail}"
            ) from e
        except (urllib.error.URLError, TimeoutError) as e:
            raise ConnectionError(f"cannot reach LLM server {self.url}: {e}") from e
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"LLM server {self.url} returned non-JSON: {text[:200]!r}") from e


def _content(payload: Any, url: str) -> str:
    """``choices[0].message.content`` of a chat completion; a clear error if absent."""
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(
            f"LLM server {url} returned no choices[0].message.content: {json.dumps(payload)[:200]}"
        ) from e
    if not isinstance(content, str):
        raise TypeError(f"LLM server {url} returned non-text content: {content!r:.200}")
    return content
