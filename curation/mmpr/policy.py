"""Policy models for MMPR behind one interface: a batch of requests (prompt, images, few-shot
history, an optional answer prefix to continue, a seed) in, per request a response or an LlmError.

`model`: the model core's own generation (InternVL tiling, CPU or GPU). `vllm` / `openai`: chat
messages with the images as data-URI parts (vLLM's engine on GPU; any OpenAI-compatible server).
`transformers`: a text-only chat LLM, for continuations without the image. Loaded once per worker.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from curation.core.conversations import IMAGE_PLACEHOLDER, Turn
from curation.annotate.llm import LlmError

if TYPE_CHECKING:
    from curation.core.config import SamplingConfig
    from curation.mmpr.config import PolicyConfig


@dataclass(frozen=True)
class PolicyRequest:
    """One generation: `prompt` is the user turn (one `<image>` placeholder per image), `history`
    earlier turns (few-shot examples); with `prefix` the answer starts with it and only the
    continuation is returned. `seed`: see `LlmBackend.chat` (per request, or per seeded batch)."""

    prompt: str
    images: tuple[bytes, ...] = ()
    history: tuple[Turn, ...] = ()
    prefix: str = ""
    seed: int = 0


@dataclass(frozen=True)
class PolicyResponse:
    text: str
    finish_reason: str  # stop | length
    meta: dict[str, Any] = field(default_factory=dict)  # backend, model, token counts


class Policy(Protocol):
    label: str
    per_request_seed: bool

    def generate(self, requests: Sequence[PolicyRequest], sampling: "SamplingConfig") -> list[PolicyResponse | LlmError]:
        """One response per request; a failure is that request's LlmError, never an exception."""

    def info(self) -> dict[str, Any]:
        """{"label", "per_request_seed"}: what the pipeline asks of a policy that may be a proxy."""


def without_placeholders(text: str) -> str:
    """The text with every `<image>` placeholder (and the line break InternVL puts after it) removed."""
    return text.replace(f"{IMAGE_PLACEHOLDER}\n", "").replace(IMAGE_PLACEHOLDER, "").strip()


def with_placeholders(prompt: str, n_images: int) -> str:
    """The prompt with one `<image>` per image: kept if already there, else put first (InternVL's
    layout); with no image (Dropout NTP's continuation) none is left."""
    if n_images == 0:
        return without_placeholders(prompt) if IMAGE_PLACEHOLDER in prompt else prompt
    if prompt.count(IMAGE_PLACEHOLDER) == n_images:
        return prompt
    body = prompt.replace(IMAGE_PLACEHOLDER, "").lstrip("\n")
    return "".join(f"{IMAGE_PLACEHOLDER}\n" for _ in range(n_images)) + body


def _mime(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


def to_messages(req: PolicyRequest, images: bool) -> list[dict[str, Any]]:
    """OpenAI chat messages for a request: the images as data-URI parts before the text (or
    dropped, for a text-only model), the prefix as a final assistant message to continue."""
    messages: list[dict[str, Any]] = [{"role": t.role, "content": without_placeholders(t.value)} for t in req.history]
    text = without_placeholders(req.prompt)
    if images and req.images:
        parts: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": f"data:{_mime(b)};base64,{base64.b64encode(b).decode()}"}}
            for b in req.images]
        messages.append({"role": "user", "content": [*parts, {"type": "text", "text": text}]})
    else:
        messages.append({"role": "user", "content": text})
    if req.prefix:
        messages.append({"role": "assistant", "content": req.prefix})
    return messages


class ModelCorePolicy:
    """The model core's generation: prompts built as the packer builds training samples; a whole
    batch (every question with all its samples) in one KV-cached generation, seeded per request."""

    per_request_seed = True

    def __init__(self, cfg: "PolicyConfig") -> None:
        from model.build import load_model
        from model.generate import Generator

        self.label = cfg.label
        self.generator = Generator(load_model(cfg.model), cfg.prompt, cfg.data)

    def info(self) -> dict[str, Any]:
        """Label and seeding, as a method: a model shared across processes is a proxy (methods only)."""
        return {"label": self.label, "per_request_seed": self.per_request_seed}

    def generate(self, requests, sampling):
        from model.generate import GenerationRequest

        batch = [GenerationRequest(with_placeholders(r.prompt, len(r.images)), r.images, _text_history(r.history), r.prefix,
                                   r.seed) for r in requests]
        try:
            gens = self.generator.generate(batch, sampling)
        except Exception as err:  # noqa: BLE001 - a failure is data; a worker never crashes on it
            if len(requests) > 1:  # find the request that fails: texts do not depend on the batch
                return [out for r in requests for out in self.generate([r], sampling)]
            return [LlmError("llm_error", f"{type(err).__name__}: {err}"[:300])]
        return [PolicyResponse(g.text.rstrip() if r.prefix else g.text.strip(), g.finish_reason,
                               {"backend": "model", "model": self.label, "prompt_tokens": g.prompt_tokens,
                                "completion_tokens": len(g.token_ids)})
                for r, g in zip(requests, gens)]


def _text_history(history: Sequence[Turn]) -> tuple[Turn, ...]:
    """Few-shot turns carry no images of their own: their placeholders would ask for one."""
    return tuple(Turn(t.role, without_placeholders(t.value)) if IMAGE_PLACEHOLDER in t.value else t for t in history)


class ChatPolicy:
    """An LLM backend (vllm, openai, transformers) through chat messages."""

    def __init__(self, cfg: "PolicyConfig") -> None:
        from curation.annotate.llm import build_backend

        self.label = cfg.label
        self.images = cfg.sees_images
        self.backend = build_backend(cfg.llm)
        self.per_request_seed = self.backend.per_request_seed

    def info(self) -> dict[str, Any]:
        return {"label": self.label, "per_request_seed": self.per_request_seed}

    def generate(self, requests, sampling):
        out: list[PolicyResponse | LlmError | None] = [None] * len(requests)
        for continue_final in (False, True):
            rows = [i for i, r in enumerate(requests) if bool(r.prefix) == continue_final]
            if not rows:
                continue
            answers = self.backend.chat([to_messages(requests[i], self.images) for i in rows], sampling,
                                        continue_final=continue_final, seeds=[requests[i].seed for i in rows])
            for i, a in zip(rows, answers):
                if isinstance(a, LlmError):
                    out[i] = a
                else:
                    out[i] = PolicyResponse(a.text, str(a.raw.get("finish_reason") or "stop"),
                                            {k: v for k, v in a.raw.items() if k != "finish_reason"})
        return out


def build_policy(cfg: "PolicyConfig") -> Policy:
    """The configured policy with its model loaded (call once per worker)."""
    return ModelCorePolicy(cfg) if cfg.backend == "model" else ChatPolicy(cfg)
