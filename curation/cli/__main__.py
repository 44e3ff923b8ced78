"""`python -m curation.cli ...` runs the `curate` command."""

import sys

from curation.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
