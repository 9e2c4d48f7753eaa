"""`python -m demo`: see demo/play.py."""

import sys

from demo.play import main

sys.exit(main())
