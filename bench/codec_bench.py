"""Micro-benchmark: decoding a 20-message window, as the service does and two faster ways.

    python -m bench.codec_bench [--window 20] [--repeats 7]

Evidence for a proposed change to `service/history/redis.py:_decode` (the profile's largest
item in a Redis turn). Checks first that every variant gives equal messages, tool calls and
non-text content included. No server needed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from collections.abc import Callable, Iterable

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from bench.store_bench import encode_ours, make_pair

_CLASSES: dict[str, type[BaseMessage]] = {
    "human": HumanMessage,
    "ai": AIMessage,
    "system": SystemMessage,
    "tool": ToolMessage,
}


def decode_service(raw: Iterable[bytes]) -> list[BaseMessage]:
    """What service/history/redis.py does today."""
    return messages_from_dict([json.loads(item) for item in raw])


try:  # not a dependency of this project: installed because langsmith needs it
    import orjson
except ImportError:  # pragma: no cover
    orjson = None


def decode_orjson(raw: Iterable[bytes]) -> list[BaseMessage]:
    """Same, with orjson (already installed: langsmith, a langchain-core dependency, needs it)."""
    return messages_from_dict([orjson.loads(item) for item in raw])


def decode_validate(raw: Iterable[bytes]) -> list[BaseMessage]:
    """orjson, then the message class's `model_validate` (what `Cls(**data)` ends in, without
    the keyword-argument detour); other types fall back to `messages_from_dict`."""
    out: list[BaseMessage] = []
    for item in raw:
        d = orjson.loads(item)
        cls = _CLASSES.get(d["type"])
        out.append(cls.model_validate(d["data"]) if cls else messages_from_dict([d])[0])
    return out


VARIANTS: dict[str, Callable[[Iterable[bytes]], list[BaseMessage]]] = {
    "service today (json + messages_from_dict)": decode_service,
}
if orjson is not None:
    VARIANTS["orjson + messages_from_dict"] = decode_orjson
    VARIANTS["orjson + Class.model_validate"] = decode_validate


def fidelity_sample() -> list[bytes]:
    messages: list[BaseMessage] = [
        SystemMessage("be brief"),
        HumanMessage(
            content=[
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]
        ),
        AIMessage(
            "",
            tool_calls=[{"name": "f", "args": {"a": 1}, "id": "c1"}],
            usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            response_metadata={"model": "x"},
            id="run-1",
            name="bot",
        ),
        ToolMessage("42", tool_call_id="c1", artifact={"k": [1, 2]}),
        AIMessage("ünïcødé ✓", additional_kwargs={"x": 1}),
    ]
    return [encode_ours(m) for m in messages]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    sample = fidelity_sample()
    expected = [message_to_dict(m) for m in decode_service(sample)]
    for name, decode in VARIANTS.items():
        if [message_to_dict(m) for m in decode(sample)] != expected:
            print(f"FIDELITY: {name} differs from the service's decoding", file=sys.stderr)
            return 1
    window = [encode_ours(m) for i in range(args.window // 2) for m in make_pair(i)]
    number = 200
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # interleaved
        for name, decode in VARIANTS.items():
            seconds = timeit.timeit(lambda d=decode: d(window), number=number)  # type: ignore[misc]
            times[name].append(seconds / number * 1e6)
    base = statistics.median(times[next(iter(VARIANTS))])
    print(f"decoding a {args.window}-message window (median of {args.repeats}, interleaved):")
    for name, us in times.items():
        med = statistics.median(us)
        print(f"  {med:7.0f} us  ({med / base:4.0%})  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
