"""Backends loaded through the registries from the tiny zoo, and the replay of recorded
LLM answers (the answer cache itself: tests/test_llm_cache.py)."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from llm_server import Reply, closed_port_url, serve, url
from PIL import Image

from lib.backends.captioner import CAPTIONER
from lib.backends.classifier import CLASSIFIER
from lib.backends.clip import CLIP, create_clip
from lib.backends.llm import LLM, create_llm
from lib.backends.llm_openai import retry_after
from lib.backends.t2i import T2I, create_t2i
from lib.llm.cache import CachedLLM, LLMCache, export_jsonl

MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Name a style for a photo of the digit one."},
]
GEN = {"steps": 2, "guidance_scale": 2.0, "height": 32, "width": 32}


# ---------------------------------------------------------------- registries
@pytest.mark.parametrize(
    "create, valid",
    [(create_t2i, "diffusers"), (create_clip, "open_clip"), (create_llm, "recorded")],
)
def test_unknown_backend_lists_valid_names(create, valid):
    with pytest.raises(KeyError, match=valid):
        create("no-such-backend")


def test_each_kind_registers_its_backends():
    assert T2I.names() == ["diffusers", "mini"]
    assert CLIP.names() == ["open_clip"]
    assert LLM.names() == ["openai", "recorded", "transformers"]
    assert CLASSIFIER.names() == ["timm"]
    assert CAPTIONER.names() == ["retrieval", "transformers"]


# ---------------------------------------------------------------- text-to-image
@pytest.fixture(scope="module")
def t2i(tiny_zoo):
    return create_t2i("diffusers", model=tiny_zoo["t2i"])


def _pixels(images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(im) for im in images]


def test_t2i_images_do_not_depend_on_batch(t2i):
    prompts = ["a photo of a cat", "a sketch of a dog", "a painting of a one"]
    batch, nsfw = t2i.generate(prompts, ["blurry"] * 3, [11, 12, 13], **GEN)
    alone, _ = t2i.generate(prompts[1:2], ["blurry"], [12], **GEN)
    assert [im.size for im in batch] == [(32, 32)] * 3
    assert all(im.mode == "RGB" for im in batch)
    assert nsfw == [False, False, False]  # no safety checker in the tiny pipeline
    assert np.array_equal(_pixels(batch)[1], _pixels(alone)[0])


def test_t2i_seeds_matter(t2i):
    a, _ = t2i.generate(["a cat", "a cat"], None, [1, 2], **GEN)
    b, _ = t2i.generate(["a cat"], None, [1], **GEN)
    pa, pb = _pixels(a), _pixels(b)
    assert not np.array_equal(pa[0], pa[1])
    assert np.array_equal(pa[0], pb[0])


def test_t2i_attributes_and_bad_input(t2i, tiny_zoo):
    assert t2i.model_id == tiny_zoo["t2i"]
    assert t2i.scheduler_name == "DDIMScheduler"
    assert t2i.generate([], None, [], **GEN) == ([], [])
    with pytest.raises(ValueError, match="same length"):
        t2i.generate(["a", "b"], None, [1], **GEN)


def test_t2i_scheduler_swap(tiny_zoo):
    t2i = create_t2i("diffusers", model=tiny_zoo["t2i"], scheduler="EulerDiscreteScheduler")
    assert t2i.scheduler_name == "EulerDiscreteScheduler"
    images, _ = t2i.generate(["a cat"], None, [0], **GEN)
    assert images[0].size == (32, 32)


def test_t2i_clear_errors(tiny_zoo, tmp_path):
    with pytest.raises(KeyError, match="NoSuchScheduler.*DDIMScheduler"):
        create_t2i("diffusers", model=tiny_zoo["t2i"], scheduler="NoSuchScheduler")
    missing = str(tmp_path / "no" / "model")
    with pytest.raises(FileNotFoundError, match=missing):
        create_t2i("diffusers", model=missing)
    with pytest.raises(ValueError, match="float64"):
        create_t2i("diffusers", model=tiny_zoo["t2i"], dtype="float64")


# ---------------------------------------------------------------- CLIP
@pytest.fixture(scope="module")
def clip(tiny_zoo):
    return create_clip("open_clip", model=f"local-dir:{tiny_zoo['clip']}")


def _random_images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def test_clip_embeddings_are_normalised(clip):
    clip.batch_size = 2  # exercise batching
    images, texts = _random_images(5), ["a cat", "a dog", "the digit one"]
    img, txt = clip.encode_images(images), clip.encode_texts(texts)
    assert img.shape == (5, 32) and txt.shape == (3, 32)
    assert torch.allclose(img.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(3), atol=1e-5)
    assert clip.encode_texts([]).shape == (0, 32)


def test_clip_plain_folder_and_missing_folder(tiny_zoo, tmp_path):
    scorer = create_clip("open_clip", model=tiny_zoo["clip"])
    assert scorer.model_id == tiny_zoo["clip"]
    assert not scorer.model.training
    # Grayscale images (the digits) go through the same eval transform.
    assert scorer.encode_images([Image.new("L", (8, 8), 128)]).shape == (1, 32)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        create_clip("open_clip", model=f"local-dir:{tmp_path / 'nowhere'}")


# ---------------------------------------------------------------- transformers LLM
@pytest.fixture(scope="module")
def llm(tiny_zoo):
    return create_llm("transformers", model=tiny_zoo["llm"])


def test_transformers_chat_greedy_is_deterministic(llm):
    first = llm.chat(MESSAGES, max_new_tokens=8)
    assert isinstance(first, str)
    assert llm.chat(MESSAGES, max_new_tokens=8) == first
    assert "Answer briefly" not in first  # only the new text comes back


def test_transformers_chat_sampling_is_seeded_locally(llm):
    state = torch.random.get_rng_state()
    a = llm.chat(MESSAGES, temperature=1.0, seed=3, max_new_tokens=12)
    b = llm.chat(MESSAGES, temperature=1.0, seed=3, max_new_tokens=12)
    c = llm.chat(MESSAGES, temperature=1.0, seed=4, max_new_tokens=12)
    assert a == b and a != c
    assert torch.equal(state, torch.random.get_rng_state())


# ---------------------------------------------------------------- recorded
class CountingChat:
    """A tiny live backend that answers deterministically and counts its calls."""

    model_id = "counting"

    def __init__(self):
        self.calls = 0

    def chat(self, messages, **sampling):
        self.calls += 1
        return f"echo {messages[-1]['content']} t={sampling['temperature']}"


@pytest.fixture
def recording(tmp_path) -> Path:
    cached = CachedLLM(CountingChat(), LLMCache(tmp_path / "rec.sqlite"))
    cached.chat(MESSAGES, max_new_tokens=16)
    return export_jsonl(cached.cache, tmp_path / "rec.jsonl")


@pytest.mark.parametrize("suffix", [".jsonl", ".sqlite"])
def test_recorded_replays(recording, suffix):
    rec = create_llm("recorded", path=str(recording.with_suffix(suffix)), model="counting")
    assert rec.chat(MESSAGES, max_new_tokens=16) == "echo " + MESSAGES[-1]["content"] + " t=0.0"
    assert rec.lookup(MESSAGES, max_new_tokens=16)["source"] == "recorded"


def test_recorded_miss_is_clear_and_cached_records_say_recorded(recording, tmp_path):
    rec = create_llm("recorded", path=str(recording), model="counting")
    with pytest.raises(KeyError, match="'counting'.*Name a style for a photo"):
        rec.chat(MESSAGES, max_new_tokens=17)
    with pytest.raises(KeyError, match="'other'"):
        create_llm("recorded", path=str(recording), model="other").chat(MESSAGES, max_new_tokens=16)
    cached = CachedLLM(rec, LLMCache(tmp_path / "replayed.sqlite"))
    cached.chat(MESSAGES, max_new_tokens=16)
    [(_, record)] = cached.cache.items()
    assert record["source"] == "recorded"
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        create_llm("recorded", path=str(tmp_path / "missing.jsonl"), model="counting")


# ---------------------------------------------------------------- OpenAI-compatible HTTP
# A real HTTP server on 127.0.0.1 (tests/llm_server.py); each test scripts its replies.
FAST = {"backoff": 0.01}  # waits of 0.01, 0.02, ... s between tries


@pytest.fixture
def local(monkeypatch):
    """Requests go straight to the host, whatever proxy the environment names."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def server(local):
    """Answers "hello"; HTTP 500 for model "broken"."""
    def respond(request):
        if request["body"]["model"] == "broken":
            return Reply(500, body={"error": "model not loaded"})
        return Reply()

    with serve(respond) as httpd:
        yield httpd


def test_openai_chat_sends_key_only_from_env(server, monkeypatch):
    monkeypatch.delenv("TEST_LLM_KEY", raising=False)
    chat = create_llm("openai", model="tiny", base_url=url(server), api_key_env="TEST_LLM_KEY")
    assert chat.chat(MESSAGES, temperature=0.0, top_p=1.0, max_new_tokens=5, seed=1) == "hello"
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
    chat.chat(MESSAGES, max_new_tokens=5)
    first, second = server.requests
    assert first["path"] == "/v1/chat/completions"
    assert first["auth"] is None and second["auth"] == "Bearer sk-test"
    assert first["body"] == {
        "model": "tiny",
        "messages": MESSAGES,
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 5,
        "seed": 1,
    }
    with pytest.raises(TypeError):
        create_llm("openai", model="tiny", base_url=url(server), api_key="sk-param")


def test_openai_errors_are_clear(server):
    with pytest.raises(RuntimeError, match="HTTP 500.*model not loaded.*after 2 tries"):
        create_llm("openai", model="broken", base_url=url(server), retries=1, **FAST).chat(MESSAGES)
    with pytest.raises(ConnectionError, match="cannot reach LLM server .*127.0.0.1:9"):
        create_llm("openai", model="tiny", base_url="http://127.0.0.1:9/v1", timeout=5).chat(MESSAGES)
    with pytest.raises(ValueError, match="llm_timeout"):
        create_llm("openai", model="tiny", base_url=url(server), timeout=0)
    with pytest.raises(ValueError, match="llm_http_retries"):
        create_llm("openai", model="tiny", base_url=url(server), retries=-1)


def _script(*replies: Reply):
    """Replies in order; the last one repeats."""
    return lambda request: replies[min(request["number"], len(replies) - 1)]


def test_openai_retries_server_errors_then_succeeds(local):
    """Issue 12 case 6: one HTTP 500 used to end the stage (one request, then exit 1)."""
    with serve(_script(Reply(500, body={"error": "warming up"}), Reply(502), Reply())) as httpd:
        chat = create_llm("openai", model="tiny", base_url=url(httpd), retries=2, **FAST)
        assert chat.chat(MESSAGES) == "hello"
        assert len(httpd.requests) == 3
        assert httpd.requests[0]["body"] == httpd.requests[2]["body"]  # the same request again


def test_openai_gives_up_naming_the_status_and_the_server_message(local):
    with serve(_script(Reply(503, body={"error": "overloaded, try later"}))) as httpd:
        chat = create_llm("openai", model="tiny", base_url=url(httpd), retries=2, **FAST)
        with pytest.raises(RuntimeError, match=r"HTTP 503 .*overloaded, try later.*after 3 tries"):
            chat.chat(MESSAGES)
        assert len(httpd.requests) == 3


def test_openai_does_not_retry_a_refused_request(local):
    with serve(_script(Reply(400, body={"error": "max_tokens too large"}))) as httpd:
        chat = create_llm("openai", model="tiny", base_url=url(httpd), retries=3, **FAST)
        with pytest.raises(RuntimeError, match="HTTP 400 .*max_tokens too large"):
            chat.chat(MESSAGES)
        assert len(httpd.requests) == 1


def test_openai_honours_retry_after_on_429(local):
    limited = Reply(429, body={"error": "rate limited"}, headers={"Retry-After": "1"})
    with serve(_script(limited, Reply())) as httpd:
        chat = create_llm("openai", model="tiny", base_url=url(httpd), retries=1, **FAST)
        start = time.monotonic()
        assert chat.chat(MESSAGES) == "hello"
        assert time.monotonic() - start >= 0.95  # the server's 1 s, not the 0.01 s backoff
        assert len(httpd.requests) == 2
    with serve(_script(Reply(429, body={"error": "rate limited"}))) as httpd:  # no Retry-After
        chat = create_llm("openai", model="tiny", base_url=url(httpd), retries=2, **FAST)
        with pytest.raises(RuntimeError, match="HTTP 429 .*rate limited.*after 3 tries"):
            chat.chat(MESSAGES)


def test_retry_after_header_values():
    assert retry_after("3") == 3.0 and retry_after(" 0 ") == 0.0
    assert retry_after(None) is None and retry_after("soon") is None
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after(later) <= 30
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date passed: no wait


def test_openai_timeout_is_retried_and_named_as_a_timeout(local):
    """A server that was reached but answered too late is no longer "cannot reach"."""
    with serve(_script(Reply(delay=2.0), Reply())) as httpd:
        chat = create_llm("openai", model="tiny", base_url=url(httpd), timeout=0.3, retries=1,
                          **FAST)
        assert chat.chat(MESSAGES) == "hello"
        assert len(httpd.requests) == 2
    with serve(_script(Reply(delay=2.0))) as httpd:
        chat = create_llm("openai", model="tiny", base_url=url(httpd), timeout=0.3, retries=1,
                          **FAST)
        with pytest.raises(TimeoutError, match="did not answer within 0.3 s") as err:
            chat.chat(MESSAGES)
        assert "cannot reach" not in str(err.value)
        assert "after 2 tries" in str(err.value) and "llm_timeout" in str(err.value)
        assert len(httpd.requests) == 2


def test_openai_unreachable_server_is_named_and_not_retried(local):
    chat = create_llm("openai", model="tiny", base_url=closed_port_url(), retries=3, backoff=5.0)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot reach LLM server .*refused") as err:
        chat.chat(MESSAGES)
    assert time.monotonic() - start < 4  # no 5 s backoff: a refused connection fails at once
    assert "llm_base_url" in str(err.value)
    with pytest.raises(ConnectionError, match="cannot reach LLM server http://no-such-host.invalid"):
        create_llm("openai", model="tiny", base_url="http://no-such-host.invalid/v1",
                   timeout=5).chat(MESSAGES)


def test_openai_null_content_is_an_empty_answer(local):
    with serve(_script(Reply(content=None))) as httpd:
        assert create_llm("openai", model="tiny", base_url=url(httpd)).chat(MESSAGES) == ""


def test_api_key_never_appears_in_errors(local, monkeypatch):
    """A server that quotes the request's Authorization header in its errors."""
    secret = "sk-very-secret-0123456789"
    monkeypatch.setenv("TEST_LLM_KEY", secret)

    def echo(status):
        return lambda r: Reply(status, body={"error": f"bad key: {r['auth']}", "seen": r["auth"]})

    for status, error in [(401, RuntimeError), (500, RuntimeError)]:
        with serve(echo(status)) as httpd:
            chat = create_llm("openai", model="tiny", base_url=url(httpd), retries=1,
                              api_key_env="TEST_LLM_KEY", **FAST)
            with pytest.raises(error) as err:
                chat.chat(MESSAGES)
            assert httpd.requests[0]["auth"] == f"Bearer {secret}"  # it was sent...
            assert secret not in str(err.value) and "[API key]" in str(err.value)  # ...not shown
    with serve(lambda r: Reply(body={"no_choices": r["auth"]})) as httpd:
        chat = create_llm("openai", model="tiny", base_url=url(httpd), api_key_env="TEST_LLM_KEY")
        with pytest.raises(ValueError) as err:
            chat.chat(MESSAGES)
        assert secret not in str(err.value)
    with serve(_script(Reply(delay=2.0))) as httpd:
        chat = create_llm("openai", model="tiny", base_url=url(httpd), timeout=0.2, retries=0,
                          api_key_env="TEST_LLM_KEY")
        with pytest.raises(TimeoutError) as err:
            chat.chat(MESSAGES)
        assert secret not in str(err.value) and secret not in repr(vars(chat))
