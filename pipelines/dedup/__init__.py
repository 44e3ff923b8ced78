"""`curate dedup`, wired step by step: `exact`, `near` (caption LSH, image tables), `components`,
`decisions` (the cascade, reused by ingest and plan), `stage` (read, decide, re-shard, write)."""
