"""The pack recipe: limits, tokenizer and template, tiling, packer buffer, shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from curation.core.config import ConfigError, ShardConfig
from curation.core.records import UidConfig
from packing.meta import MetaDataset
from packing.templates import check_template


@dataclass(frozen=True)
class TilingConfig:
    """InternVL dynamic high resolution: tiles per image (max_num is shared by multi-image samples)."""

    max_num: int = 12  # 448-px grid tiles per image at most; n images share it: max(1, max_num // n) each
    min_num: int = 1  # grid tiles per image at least (capped at the image's share of max_num)
    use_thumbnail: bool = True  # add a whole-image thumbnail tile when the grid has more than one tile

    def __post_init__(self) -> None:
        if not 1 <= self.min_num <= self.max_num:
            raise ConfigError("tiling: 1 <= min_num <= max_num")


@dataclass(frozen=True)
class PackConfig:
    """The whole pack recipe: limits, tokenizer and template, tiling, packer buffer, shards."""

    l_max: int = 16384  # tokens per packed sequence (InternVL 2.5 packing: 16384); >= 16
    t_max: int = 48  # image tiles per packed sequence (InternVL 2.5 packing: 48); >= 1
    tokenizer: str = "builtin:smollm2"  # or a local Hugging Face tokenizer folder
    # InternVL's template for the LLM family (packing/templates.py: internvl2_5, internlm2-chat, Hermes-2,
    # phi3-chat), `tokenizer` (its own chat template), or auto: read from the tokenizer folder
    template: str = "auto"
    system_prompt: str = "default"  # "default": the template's own; "": none; else this text
    # a BOS token first in every sequence (InternLM2-based InternVL 2.5 8B / 26B); null: read from the tokenizer
    bos: bool | None = None
    truncate: bool = True  # over-long conversations are cut in text only; else rejected
    buffer: int = 256  # packer buffer (items); planning is bounded by it
    image_root: str | None = None  # relative image paths resolve here; default: the jsonl's folder
    max_pixels: int = 89_478_485  # an image over this many pixels (w x h) is rejected as decompression_bomb
    # where row ids are unique: file (InternVL / LLaVA number them 0..N per file; the default, so files
    # packed together never lose rows as dup_uid), source (the meta dataset's files), none (already global)
    uid: UidConfig = field(default_factory=UidConfig)
    # count InternVL's blank tile (its loader gives a sample with no image one dummy 448x448 tile,
    # image_flags=0) toward t_max, so the tile budget matches its loader; token ids do not change
    text_only_blank_tile: bool = False
    tiling: TilingConfig = field(default_factory=TilingConfig)
    shards: ShardConfig = field(default_factory=lambda: ShardConfig(prefix="packed", samples_per_shard=5000))
    # an InternVL meta file's datasets (`curate pack --meta`, packing/meta.py): per annotation file its
    # image root, tile budget and repeat_time; empty: the --input files with the settings above
    datasets: list[MetaDataset] = field(default_factory=list)
    # text-only : multimodal tokens to reach over the meta datasets (InternVL 3: [1, 3]), by one
    # deterministic weight per dataset on its repeat_time (packing/meta.py ratio_weights); null: as given
    target_ratio: list[float] | None = None
    ratio_by: Literal["subsample", "repeat"] = "subsample"  # shrink the over-represented side, or repeat the scarce one
    progress: bool = True  # a progress bar per encode worker on stderr (--no-progress: false)

    def __post_init__(self) -> None:
        check_template(self.template)
        if self.l_max < 16 or self.t_max < 1 or self.buffer < 1 or self.max_pixels < 1:
            raise ConfigError("l_max >= 16, t_max >= 1, buffer >= 1, max_pixels >= 1")
        if self.target_ratio is not None and (len(self.target_ratio) != 2 or min(self.target_ratio) <= 0):
            raise ConfigError("target_ratio: [text, multimodal], two positive numbers (e.g. [1, 3])")
