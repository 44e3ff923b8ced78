"""Shard inspection: summary, show, validate and an HTML report for pair and packed shards."""
