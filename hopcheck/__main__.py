"""`python -m hopcheck`: see hopcheck/check.py."""

import sys

from hopcheck.check import main

sys.exit(main())
