"""The `curate` command: argument parsing, recipe loading, end-of-run reports, the demo."""
