"""The client side of the service's HTTP contract: `chat_history_k8s.hopcheck.client` (used by
the e2e suite, the demo and the benchmarks) and the hop check that `helm test` runs
(`python -m chat_history_k8s.hopcheck`)."""
