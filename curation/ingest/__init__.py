"""Ingest: reading metadata sources, the polite and safe downloader, image decoding and re-encoding."""
