"""`python -m curation.cli ...` runs the `curate` command."""

import sys

from curation.cli.main import main

sys.exit(main())
