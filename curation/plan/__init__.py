"""The metadata-only dry run: filters, dedup and the packer's token and tile counts before any download."""
