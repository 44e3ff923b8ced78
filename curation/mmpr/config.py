"""The MMPR recipe (configs/mmpr.yaml) as typed dataclasses: prompts, the two pair methods, sampling
and the policy models, validated when the YAML is loaded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from curation.annotate.config import LlmConfig, _format_keys
from curation.core.config import ConfigError, SamplingConfig, ShardConfig
from model.config import DataConfig, ModelConfig, PromptConfig
from filters.quality.decontam import DecontamConfig

DEFAULT_TEMPLATES = {
    "final_answer": "{question}\nAnswer with a short rationale, then a last line of the form 'Final Answer: <answer>'.",
    "boxed": "{question}\nReason step by step, then give the final answer as \\boxed{{answer}}.",
}


@dataclass(frozen=True)
class ShotConfig:
    """A worked example shown before the question (few-shot, text only): small policies copy its format."""

    question: str  # the example's question, put through the prompt template (a user turn)
    response: str  # its worked response (the assistant turn), in the format the checker extracts


@dataclass(frozen=True)
class MmprPromptConfig:
    """The chain-of-thought prompt: `style` picks the answer form the checker extracts and the
    template (a format string over {question}) that asks for it."""

    # the answer form asked for and extracted: final_answer (a last `Final Answer: <answer>` line) or boxed (`\boxed{}`)
    style: Literal["final_answer", "boxed"] = "final_answer"
    # style -> a format string holding {question} once (literal braces doubled); `style`'s is used
    templates: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    examples: list[ShotConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.style not in self.templates:
            raise ConfigError(f"prompt.templates: no template for style {self.style!r}")
        for name, text in self.templates.items():
            keys = _format_keys(text)
            if keys != ["question"]:
                raise ConfigError(f"prompt.templates.{name}: must hold {{question}} once and no other placeholder "
                                  f"(found {keys}; write literal braces as {{{{ }}}})")

    @property
    def template(self) -> str:
        return self.templates[self.style]


@dataclass(frozen=True)
class CorrectnessConfig:
    """Correctness pairs for items with a ground truth: `samples` responses per question, right x
    wrong, at most `max_pairs` per question (seeded)."""

    enabled: bool = True  # make correctness pairs for questions with a ground truth
    samples: int = 8  # responses sampled per question with a ground truth (>= 2)
    max_pairs: int = 4  # right x wrong pairs kept per question, at most (>= 1; seeded pick)
    # answer_type number: relative tolerance; 0 = equal as exact fractions (a near miss is never right)
    rel_tol: float = 0.0

    def __post_init__(self) -> None:
        if self.samples < 2 or self.max_pairs < 1 or self.rel_tol < 0:
            raise ConfigError("correctness: samples >= 2, max_pairs >= 1, rel_tol >= 0")


@dataclass(frozen=True)
class DropoutConfig:
    """Dropout NTP: the chosen response is cut after floor(ratio x units) units and the policy
    continues it without the image (`with_image: true` keeps it); the continuation is rejected.
    Units are the policy tokenizer's tokens when `tokenizer` names it (a local folder or
    `builtin:smollm2`), else words, and characters in scripts without spaces (Chinese, Japanese, Thai)."""

    enabled: bool = True  # make Dropout NTP pairs
    apply_to: Literal["no_gt", "all"] = "no_gt"  # no_gt: questions without a ground truth only; all: every question
    ratio: float = 0.5  # fraction of the chosen response's units kept before the cut, in (0, 1)
    with_image: bool = False  # the continuation sees the image (needs a continuation backend that sees images)
    tokenizer: str | None = None  # cut by this tokenizer's tokens (local folder or builtin:smollm2); null: words

    def __post_init__(self) -> None:
        if not 0 < self.ratio < 1:
            raise ConfigError("dropout_ntp.ratio: in (0, 1)")


@dataclass(frozen=True)
class PolicyConfig:
    """Who answers. `model`: the model core (a preset or an InternVL checkpoint; images as tiles, CPU
    or GPU). `vllm`: vLLM's engine with images (GPU, extra [gpu]). `openai`: any OpenAI-compatible
    server (images as data URIs). `transformers`: a text-only LLM (continuations without the image)."""

    # model | vllm | openai | transformers (text only: continuations without the image)
    backend: Literal["model", "vllm", "openai", "transformers"] = "model"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(preset="smollm2"))  # backend model
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig(max_num=6))  # backend model: tiling
    data: DataConfig = field(default_factory=DataConfig)  # backend model: image normalisation
    llm: LlmConfig = field(default_factory=LlmConfig)  # the other backends (llm.backend follows `backend`)
    batch_size: int = 8  # questions per batched generation (each with all its samples)
    accelerator: str | None = None  # Beam resource hint for this step on Dataflow
    share_across_processes: bool = False  # one policy per worker VM for all its SDK processes (docs/runbook.md)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("policy: batch_size >= 1")
        if self.backend != "model" and self.llm.backend != self.backend:
            object.__setattr__(self, "llm", dataclasses.replace(self.llm, backend=self.backend))

    @property
    def sees_images(self) -> bool:
        return self.backend != "transformers"

    @property
    def label(self) -> str:
        if self.backend == "model":
            return f"model:{self.model.checkpoint or self.model.preset}"
        return f"{self.backend}:{self.llm.model}"


@dataclass(frozen=True)
class MmprSourceConfig:
    """What the question files are: `format` jsonl | parquet (auto: by extension) and `schema`, a VQA
    benchmark's own row shape (curation/mmpr/sources.py; auto: detected from each file's first row).
    `answer_type` overrides the schema's (aokvqa: vqa scores the direct answers instead of the choices)."""

    format: Literal["auto", "jsonl", "parquet"] = "auto"  # question files; auto: by file extension
    # the benchmark's row shape (curation/mmpr/sources.py); auto: detected from each file's first row
    schema: Literal["auto", "mmpr", "scienceqa", "aokvqa", "chartqa", "docvqa", "mathvista"] = "auto"
    # how answers are judged, overriding the schema's; null: the schema's (mmpr rows: their own `answer_type`)
    answer_type: Literal["exact", "multiple_choice", "number", "vqa", "anls", "relaxed"] | None = None
    parquet_batch_rows: int = 64  # rows decoded at a time: image columns make parquet rows large

    def __post_init__(self) -> None:
        if self.parquet_batch_rows < 1:
            raise ConfigError("source.parquet_batch_rows: >= 1")


@dataclass(frozen=True)
class MmprImageConfig:
    image_root: str | None = None  # relative image paths resolve here (default: the jsonl's folder)
    max_bytes: int = 32 << 20  # bytes; a larger image file rejects the row (file_too_large)
    max_pixels: int = 89_478_485  # Pillow's decompression-bomb limit

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ConfigError("images: max_bytes >= 1, max_pixels >= 1")


@dataclass(frozen=True)
class MmprConfig:
    """The whole MMPR recipe."""

    source: MmprSourceConfig = field(default_factory=MmprSourceConfig)
    prompt: MmprPromptConfig = field(default_factory=MmprPromptConfig)
    correctness: CorrectnessConfig = field(default_factory=CorrectnessConfig)
    dropout_ntp: DropoutConfig = field(default_factory=DropoutConfig)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=512, temperature=1.0, top_k=50))
    continuation_sampling: SamplingConfig | None = None  # default: `sampling`
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    continuation: PolicyConfig | None = None  # Dropout NTP's continuing model; default: the policy
    images: MmprImageConfig = field(default_factory=MmprImageConfig)
    # eval sets whose questions, answers and images may not become training pairs (`eval_contaminated`)
    decontamination: DecontamConfig = field(default_factory=DecontamConfig)
    shards: ShardConfig = field(default_factory=lambda: ShardConfig(prefix="mmpr"))
    progress: bool = True  # a progress bar per worker on stderr (questions per policy step)

    def __post_init__(self) -> None:
        if not (self.correctness.enabled or self.dropout_ntp.enabled):
            raise ConfigError("enable correctness or dropout_ntp (or both)")
        if self.correctness.enabled and self.sampling.temperature == 0:
            raise ConfigError("sampling.temperature: > 0 for correctness pairs (greedy samples are all the same)")
        if not self.policy.sees_images:
            raise ConfigError("policy.backend transformers is text only; sample with model, vllm or openai "
                              "(a text-only LLM can be the `continuation` model)")
        if self.dropout_ntp.with_image and not self.continuation_policy.sees_images:
            raise ConfigError("dropout_ntp.with_image needs a continuation backend that sees images")

    @property
    def continuation_policy(self) -> PolicyConfig:
        return self.continuation or self.policy

    @property
    def continue_sampling(self) -> SamplingConfig:
        return self.continuation_sampling or self.sampling
