"""Every parquet schema the project writes, in one place: the per-shard manifests (one row per
input row, kept or rejected with stage / reason / detail) and the per-shard pack indexes. Readers
(`curate inspect`, the demo's checks) and writers agree on these names; a column added here is
added for every writer of that kind."""

from __future__ import annotations

import pyarrow as pa

# Pair shards (ingest, dedup, annotate): img2dataset's columns plus our status and scores.
PAIR_MANIFEST = pa.schema([
    ("uid", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("source", pa.string()),
    ("source_file", pa.string()), ("source_row", pa.int64()),
    ("status", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("original_width", pa.int32()), ("original_height", pa.int32()),
    ("sha256", pa.string()), ("phash", pa.string()), ("source_sha256", pa.string()),
    ("declared_width", pa.int64()), ("declared_height", pa.int64()),
    ("clip_similarity", pa.float64()), ("nsfw_score", pa.float64()), ("watermark_score", pa.float64()),
    ("aesthetic_score", pa.float64()),
    # the models' findings on the stored pixels (ingest's `pixels:`), kept rows only
    ("nsfw_pixels", pa.float64()), ("faces", pa.int32()), ("clip_pixel_similarity", pa.float64()),
    ("aesthetic_pixels", pa.float64()),
])

# Packed shards (`curate pack`): one row per input conversation / preference pair.
PACK_MANIFEST = pa.schema([
    ("uid", pa.string()), ("source_file", pa.string()), ("source_row", pa.int64()), ("kind", pa.string()),
    ("status", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("pack", pa.string()), ("tokens", pa.int64()), ("tiles", pa.int64()), ("truncated", pa.bool_()),
])

# Packed shards: one row per pack (`{shard}.packs.parquet`).
PACK_INDEX = pa.schema([
    ("pack", pa.string()), ("tokens", pa.int64()), ("tiles", pa.int64()), ("fill", pa.float64()),
    ("tile_fill", pa.float64()), ("units", pa.int64()), ("segments", pa.int64()), ("images", pa.int64()),
    ("supervised", pa.int64()),
])

# Plan shards (`curate plan`): one row per metadata row, kept with its predicted pack.
PLAN_MANIFEST = pa.schema([
    ("uid", pa.string()), ("url", pa.string()), ("source_file", pa.string()), ("source_row", pa.int64()),
    ("status", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("declared_width", pa.int64()), ("declared_height", pa.int64()), ("width", pa.int32()), ("height", pa.int32()),
    ("tiles", pa.int32()), ("tokens", pa.int32()), ("truncated", pa.bool_()), ("pack", pa.string()),
    ("estimated", pa.bool_()),  # planned on an assumed size (plan.yaml missing_size), not a declared one
])

# Plan shards: one row per predicted pack.
PLAN_INDEX = pa.schema([
    ("pack", pa.string()), ("units", pa.int32()), ("tokens", pa.int32()), ("tiles", pa.int32()),
    ("fill", pa.float64()), ("tile_fill", pa.float64()), ("segments", pa.int32()),
])

# MMPR shards (`curate mmpr`): one row per question row, kept with its pair count.
MMPR_MANIFEST = pa.schema([
    ("uid", pa.string()), ("source_file", pa.string()), ("source_row", pa.int64()), ("status", pa.string()),
    ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("question", pa.string()),
    ("answer_gt", pa.string()), ("answer_type", pa.string()), ("samples", pa.int32()), ("correct", pa.int32()),
    ("pairs", pa.int32()), ("methods", pa.string()), ("notes", pa.string()),
])

# Translated conversation shards (`curate translate`): one row per input conversation row.
TRANSLATE_MANIFEST = pa.schema([
    ("uid", pa.string()), ("source_file", pa.string()), ("source_row", pa.int64()), ("status", pa.string()),
    ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("translated_id", pa.string()),
    ("source_language", pa.string()), ("source_confidence", pa.float64()), ("target_language", pa.string()),
    ("output_confidence", pa.float64()), ("turns", pa.int32()), ("llm_requests", pa.int32()),
])
