"""`python -m chat_history_k8s.hopcheck`: see chat_history_k8s/hopcheck/check.py."""

import sys

from chat_history_k8s.hopcheck.check import main

sys.exit(main())
