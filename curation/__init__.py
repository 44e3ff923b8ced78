"""curate: multimodal training-data curation and packing for InternVL-style models."""

__version__ = "0.1.0"
