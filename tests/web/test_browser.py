"""The page in a real browser (Debian's chromium, driven by Playwright) against real replicas:
3 memory replicas behind nginx, and 3 Redis replicas behind another nginx with a redis-server.

The page is loaded from the memory entry point; its side-by-side mode plays the same
conversation against the Redis entry point (another origin: both list both in
CORS_ALLOW_ORIGINS). nginx's round robin puts consecutive turns on different pods, so memory
forgets the name and Redis recalls it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, expect, sync_playwright

from testsupport import MissingTool, Nginx, RedisServer, Replica, find_tool, new_key, write_key_file

CHROMIUM = "/usr/bin/chromium"
# This machine's network is closed: nothing in the background may try to reach out.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
REPLICAS = 3
TIMEOUT_MS = 15_000


def _missing(what: str) -> None:
    """Skip on a machine that cannot install `what` (not root on Debian) outside CI; fail in CI
    and where scripts/unit.sh would have installed it."""
    hint = f"{what}; scripts/unit.sh installs it (as root on Debian/Ubuntu)"
    can_install = os.geteuid() == 0 and Path("/etc/debian_version").exists()
    if os.environ.get("CI") or can_install:
        pytest.fail(hint, pytrace=False)
    pytest.skip(hint)


@dataclass
class Release:
    """One backend's replicas behind their nginx entry point."""

    backend: str
    replicas: list[Replica]
    lb: Nginx

    @property
    def url(self) -> str:
        return self.lb.url

    def pods(self) -> set[str]:
        return {r.name for r in self.replicas}

    def unmatched_requests(self) -> list[str]:
        """Lines of every replica's /metrics that count a request as `unmatched`."""
        lines = []
        for replica in self.replicas:
            text = httpx.get(f"{replica.url}/metrics", timeout=5.0).text
            lines += [line for line in text.splitlines() if 'route="unmatched"' in line]
        return lines


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Release]]:
    if find_tool("nginx") is None:
        _missing("nginx not found (Debian package nginx-light)")
    workdir = tmp_path_factory.mktemp("web")
    try:
        store = RedisServer(workdir / "store")
    except MissingTool as exc:
        _missing(str(exc))
    store.start()
    settings = {
        "memory": {"HISTORY_BACKEND": "memory", "LOG_LEVEL": "WARNING"},
        "redis": {"HISTORY_BACKEND": "redis", "REDIS_URL": store.url, "LOG_LEVEL": "WARNING"},
    }
    made: dict[str, Release] = {}
    try:
        for backend, env in settings.items():
            (workdir / backend).mkdir()
            replicas = [
                Replica(f"{backend}-{i}", workdir / backend, env, access_log=False)
                for i in range(REPLICAS)
            ]
            made[backend] = Release(
                backend, replicas, Nginx(workdir / backend, [r.port for r in replicas])
            )
        # Each release lets the other's page call it, and its page call the other.
        origins = ",".join(release.url for release in made.values())
        for release in made.values():
            for replica in release.replicas:
                replica.settings["CORS_ALLOW_ORIGINS"] = origins
                replica.start()
        for release in made.values():
            for replica in release.replicas:
                replica.wait_ready()
            release.lb.start()
        yield made
    finally:
        for release in made.values():
            release.lb.stop()
            for replica in release.replicas:
                replica.stop()
        store.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not Path(CHROMIUM).is_file():
        _missing(f"Debian's chromium not found at {CHROMIUM} (apt-get install chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


class Recorder:
    """What a tab did: console errors (CSP violations included) and every URL it requested."""

    def __init__(self, tab: Page) -> None:
        self.errors: list[str] = []
        self.urls: list[str] = []
        tab.on("console", self._console)
        tab.on("pageerror", lambda exc: self.errors.append(str(exc)))
        tab.on("request", lambda request: self.urls.append(request.url))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def origins(self) -> set[str]:
        return {"/".join(u.split("/")[:3]) for u in self.urls}


@pytest.fixture
def recorder() -> dict[str, Recorder]:
    return {}


@pytest.fixture
def page(browser: BrowserContext, recorder: dict[str, Recorder]) -> Iterator[Page]:
    """A fresh tab; the test fails on any console error in it."""
    tab = browser.new_page()
    recorder["tab"] = seen = Recorder(tab)
    yield tab
    tab.close()
    assert not seen.errors, f"browser console errors: {seen.errors}"


def send(tab: Page, message: str) -> None:
    box = tab.get_by_label("Message", exact=True)
    box.fill(message)
    box.press("Enter")


def last_reply(tab: Page, column: str) -> tuple[str, str]:
    """The pod name and the text of the newest reply in `column` ("a" or "b"), once it is in."""
    reply = tab.locator(f"#column-{column} .reply").last
    expect(reply).not_to_have_class(re.compile(r"\bpending\b"))
    return reply.locator(".pod").inner_text(), reply.locator(".text").inner_text()


def test_side_by_side_memory_forgets_and_redis_remembers(
    releases: dict[str, Release], page: Page, recorder: dict[str, Recorder]
) -> None:
    memory, redis = releases["memory"], releases["redis"]
    page.goto(memory.url + "/")
    expect(page.locator("#column-a .where")).to_contain_text("backend memory")
    page.get_by_label("Side by side: send every message to two services").check()
    page.get_by_label("Service B URL").fill(redis.url)
    page.get_by_label("Service B URL").press("Tab")  # the change event: B is described
    expect(page.locator("#column-b")).to_be_visible()
    expect(page.locator("#column-b .where")).to_contain_text("backend redis")

    send(page, "my name is Ada")
    pod_a1, text_a1 = last_reply(page, "a")
    pod_b1, text_b1 = last_reply(page, "b")
    assert text_a1.startswith("Nice to meet you, Ada!") and pod_a1 in memory.pods()
    assert text_b1.startswith("Nice to meet you, Ada!") and pod_b1 in redis.pods()
    expect(page.locator("#column-a .meta").last).to_contain_text("saw 0 earlier messages")

    send(page, "what is my name?")
    pod_a2, text_a2 = last_reply(page, "a")
    pod_b2, text_b2 = last_reply(page, "b")
    assert pod_a2 != pod_a1 and pod_b2 != pod_b1, "round robin should have hopped"
    assert text_a2.startswith("I don't know your name")
    assert text_b2.startswith("Your name is Ada.")
    expect(page.locator("#column-a .lost")).to_have_text(
        "History lost: this pod saw 0 of the 2 earlier messages."
    )
    expect(page.locator("#column-b .kept")).to_have_text("History kept: all 2 earlier messages.")
    expect(page.locator("#column-a .meta").last).to_contain_text(f"(last turn: {pod_a1})")
    # The live region said both replies.
    expect(page.locator("#announcer")).to_contain_text("I don't know your name")
    expect(page.locator("#announcer")).to_contain_text("Your name is Ada.")
    page.locator("#column-b").get_by_role("button", name="Stored messages").click()
    expect(page.locator("#column-b .notice").last).to_contain_text("holds 4 messages")
    assert recorder["tab"].origins() == {memory.url, redis.url}


def test_api_errors_are_shown_not_swallowed(
    releases: dict[str, Release], page: Page, recorder: dict[str, Recorder]
) -> None:
    page.goto(releases["redis"].url + "/")
    page.get_by_role("button", name="Stored messages").click()
    expect(page.locator("#column-a .notice").last).to_have_text(
        "No session yet: send a message first."
    )
    send(page, "x" * 16_001)  # one character over MAX_MESSAGE_CHARS
    error = page.locator("#column-a .reply.error").last
    expect(error).to_contain_text("HTTP 413 message_too_large: message has 16001 characters")
    expect(error).to_contain_text("answered by redis-")
    page.get_by_label("Service A URL").fill("http://127.0.0.1:9")  # nothing listens there
    page.get_by_label("Service A URL").press("Tab")
    expect(page.locator("#column-a .where")).to_contain_text("unreachable: could not reach")
    # The browser logged both; the second proves the policy: an origin not listed is refused.
    errors, recorder["tab"].errors = recorder["tab"].errors, []
    assert len(errors) == 3 and "status of 413" in errors[0], errors
    assert "violates the following Content Security Policy directive" in errors[1], errors


def test_keyboard_only(releases: dict[str, Release], page: Page) -> None:
    page.goto(releases["redis"].url + "/")
    box = page.get_by_label("Message", exact=True)
    for _ in range(12):  # Tab through the controls until the message box has the focus
        page.keyboard.press("Tab")
        if box.evaluate("el => el === document.activeElement"):
            break
    expect(box).to_be_focused()
    outline = box.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none", "the focused control must show its focus"
    page.keyboard.type("my name is Grace")
    page.keyboard.press("Shift+Enter")  # a new line, not a send
    page.keyboard.type("and I like ships")
    expect(box).to_have_value("my name is Grace\nand I like ships")
    page.keyboard.press("Enter")
    _, text = last_reply(page, "a")
    assert text.startswith("Nice to meet you, Grace!")
    expect(box).to_be_focused()  # ready for the next message
    page.keyboard.type("what is my name?")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Send")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#column-a .reply .text")).to_have_count(2)
    _, text = last_reply(page, "a")
    assert text.startswith("Your name is Grace.")
    for _ in range(3):  # back past the message box and "Delete conversation"
        page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("button", name="Stored messages")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#column-a .notice").last).to_contain_text("holds 4 messages")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Delete conversation")).to_be_focused()
    page.keyboard.press("Space")
    expect(page.locator("#column-a .notice").last).to_contain_text("Deleted (HTTP 204")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("button", name="New conversation")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#column-a .log > *")).to_have_count(0)
    expect(box).to_be_focused()


def test_a_phone_sized_screen_needs_no_horizontal_scroll(
    releases: dict[str, Release], page: Page
) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{releases['memory'].url}/?b={releases['redis'].url}")
    expect(page.locator("#column-b .where")).to_contain_text("backend redis")
    send(page, "a long word: " + "x" * 300)
    last_reply(page, "a")
    last_reply(page, "b")
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"page is {width[0]} px wide in a {width[1]} px viewport"
    a, b = (page.locator(f"#column-{c}").bounding_box() for c in "ab")
    assert a and b and b["y"] >= a["y"] + a["height"], "columns should stack on a phone"


def test_swagger_ui_renders_offline(
    releases: dict[str, Release], page: Page, recorder: dict[str, Recorder]
) -> None:
    url = releases["memory"].url
    page.goto(url + "/docs")
    for path in ("/v1/chat", "/v1/sessions/{session_id}/messages"):
        expect(page.locator(".opblock-summary-path", has_text=path).first).to_be_visible()
    elsewhere = [u for u in recorder["tab"].urls if not u.startswith((url + "/", "data:"))]
    assert not elsewhere, f"loaded from elsewhere: {elsewhere}"


def test_no_page_request_is_counted_as_unmatched(releases: dict[str, Release], page: Page) -> None:
    """What a browser asks for, the page's preflights included, is counted under a route (and
    so is everything the tests above asked for, when they ran before this one)."""
    memory, redis = releases["memory"], releases["redis"]
    page.goto(f"{memory.url}/?b={redis.url}")
    send(page, "hello")
    last_reply(page, "a")
    last_reply(page, "b")
    page.goto(memory.url + "/docs")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    for release in releases.values():
        assert release.unmatched_requests() == []


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """One replica with API keys on, as the chart deploys it; yields its URL and a key."""
    workdir = tmp_path_factory.mktemp("web-auth")
    key = new_key()
    settings = {
        "HISTORY_BACKEND": "memory", "LOG_LEVEL": "WARNING", "AUTH_ENABLED": "true",
        "AUTH_API_KEYS_FILE": str(write_key_file(workdir / "api-keys", {"web": [key]})),
    }  # fmt: skip
    replica = Replica("authed-0", workdir, settings, access_log=False)
    replica.start()
    try:
        replica.wait_ready()
        yield replica.url, key
    finally:
        replica.stop()


def test_an_api_key_typed_in_the_page_is_sent_and_kept_in_this_tab_only(
    authed: tuple[str, str], page: Page, recorder: dict[str, Recorder]
) -> None:
    url, key = authed
    page.goto(url + "/")
    expect(page.locator("#column-a .where")).to_contain_text("API key required")
    send(page, "my name is Ada")
    expect(page.locator("#column-a .reply.error").last).to_contain_text(
        "HTTP 401 unauthorized: missing API key"
    )
    page.get_by_label("Service A API key").fill(key)
    page.get_by_label("Service A API key").press("Tab")
    send(page, "my name is Ada")
    _, text = last_reply(page, "a")
    assert text.startswith("Nice to meet you, Ada!")
    assert page.evaluate("sessionStorage.getItem('chat-history.api-key.a')") == key
    assert page.evaluate("localStorage.length") == 0
    page.reload()
    expect(page.get_by_label("Service A API key")).to_have_value(key)  # this tab still has it
    assert not any(key in u for u in recorder["tab"].urls), "the key never goes in a URL"
    errors, recorder["tab"].errors = recorder["tab"].errors, []
    assert len(errors) == 1 and "status of 401" in errors[0], errors
