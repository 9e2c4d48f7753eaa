"""Make and hash API keys: `python -m chat_history_k8s.auth new alice` prints a new key (give
it to the client) and its key-file line (put it in the Secret); `... hash alice` reads a key on
stdin and prints its line. docs/security.md has the whole procedure."""

from __future__ import annotations

import argparse
import secrets
import sys

from chat_history_k8s.auth.keys import PRINCIPAL_PATTERN, PRINCIPAL_RULE, hash_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat_history_k8s.auth", description=__doc__)
    parser.add_argument("command", choices=["new", "hash"])
    parser.add_argument("principal", help=f"who the key belongs to: {PRINCIPAL_RULE}")
    args = parser.parse_args(argv)
    if not PRINCIPAL_PATTERN.fullmatch(args.principal):
        parser.error(f"the principal must be {PRINCIPAL_RULE}")
    if args.command == "new":
        key = secrets.token_urlsafe(32)
        sys.stdout.write(f"key:  {key}\nline: {args.principal}:{hash_key(key)}\n")
    else:
        key = sys.stdin.readline().strip()
        if not key:
            parser.error("no key on stdin")
        sys.stdout.write(f"{args.principal}:{hash_key(key)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
