"""One source for defaults: every environment value the chart sets by default is the service's
own `Settings` default, unless values.yaml says why, right above the value, in a line
`## @differs-from-service <reason>`."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import TypeAdapter

from chat_history_k8s.config import Settings
from tests.chart.conftest import CHART, RELEASE, Manifest, Render, one

DIFFERS = re.compile(r"^\s*## @differs-from-service (\S.*)$")
KEY = re.compile(r"^(\s*)([A-Za-z][\w-]*):")
VALUE_REF = re.compile(r"^\s*([A-Z][A-Z0-9_]*): \{\{ \.Values\.([\w.]+) \| quote \}\}")

# What the chart sets that is no chart value with a service default, and why.
NOT_A_DEFAULT = {
    "REDIS_URL": "this release's own Redis Service, named after the release",
    "POD_NAME": "the pod's own name, from the downward API",
    "REDIS_PASSWORD_FILE": "where the chart mounts the release's Secret",
    "OPENAI_API_KEY_FILE": "where the chart mounts the Secret the user names",
    "REDIS_SENTINEL_PASSWORD_FILE": "where the chart mounts the Sentinels' password",
    "OPENAI_MODEL": "required with chat.model=openai; the service has no default",
    "AUTH_API_KEYS_FILE": "where the chart mounts the API keys' Secret",
    "REDIS_MODE": "follows redis.architecture and redis.external",
    "REDIS_SENTINELS": "this release's Redis pods, or redis.external.sentinels",
    "REDIS_SENTINEL_MASTER": "redis.replication.masterName or redis.external.sentinelMaster",
}

# Value sets that, between them, make the chart set every variable it can set.
RENDERS = {
    "defaults": (),
    "memory": ("history.backend=memory",),
    "checkpointer": ("history.api=checkpointer",),
    "openai": (
        "chat.model=openai",
        "chat.openai.model=gpt-4o-mini",
        "chat.openai.apiKeySecret=openai",
    ),
    "replication": ("redis.architecture=replication",),
}


def value_of_each_variable() -> dict[str, str]:
    """Environment variable -> the values.yaml path the ConfigMap template sets it from."""
    template = (CHART / "templates" / "configmap.yaml").read_text().splitlines()
    return {m.group(1): m.group(2) for line in template if (m := VALUE_REF.match(line))}


def documented_differences() -> dict[str, str]:
    """values.yaml path -> the reason given right above it."""
    found: dict[str, str] = {}
    path: list[tuple[int, str]] = []
    reason: str | None = None
    for line in (CHART / "values.yaml").read_text().splitlines():
        if m := DIFFERS.match(line):
            reason = m.group(1)
        elif m := KEY.match(line):
            indent = len(m.group(1))
            path = [(i, k) for i, k in path if i < indent] + [(indent, m.group(2))]
            if reason is not None:
                found[".".join(k for _, k in path)] = reason
            reason = None
        elif reason is not None and not line.lstrip().startswith("#"):
            raise AssertionError(f"'## @differs-from-service {reason}' is above no value")
    return found


def service_default(variable: str) -> Any:
    field = Settings.model_fields[variable.lower()]
    assert not field.is_required() and field.default_factory is None, variable
    return field.default


def chat_environment(manifests: list[Manifest]) -> tuple[dict[str, str], set[str]]:
    """The ConfigMap's data, and the names the chat container sets itself (`env`)."""
    config = one(manifests, "ConfigMap", RELEASE)["data"]
    deployment = one(manifests, "Deployment", RELEASE)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return config, {e["name"] for e in container.get("env", [])}


@pytest.mark.parametrize("sets", RENDERS.values(), ids=RENDERS.keys())
def test_every_variable_the_chart_sets_is_the_service_default_or_says_why(
    render: Render, sets: tuple[str, ...]
) -> None:
    config, env = chat_environment(render(None, *sets))
    sources = value_of_each_variable()
    differs = documented_differences()
    assert env <= NOT_A_DEFAULT.keys(), "container env set from neither a value nor a Secret"
    overridden = {s.partition("=")[0] for s in sets}  # not defaults: what the render chose
    drift = []
    for variable, rendered in sorted(config.items()):
        if variable in NOT_A_DEFAULT:
            continue
        assert variable in sources, f"{variable}: set from no single value; add it to NOT_A_DEFAULT"
        path, default = sources[variable], service_default(variable)
        if path in overridden:
            continue
        annotation = Settings.model_fields[variable.lower()].annotation
        assert annotation is not None
        value = TypeAdapter(annotation).validate_python(rendered)
        if path in differs:
            assert value != default, f"{path} says it differs from the service, but it does not"
        elif value != default:
            drift.append(f"{path}: chart {value!r}, service {variable}={default!r}")
    assert drift == [], (
        "chart defaults differ from the service's; make them equal, or document why with "
        "'## @differs-from-service <reason>' right above the value in values.yaml"
    )


def test_every_documented_difference_names_a_value_the_chart_passes_on() -> None:
    assert set(documented_differences()) <= set(value_of_each_variable().values())


def test_the_renders_cover_every_variable_of_the_config_map_template(render: Render) -> None:
    seen: set[str] = set()
    for sets in RENDERS.values():
        seen |= chat_environment(render(None, *sets))[0].keys()
    assert set(value_of_each_variable()) <= seen
