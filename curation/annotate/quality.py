"""LLM quality scoring as InternVL 2.5 filters its data: find the sample's domain, score it 0-10
with that domain's prompt, score repetition 0-10 with a second prompt, and drop below the
thresholds. Every raw answer is kept for audit; an answer with no score is a reason, not a crash."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from curation.annotate.config import PromptConfig, QualityConfig
from curation.core.config import SamplingConfig
from curation.annotate.llm import LlmBackend, LlmError, Messages

_SCORE_PATTERNS = (
    re.compile(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)", re.I),
    re.compile(r"(\d+(?:\.\d+)?)\s*/\s*10\b"),
    re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\b"),
)


def parse_score(text: str) -> float | None:
    """The 0-10 score in an answer: `Score: N` first, then `N/10`, then the first bare number;
    None when there is none or it is outside 0..10."""
    for pattern in _SCORE_PATTERNS:
        m = pattern.search(text)
        if m:
            value = float(m.group(1))
            return value if 0.0 <= value <= 10.0 else None
    return None


@dataclass(frozen=True, slots=True)
class ScoreInput:
    caption: str
    ocr_text: str = ""
    ocr_chars: int = 0


@dataclass(slots=True)
class QualityResult:
    """What the rater said about one sample, and the verdict."""

    domain: str
    score: float | None = None
    repetition_score: float | None = None
    reason: str | None = None  # None: keep
    detail: str = ""
    raw: dict[str, Any] = field(default_factory=dict)  # prompt name -> {text, backend meta}

    def to_json(self) -> dict[str, Any]:
        return {"domain": self.domain, "score": self.score, "repetition_score": self.repetition_score,
                "verdict": "keep" if self.reason is None else self.reason, "detail": self.detail, "raw": self.raw}


def render(prompt: PromptConfig, system: str, item: ScoreInput) -> Messages:
    """System prompt, the few-shot examples as earlier turns, then the sample."""
    messages: Messages = [{"role": "system", "content": system}] if system else []
    for ex in prompt.examples:
        messages.append({"role": "user", "content": prompt.template.format(caption=ex.caption, ocr_text=ex.ocr_text)})
        messages.append({"role": "assistant", "content": ex.answer})
    messages.append({"role": "user", "content": prompt.template.format(caption=item.caption, ocr_text=item.ocr_text)})
    return messages


class QualityScorer:
    """One QualityConfig over one LLM backend; `score` answers a whole batch with one or two
    backend calls (domain first when the LLM decides it, then all scoring prompts together)."""

    def __init__(self, cfg: QualityConfig, backend: LlmBackend, sampling: SamplingConfig) -> None:
        self.cfg = cfg
        self.backend = backend
        self.sampling = sampling

    def domains(self, items: Sequence[ScoreInput]) -> tuple[list[str], list[dict[str, Any]]]:
        rule = ["ocr" if it.ocr_chars >= self.cfg.domain.min_ocr_chars and "ocr" in self.cfg.prompts else "caption"
                for it in items]
        if self.cfg.domain.method == "rule" or not items:
            return rule, [{} for _ in items]
        answers = self.backend.chat([render(self.cfg.domain.prompt, self.cfg.system_prompt, it) for it in items],
                                    self.sampling)
        out, raws = [], []
        for default, ans in zip(rule, answers):
            text = "" if isinstance(ans, LlmError) else ans.text.lower()
            named = [d for d in self.cfg.prompts if re.search(rf"\b{re.escape(d)}\b", text)]
            out.append(named[0] if len(named) == 1 else default)
            raws.append({"domain": _raw(ans)})
        return out, raws

    def score(self, items: Sequence[ScoreInput]) -> list[QualityResult]:
        domains, raws = self.domains(items)
        results = [QualityResult(domain=d, raw=r) for d, r in zip(domains, raws)]
        convs, slots = [], []
        for i, (it, d) in enumerate(zip(items, domains)):
            convs.append(render(self.cfg.prompts[d], self.cfg.system_prompt, it))
            slots.append((i, "score"))
            if self.cfg.repetition is not None:
                convs.append(render(self.cfg.repetition, self.cfg.system_prompt, it))
                slots.append((i, "repetition_score"))
        answers = self.backend.chat(convs, self.sampling) if convs else []
        for (i, kind), ans in zip(slots, answers):
            res = results[i]
            res.raw[kind] = _raw(ans)
            if isinstance(ans, LlmError):
                res.reason, res.detail = res.reason or "llm_error", res.detail or ans.detail
                continue
            value = parse_score(ans.text)
            if value is None:
                if self.cfg.on_unparseable == "reject" and res.reason is None:
                    res.reason, res.detail = "llm_unparseable", f"{kind}: {ans.text[:120]!r}"
                continue
            setattr(res, kind, value)
        for res in results:
            if res.reason is not None:
                continue
            # the more specific finding first: a repetitive caption usually also scores low
            if res.repetition_score is not None and res.repetition_score < self.cfg.repetition_threshold:
                res.reason, res.detail = ("repetitive_text",
                                          f"repetition score {res.repetition_score:g} < {self.cfg.repetition_threshold:g}")
            elif res.score is not None and res.score < self.cfg.threshold:
                res.reason, res.detail = "low_quality_score", f"{res.domain} score {res.score:g} < {self.cfg.threshold:g}"
        return results


def _raw(ans) -> dict[str, Any]:
    if isinstance(ans, LlmError):
        return {"error": ans.detail}
    return {"text": ans.text, **ans.raw}
