"""`python -m na23recon.cli`: the command line."""

import sys

from . import main

sys.exit(main())
