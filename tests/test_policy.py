"""Policy backends for MMPR: the model core with images (smollm2 preset, real weights), a text-only
chat LLM for continuations, and the chat messages vLLM / OpenAI servers get. A multimodal vLLM or
server cannot run on this CPU machine: for them the request shape is checked (the GPU run is in
the MMPR closing note)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from curation.core.config import SamplingConfig
from curation.core.conversations import Turn
from curation.mmpr.config import PolicyConfig
from curation.mmpr.policy import PolicyRequest, PolicyResponse, build_policy, to_messages, with_placeholders
from model.config import ModelConfig, PromptConfig


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(buf, "PNG")
    return buf.getvalue()


SHOTS = (Turn("user", "What is 5 + 6?"), Turn("assistant", "5 + 6 = 11.\nFinal Answer: 11"))
SAMPLING = SamplingConfig(max_new_tokens=12, temperature=0.8, top_k=50, top_p=0.95, seed=0)


def test_placeholders_and_chat_messages():
    assert with_placeholders("What is it?", 2) == "<image>\n<image>\nWhat is it?"
    assert with_placeholders("<image>\nWhat?", 1) == "<image>\nWhat?"
    # Dropout NTP continues without the image: no placeholder may be left to ask for one
    assert with_placeholders("<image>\nWhat?", 0) == "What?"
    assert with_placeholders("Compare <image> and <image>\nwhich is red?", 0) == "Compare  and which is red?"
    img = _png("red")
    req = PolicyRequest("<image>\nWhat colour?", (img,), SHOTS, prefix="It is", seed=3)
    msgs = to_messages(req, images=True)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    parts = msgs[2]["content"]
    assert parts[0]["type"] == "image_url" and parts[1] == {"type": "text", "text": "What colour?"}
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == img
    assert msgs[3] == {"role": "assistant", "content": "It is"}
    text_only = to_messages(req, images=False)
    assert text_only[2] == {"role": "user", "content": "What colour?"}  # a text-only model never sees the image


@pytest.fixture(scope="module")
def core():
    return build_policy(PolicyConfig(backend="model", model=ModelConfig(preset="smollm2", device="cpu"),
                                     prompt=PromptConfig(max_num=1, use_thumbnail=False)))


@pytest.mark.slow
def test_model_core_policy_with_images_is_seeded_per_question(core):
    a = PolicyRequest("<image>\nWhat is 2 + 2?", (_png("red"),), SHOTS, seed=7)
    b = PolicyRequest("<image>\nHow many legs does a cat have?", (_png("blue"),), SHOTS, seed=9)
    alone = core.generate([a, a], SAMPLING)
    mixed = core.generate([b, a, b, a], SAMPLING)
    assert all(isinstance(r, PolicyResponse) and r.text for r in alone + mixed)
    assert [r.text for r in alone] == [mixed[1].text, mixed[3].text]  # the batch around a question changes nothing
    assert alone[0].meta["prompt_tokens"] > 256 and alone[0].meta["backend"] == "model"  # one tile of image tokens
    cont = core.generate([PolicyRequest("What is 2 + 2?", (), SHOTS, prefix="2 + 2 =", seed=1)], SAMPLING)[0]
    assert cont.text and not cont.text.lstrip().startswith("2 + 2 =")  # the prefix is continued, not repeated
    # an InternVL-style question (placeholders in it and in the few-shot turns) continued without its image
    shots = (Turn("user", "<image>\nWhat is 5 + 6?"), SHOTS[1])
    blind = core.generate([PolicyRequest("<image>\nWhat is 2 + 2?", (), shots, prefix="2 + 2 =", seed=1),
                           PolicyRequest("<image>\n<image>\nAre these the same?", (), shots, prefix="They", seed=2)], SAMPLING)
    assert all(isinstance(r, PolicyResponse) and r.text for r in blind), blind


@pytest.mark.slow
def test_text_only_continuation_policy():
    policy = build_policy(PolicyConfig(backend="transformers"))
    req = PolicyRequest("<image>\nDescribe the picture.", (_png("green"),), (), prefix="The picture shows a", seed=5)
    (cont,) = policy.generate([req], SAMPLING)
    assert isinstance(cont, PolicyResponse) and cont.text.strip() and cont.finish_reason in ("stop", "length")
    assert policy.per_request_seed is False and cont.meta["backend"] == "transformers"
    again = policy.generate([PolicyRequest("Say hi.", seed=1), req], SAMPLING)[1]
    assert again.text == cont.text
