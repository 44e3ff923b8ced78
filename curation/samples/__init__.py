"""Embedded sample data and generators (web captions, images, duplicates, VQA questions) for the
demo, tests and benches."""
