"""`python -m mailserver` runs the same command as the `mailserver` console script."""

import sys

from mailserver.cli import main

sys.exit(main())
