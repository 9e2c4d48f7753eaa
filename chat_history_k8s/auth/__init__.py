"""Bearer API keys: who a request is (its principal), from a file of hashed keys."""

from chat_history_k8s.auth.keys import (
    PRINCIPAL_RULE,
    KeyFileError,
    KeyRing,
    hash_key,
    parse_key_file,
    scoped,
)

__all__ = ["PRINCIPAL_RULE", "KeyFileError", "KeyRing", "hash_key", "parse_key_file", "scoped"]
