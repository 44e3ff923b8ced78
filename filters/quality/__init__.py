"""Quality filters, without Beam: metadata rules before download, pixel rules after it, text rules
(InternVL 2.5 heuristics, repetition measures) and language ID. `filters/registry.py` builds them
from a recipe."""
