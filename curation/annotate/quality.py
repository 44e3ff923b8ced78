"""LLM quality scoring as InternVL 2.5 filters its data: find the sample's domain, score it with
that domain's prompt, score repetition with a second prompt, and drop below the thresholds.

A score is the expected value of the digit the rater would answer (0-9), under its next-token
probabilities at the answer position: one forward pass, no sampling, a continuous score instead
of the handful of values greedy decoding gives. The scale is one digit because every tokenizer we
use (SmolLM2, Llama, Qwen) splits numbers into digits: "10" is "1" then "0", so a 0-10 scale would
read a "10" as a 1 from one position - exactly the answer small raters give most. Where a server
returns no logprobs the generated text is parsed instead. Every raw answer is kept for audit; an
answer with no score is a reason, not a crash. A score rejects only while its gate (calibration.py)
is enforced; otherwise what it would have rejected is recorded beside the kept sample."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from curation.annotate.config import PromptConfig, QualityConfig
from curation.core.config import SamplingConfig
from curation.annotate.llm import LabelProbs, LlmBackend, LlmError, Messages

SCORE_LABELS = tuple(str(d) for d in range(10))  # the rater answers one digit
# the two scores, each with the gate that may stop it rejecting, its reason and its threshold field
# where a recipe leaves a threshold null and no calibration chose one
DEFAULT_THRESHOLDS = {"repetition": 3.0, "quality": 7.0}
SCORES = (("repetition_score", "repetition", "repetitive_text", "repetition_threshold"),
          ("score", "quality", "low_quality_score", "threshold"))

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


def digit_distribution(probs: Sequence[float]) -> dict[str, float]:
    """The digits' probabilities renormalised: their mass before, the expected digit, the entropy (nats)."""
    mass = float(sum(probs))
    if mass <= 0:
        return {"mass": 0.0}
    ps = [p / mass for p in probs]
    mean = sum(d * p for d, p in enumerate(ps))
    entropy = -sum(p * math.log(p) for p in ps if p > 0)
    return {"mean": round(mean, 4), "entropy": round(entropy, 4), "mass": round(mass, 4)}


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
    raw: dict[str, Any] = field(default_factory=dict)  # prompt name -> {text or probs, backend meta}
    distributions: dict[str, dict[str, float]] = field(default_factory=dict)  # score name -> mean, entropy, mass
    unparseable: dict[str, str] = field(default_factory=dict)  # score name -> what the answer was
    unenforced: list[str] = field(default_factory=list)  # "reason: detail" a gate stopped from rejecting

    def to_json(self) -> dict[str, Any]:
        doc = {"domain": self.domain, "score": self.score, "repetition_score": self.repetition_score,
               "verdict": "keep" if self.reason is None else self.reason, "detail": self.detail, "raw": self.raw}
        if self.distributions:
            doc["distributions"] = self.distributions
        if self.unenforced:
            doc["unenforced"] = self.unenforced
        return doc


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
    backend calls (domain first when the LLM decides it, then all scoring prompts together).
    `enforce` (gate name -> bool, calibration.py) says which scores may reject; default all.
    `thresholds` (gate name -> value, calibration.py) are the ones calibration chose."""

    def __init__(self, cfg: QualityConfig, backend: LlmBackend, sampling: SamplingConfig,
                 enforce: dict[str, bool] | None = None, thresholds: dict[str, float] | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        self.sampling = sampling
        self.enforce = dict(enforce or {})
        self.thresholds = {gate: threshold_of(cfg, gate, thresholds) for _, gate, _, _ in SCORES}

    def info(self) -> dict[str, Any]:
        """The backend's name, as a method: a model shared across processes is a proxy (methods only)."""
        return {"backend": self.backend.name}

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

    def answers(self, convs: list[Messages]) -> list[LabelProbs | Any]:
        """The digits' probabilities per conversation; generated text where the backend has none."""
        label_probs = getattr(self.backend, "label_probs", None)
        answers: list[Any] = list(label_probs(convs, SCORE_LABELS)) if label_probs is not None and convs else [None] * len(convs)
        missing = [k for k, a in enumerate(answers) if a is None]
        if missing:
            for k, ans in zip(missing, self.backend.chat([convs[k] for k in missing], self.sampling)):
                answers[k] = ans
        return answers

    def score(self, items: Sequence[ScoreInput]) -> list[QualityResult]:
        """Measure, then judge with this scorer's gates and thresholds."""
        return judge(self.measure(items), self.cfg, self.enforce, self.thresholds)

    def measure(self, items: Sequence[ScoreInput]) -> list[QualityResult]:
        """The scores only (an `llm_error` is the one verdict set): a step whose gates are decided
        elsewhere (calibration on the workers, beside the rows) judges them with `judge`."""
        domains, raws = self.domains(items)
        results = [QualityResult(domain=d, raw=r) for d, r in zip(domains, raws)]
        convs, slots = [], []
        for i, (it, d) in enumerate(zip(items, domains)):
            convs.append(render(self.cfg.prompts[d], self.cfg.system_prompt, it))
            slots.append((i, "score"))
            if self.cfg.repetition is not None:
                convs.append(render(self.cfg.repetition, self.cfg.system_prompt, it))
                slots.append((i, "repetition_score"))
        for (i, kind), ans in zip(slots, self.answers(convs)):
            res = results[i]
            res.raw[kind] = _raw(ans)
            if isinstance(ans, LlmError):
                res.reason, res.detail = res.reason or "llm_error", res.detail or ans.detail
                continue
            if isinstance(ans, LabelProbs):
                dist = digit_distribution(ans.probs)
                res.distributions[kind] = dist
                value = dist["mean"] if dist["mass"] >= max(self.cfg.min_score_mass, 1e-12) else None
                seen = f"digit probability {dist['mass']:.2g}"
            else:
                value = parse_score(ans.text)
                seen = repr(ans.text[:120])
            if value is None:
                res.unparseable[kind] = seen
            else:
                setattr(res, kind, value)
        return results


def judge(results: list[QualityResult], cfg: QualityConfig, enforce: dict[str, bool] | None = None,
          thresholds: dict[str, float] | None = None) -> list[QualityResult]:
    """Each measured result's verdict: below a gate's threshold (or unparseable, if the recipe
    rejects those) is rejected when the gate is enforced (`enforce`, default all), recorded in
    `unenforced` when not. `thresholds`: calibration's choice where the recipe sets none."""
    enforce = enforce or {}
    limits = {gate: threshold_of(cfg, gate, thresholds) for _, gate, _, _ in SCORES}
    for res in results:
        if res.reason is not None:
            continue
        # the more specific finding first: a repetitive caption usually also scores low
        for kind, gate, code, _ in SCORES:
            threshold = limits[gate]
            value = getattr(res, kind)
            if kind in res.unparseable and cfg.on_unparseable == "reject":
                finding = ("llm_unparseable", f"{kind}: {res.unparseable[kind]}")
            elif value is not None and value < threshold:
                name = "repetition score" if kind == "repetition_score" else f"{res.domain} score"
                finding = (code, f"{name} {value:g} < {threshold:g}")
            else:
                continue
            if not enforce.get(gate, True):
                res.unenforced.append(f"{finding[0]}: {finding[1]}")
            elif res.reason is None:
                res.reason, res.detail = finding
    return results


def recipe_threshold(cfg: QualityConfig, gate: str) -> float | None:
    """The threshold the recipe sets for a gate (None: left to the probe ROC)."""
    return getattr(cfg, next(f for _, g, _, f in SCORES if g == gate))


def threshold_of(cfg: QualityConfig, gate: str, chosen: dict[str, float] | None = None) -> float:
    """A gate's threshold: the recipe's, else the one calibration chose, else DEFAULT_THRESHOLDS."""
    fixed = recipe_threshold(cfg, gate)
    if fixed is not None:
        return float(fixed)
    return float((chosen or {}).get(gate, DEFAULT_THRESHOLDS[gate]))


def _raw(ans) -> dict[str, Any]:
    if isinstance(ans, LlmError):
        return {"error": ans.detail}
    if isinstance(ans, LabelProbs):
        return {"probs": [round(p, 4) for p in ans.probs], **ans.raw}
    return {"text": ans.text, **ans.raw}
