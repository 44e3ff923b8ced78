"""InternVL's conversation templates, per LLM family, as its training code builds them.

| template | InternVL models (LLM) | shape | tokenized |
|---|---|---|---|
| `internvl2_5` | 2.5 / 3 (InternLM2.5, Qwen2.5), 2.0 1B (Qwen2) | `<|im_start|>role\\n...<|im_end|>\\n` | turn by turn (`preprocess_internvl2_5`) |
| `internlm2-chat` | 1.5 / 2.0 2B-26B (InternLM2), 2.0 76B (Hermes-2-Theta-Llama-3) | `<|im_start|>role\\n...<|im_end|>`, values stripped | whole (`preprocess_internlm`) |
| `Hermes-2` | 2.0 40B (Nous-Hermes-2-Yi-34B) | `<|im_start|>role\\n...<|im_end|>` | whole (`preprocess_mpt`) |
| `phi3-chat` | 1.5 4B, 2.0 4B (Phi-3-mini) | `<|user|>\\n...<|end|>` | whole (`preprocess_phi3`) |
| `tokenizer` | any other LLM | the tokenizer's own chat template | growing prefixes |

Every family supervises the assistant's text and its end-of-turn token, nothing else. `auto`
reads the template an InternVL checkpoint names in its `config.json`, else the family's special
tokens, else the tokenizer's own chat template.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from curation.core.config import ConfigError

# InternVL 2.5's default system message (conversation.py, template "internvl2_5").
INTERNVL_SYSTEM = ("你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
                   "多模态大语言模型。")
# The 1.5 / 2.0 templates' system message (internlm2-chat, Hermes-2, phi3-chat).
INTERNVL2_SYSTEM = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"


@dataclass(frozen=True)
class Template:
    """One InternVL conversation template: role headers, the end-of-turn string, what follows a
    turn, and whether the conversation is tokenized whole (offsets decide the labels) or turn by turn."""

    name: str
    headers: dict[str, str]  # role -> header; "{role}" is filled in for roles not listed
    end: str  # closes every turn and is supervised after an answer
    after: str  # follows each turn, unsupervised ("\n" in internvl2_5, nothing in the MPT-style ones)
    system: str  # the default system message
    whole: bool  # tokenized as one text (InternVL's preprocess_mpt / _internlm / _phi3)
    strip: bool = False  # values are stripped first (preprocess_internlm)
    masked: tuple[str, ...] = field(default=())  # tokens never supervised (preprocess_phi3: <|endoftext|>)

    def header(self, role: str) -> str:
        return self.headers.get(role, self.headers["*"].format(role=role))


_CHATML = {"*": "<|im_start|>{role}\n"}
TEMPLATES: dict[str, Template] = {
    "internvl2_5": Template("internvl2_5", _CHATML, "<|im_end|>", "\n", INTERNVL_SYSTEM, whole=False),
    "internlm2-chat": Template("internlm2-chat", _CHATML, "<|im_end|>", "", INTERNVL2_SYSTEM, whole=True, strip=True),
    "Hermes-2": Template("Hermes-2", _CHATML, "<|im_end|>", "", INTERNVL2_SYSTEM, whole=True),
    "phi3-chat": Template("phi3-chat", {"*": "<|{role}|>\n"}, "<|end|>", "", INTERNVL2_SYSTEM, whole=True,
                          masked=("<|endoftext|>",)),
}
CHOICES = (*TEMPLATES, "tokenizer", "auto")


def check_template(name: str) -> None:
    """A recipe's `template` is one of CHOICES (fails at config load, not on a worker)."""
    if name not in CHOICES:
        raise ConfigError(f"template: expected one of {', '.join(CHOICES)}; got {name!r}")


def detect_template(tokenizer: Any, source: str | None = None) -> str:
    """`auto`: the template an InternVL checkpoint folder names (`config.json` "template"), else the
    one its special tokens belong to (ChatML: internvl2_5, Phi-3's: phi3-chat), else the tokenizer's
    own chat template."""
    config = os.path.join(source, "config.json") if source and os.path.isdir(source) else None
    if config and os.path.exists(config):
        try:
            with open(config, encoding="utf-8") as f:
                named = json.load(f).get("template")
        except (OSError, ValueError, AttributeError):
            named = None
        if named in TEMPLATES:
            return named
    vocab = tokenizer.get_vocab()
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        return "internvl2_5"
    if all(t in vocab for t in ("<|user|>", "<|assistant|>", "<|end|>")):
        return "phi3-chat"
    if getattr(tokenizer, "chat_template", None):
        return "tokenizer"
    raise ConfigError(f"template: auto, but {source or 'this tokenizer'} names no InternVL template, has neither "
                      "ChatML nor Phi-3 tokens, and has no chat template; name one of " + ", ".join(CHOICES[:-1]))


def resolve_system_prompt(template: str, system_prompt: str) -> str | None:
    """A recipe's `system_prompt` ("default": the template's own; "": none; else that text) as the encoder takes it."""
    if system_prompt == "default":
        return TEMPLATES[template].system if template in TEMPLATES else None
    return system_prompt or None
