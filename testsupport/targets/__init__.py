"""Where the service runs for the e2e suite and the demo: each target deploys it and can disturb
it on request (restarts, scaling, store outages, runbook procedures)."""

from __future__ import annotations

from collections.abc import Sequence

from testsupport.targets.base import Deployment, Target, TargetUnavailable


def make_target(
    name: str,
    *,
    keep: bool = False,
    context: str | None = None,
    values_files: Sequence[str] = (),
    set_values: Sequence[str] = (),
) -> Target:
    """The target called `name`: `local` (processes on loopback) or `kube` (the kubeconfig
    context `context`, with extra chart values). Raises TargetUnavailable with a reason."""
    if name == "local":
        from testsupport.targets.local import LocalTarget

        return LocalTarget(keep=keep)
    if name == "kube":
        from testsupport.targets.kube import KubeTarget

        return KubeTarget(
            keep=keep, context=context, values_files=list(values_files), set_values=list(set_values)
        )
    raise ValueError(f"unknown target {name!r}: use local or kube")


__all__ = ["Deployment", "Target", "TargetUnavailable", "make_target"]
