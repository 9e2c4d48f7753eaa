"""The demo (`python -m demo`, run by scripts/demo.sh): see demo/play.py."""
