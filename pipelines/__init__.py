"""Apache Beam pipelines: thin wiring of curation/, filters/ and packing/ objects."""
