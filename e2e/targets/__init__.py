"""Where the suite runs: each target deploys the service and can disturb it on request."""

from __future__ import annotations

from e2e.targets.base import Deployment, Target, TargetUnavailable


def make_target(name: str, **options: object) -> Target:
    """The target called `name` (`local` or `kube`); raises TargetUnavailable with a reason."""
    if name == "local":
        from e2e.targets.local import LocalTarget

        return LocalTarget(**options)  # type: ignore[arg-type]
    if name == "kube":
        from e2e.targets.kube import KubeTarget

        return KubeTarget(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown target {name!r}: use local or kube")


__all__ = ["Deployment", "Target", "TargetUnavailable", "make_target"]
