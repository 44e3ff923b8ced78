"""Annotate: OCR, LLM quality scores with probe calibration, heuristic rules and language ID, conversations."""
