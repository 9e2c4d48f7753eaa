"""The client side of the service's HTTP contract: `hopcheck.client` (used by the e2e suite,
the demo and the benchmarks) and the hop check that `helm test` runs (`python -m hopcheck`)."""
