"""Deduplication, without Beam: one module per job.

- `keys`: ranked node ids (best representative first), exact keys, decisions and how shards apply them;
- `exact`: URL normalisation, the representative choice;
- `minhash`: caption MinHash signatures (datasketch-identical) and LSH bands;
- `caption_lsh`: caption bands -> memberships -> verified star edges;
- `hot_captions`: caption buckets too big to verify pairwise, verified against pivots;
- `phash`: pHash keys and the identical-pHash collapse; `image_lsh`: near-duplicate images by bit-sampled
  pHash tables;
- `buckets`: the cascade, exact groups, the hot-bucket rule and split, decisions;
- `components`: connected components over the edges (union-find, large-star / small-star rounds);
- `config`: the dedup recipe.
"""
