"""The pod-hopping end-to-end suite: one suite, several targets (local processes, Kubernetes)."""
