"""Filters and deduplication: pure functions and objects, no Beam, no I/O."""
