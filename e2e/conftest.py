"""Fixtures of the pod-hopping suite: `pytest e2e --target local|kube` from the repo root."""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from typing import NoReturn

import pytest

from chat_history_k8s.hopcheck.client import Api, Endpoint
from testsupport.targets import Deployment, Target, TargetUnavailable, make_target
from testsupport.targets.base import BACKENDS, HISTORY_APIS, Backend, HistoryApi

REPORT_KEY = pytest.StashKey[list[str]]()

Flavor = tuple[Backend, HistoryApi]
# One deployment per (backend, API), one at a time: every test runs against each of them.
FLAVORS: list[Flavor] = [(backend, api) for api in HISTORY_APIS for backend in BACKENDS]


def flavor_id(flavor: Flavor) -> str:
    return "-".join(flavor)


def only(backend: Backend) -> pytest.MarkDecorator:
    """Run a test against the deployments of `backend` only (for both APIs)."""
    chosen = [f for f in FLAVORS if f[0] == backend]
    return pytest.mark.parametrize("flavor", chosen, indirect=True, ids=flavor_id)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("e2e", "pod-hopping e2e suite")
    group.addoption(
        "--target", choices=("local", "kube"), default=os.environ.get("E2E_TARGET", "local"),
        help="local: processes on 127.0.0.1; kube: the current kubeconfig context",
    )  # fmt: skip
    group.addoption("--replicas", type=int, default=3, help="chat replicas per deployment")
    group.addoption(
        "--kube-context", default=os.environ.get("E2E_KUBE_CONTEXT"),
        help="kubeconfig context (default: the current one)",
    )  # fmt: skip
    group.addoption(
        "--kube-values", action="append", default=[],
        help="extra values file for every release, e.g. helm/chat-history/ci/airgap-values.yaml",
    )  # fmt: skip
    group.addoption(
        "--kube-set", action="append", default=[],
        help="extra --set for every release, e.g. image.tag=dev",
    )  # fmt: skip
    group.addoption("--keep", action="store_true", help="keep temp dirs / namespaces for debugging")
    group.addoption(
        "--require-target", action="store_true",
        default=os.environ.get("E2E_REQUIRE_TARGET") == "1",
        help="fail, instead of skipping, when the target or a backend cannot be deployed (CI)",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kube_only: needs a Helm release (--target kube)")
    config.stash[REPORT_KEY] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--target") == "kube":
        return
    skip = pytest.mark.skip(reason="helm test needs a Helm release: runs with --target kube")
    for item in items:
        if "kube_only" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(REPORT_KEY, [])
    if lines:
        terminalreporter.section("pod-hopping measurements")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the deployment's diagnostics (its logs, its events):
    gathered now, because the next test resets the deployment and a Kubernetes namespace
    takes its pods' logs with it."""
    report: pytest.TestReport = yield
    if report.failed and call.when == "call":
        funcargs = getattr(item, "funcargs", {})
        used = {id(v): v for v in funcargs.values() if isinstance(v, Deployment)}
        for deployment in used.values():
            try:
                text = deployment.diagnostics()
            except Exception as exc:  # the failure itself must still be reported
                text = f"could not gather the diagnostics: {exc!r}"
            report.sections.append((f"diagnostics of {deployment.description}", text))
    return report


@pytest.fixture(scope="session")
def report(pytestconfig: pytest.Config) -> list[str]:
    """Lines printed at the end of the run: measured losses are reported, not hidden."""
    return pytestconfig.stash[REPORT_KEY]


def unavailable(config: pytest.Config, reason: str) -> NoReturn:
    """Skip with `reason`; with --require-target, fail: a suite that cannot run has not passed."""
    if config.getoption("--require-target"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> Iterator[Target]:
    name = pytestconfig.getoption("--target")
    try:
        chosen = make_target(
            name,
            keep=pytestconfig.getoption("--keep"),
            context=pytestconfig.getoption("--kube-context"),
            values_files=pytestconfig.getoption("--kube-values"),
            set_values=pytestconfig.getoption("--kube-set"),
        )
    except TargetUnavailable as exc:
        unavailable(pytestconfig, f"target {name} unavailable: {exc}")
    yield chosen
    chosen.close()


@pytest.fixture(scope="session", params=FLAVORS, ids=flavor_id)
def flavor(request: pytest.FixtureRequest) -> Flavor:
    param: Flavor = request.param
    return param


@pytest.fixture(scope="session")
def backend(flavor: Flavor) -> Backend:
    return flavor[0]


@pytest.fixture(scope="session")
def history_api(flavor: Flavor) -> HistoryApi:
    return flavor[1]


@pytest.fixture(scope="session")
def deployment(
    target: Target, backend: Backend, history_api: HistoryApi, pytestconfig: pytest.Config
) -> Iterator[Deployment]:
    """The service with `backend` and `history_api`, deployed once for each pair and shared by
    the tests."""
    try:
        deployed = target.deploy(backend, pytestconfig.getoption("--replicas"), history_api)
    except TargetUnavailable as exc:
        unavailable(pytestconfig, f"cannot deploy the {backend} backend ({history_api}): {exc}")
    yield deployed
    deployed.close()


@pytest.fixture
def cluster(deployment: Deployment) -> Deployment:
    """The deployment, put back in its starting shape before each test."""
    deployment.reset()
    if deployment.replica_count < 2:
        pytest.skip("pod hopping needs at least 2 replicas (--replicas)")
    return deployment


@pytest.fixture
def session_id(request: pytest.FixtureRequest) -> str:
    """A session id made for this test only."""
    return f"e2e-{request.node.originalname[:60]}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def apis(cluster: Deployment) -> Iterator[ReplicaApis]:
    """An Api per replica, refreshed after every disruption."""
    with ReplicaApis(cluster) as replica_apis:
        yield replica_apis


class ReplicaApis:
    """Clients for the replicas as they are now; call refresh() after the set changed."""

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self._apis: list[Api] = []
        self.refresh()

    def refresh(self) -> list[Api]:
        self.close()
        self._apis = [Api(endpoint) for endpoint in self._deployment.replicas()]
        return self._apis

    @property
    def all(self) -> list[Api]:
        return self._apis

    @property
    def endpoints(self) -> list[Endpoint]:
        return [api.endpoint for api in self._apis]

    def __getitem__(self, index: int) -> Api:
        return self._apis[index]

    def __len__(self) -> int:
        return len(self._apis)

    def close(self) -> None:
        for api in self._apis:
            api.close()

    def __enter__(self) -> ReplicaApis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
