"""The page, its files and the offline docs, in process: what they answer, which headers keep
them safe, which URLs they reference, and how /metrics counts them."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser

import httpx
import pytest
from pydantic import ValidationError

from chat_history_k8s.config import Settings
from chat_history_k8s.web import docs, page
from tests.conftest import app_client, make_settings
from testsupport import REPO_ROOT


class _Links(HTMLParser):
    """Every URL an HTML page makes the browser load (src, href) and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.inline_handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self.inline_handlers += [k for k, _ in attrs if k.startswith("on")]
        if tag == "script" and "src" not in found:
            self.inline_scripts += 1


def links(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


def same_origin(url: str) -> bool:
    # Relative or root-relative: no scheme, no host (and not protocol-relative "//host").
    return not re.match(r"^([a-z][a-z0-9+.-]*:|//)", url, re.IGNORECASE)


def csp(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return {d.split()[0]: d.partition(" ")[2] for d in (p.strip() for p in policy.split(";"))}


async def test_the_page_is_served_at_the_root_with_a_strict_policy() -> None:
    async with app_client(make_settings("memory")) as client:
        r = await client.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["x-served-by"] == "memory-test"
    assert r.headers["x-content-type-options"] == "nosniff"
    policy = csp(r)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["img-src"] == "'self'"
    assert policy["connect-src"] == "'self'"  # CORS_ALLOW_ORIGINS unset: own origin only
    assert policy["frame-ancestors"] == policy["base-uri"] == "'none'"
    found = links(r.text)
    assert found.inline_scripts == 0 and not found.inline_handlers and "style=" not in r.text
    assert sorted(found.urls) == ["static/app.css", "static/app.js", "static/favicon.svg"]
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in r.text


async def test_the_page_may_call_the_origins_the_service_allows() -> None:
    origins = "http://localhost:8080, http://LOCALHOST:8081/"
    async with app_client(make_settings("memory", cors_allow_origins=origins)) as client:
        r = await client.get("/")
    assert csp(r)["connect-src"] == "'self' http://localhost:8080 http://localhost:8081"


@pytest.mark.parametrize("name", sorted(page.FILES))
async def test_each_page_file_answers_with_its_type(name: str) -> None:
    async with app_client(make_settings("memory")) as client:
        r = await client.get(f"/static/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == page.FILES[name]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.content == (page.STATIC / name).read_bytes()


@pytest.mark.parametrize("path", ["/static/index.html", "/static/..%2Fpage.py", "/static/"])
async def test_nothing_else_is_served_from_the_package(path: str) -> None:
    async with app_client(make_settings("memory")) as client:
        r = await client.get(path)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_the_page_uses_no_other_origin_and_no_html_injection() -> None:
    """Nothing the page ships loads from elsewhere, and text never becomes markup."""
    for name in ("index.html", *page.FILES):
        text = (page.STATIC / name).read_text()
        assert "@import" not in text and "url(" not in text.replace("new URL(", ""), name
    script = (page.STATIC / "app.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", script)


def test_every_page_file_ships_in_the_wheel() -> None:
    """pyproject's package data covers every file the page routes serve (setuptools leaves
    out non-Python files it is not told about, and the image installs the wheel)."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["chat_history_k8s.web"]
    for name in ("index.html", *page.FILES):
        assert any(fnmatch(f"static/{name}", p) for p in patterns), name
    assert sorted(p.name for p in page.STATIC.iterdir()) == sorted(["index.html", *page.FILES])


async def test_docs_reference_only_same_origin_urls_that_answer() -> None:
    async with app_client(make_settings("memory")) as client:
        r = await client.get("/docs")
        assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
        urls = links(r.text).urls
        urls += re.findall(r"url: '([^']+)'", r.text)  # the OpenAPI document
        assert urls and all(same_origin(u) for u in urls), urls
        assert "/openapi.json" in urls
        for url in urls:
            asset = await client.get(url)
            assert asset.status_code == 200, url
            expected = docs.ASSETS.get(url.rpartition("/")[2], "application/json")
            assert asset.headers["content-type"].split(";")[0] == expected, url
    policy = csp(r)
    assert policy["connect-src"] == "'self'" and policy["default-src"] == "'none'"
    assert "unsafe-eval" not in policy["script-src"]


async def test_the_openapi_document_lists_the_contract_only() -> None:
    async with app_client(make_settings("memory")) as client:
        schema = (await client.get("/openapi.json")).json()
    assert schema["info"]["title"] == "chat-history" and "servers" not in schema
    assert {"/v1/chat", "/v1/sessions/{session_id}/messages", "/healthz"} <= set(schema["paths"])
    assert not {"/", "/docs", "/static/{name}", "/openapi.json"} & set(schema["paths"])


async def test_redoc_is_off() -> None:
    async with app_client(make_settings("memory")) as client:
        assert (await client.get("/redoc")).status_code == 404


async def test_swagger_ui_is_version_5_which_renders_openapi_3_1() -> None:
    async with app_client(make_settings("memory")) as client:
        bundle = (await client.get("/docs/assets/swagger-ui-bundle.js")).text
        openapi = (await client.get("/openapi.json")).json()
    assert openapi["openapi"].startswith("3.1")
    assert re.search(r'"5\.\d+\.\d+"', bundle), "Swagger UI 4 cannot render OpenAPI 3.1"


async def test_pages_and_assets_are_counted_by_route_never_unmatched() -> None:
    paths = ["/", "/static/app.js", "/static/app.css", "/static/favicon.svg", "/docs",
             "/openapi.json", "/docs/assets/swagger-ui.css", "/docs/assets/nope",
             "/static/nope"]  # fmt: skip
    async with app_client(make_settings("memory")) as client:
        for path in paths:
            await client.get(path)
        text = (await client.get("/metrics")).text
    counted = dict(
        re.findall(r'chat_http_requests_total\{method="GET",route="([^"]+)",status="(\d+)"', text)
    )
    expected = {"/": "200", "/docs": "200", "/openapi.json": "200"}
    assert expected.items() <= counted.items()
    assert 'route="unmatched"' not in text
    assert 'route="/static/{name}",status="200"} 3.0' in text
    assert 'route="/static/{name}",status="404"} 1.0' in text
    assert 'route="/docs/assets/{name}",status="200"} 1.0' in text
    assert 'route="/docs/assets/{name}",status="404"} 1.0' in text


async def test_without_allowed_origins_no_cors_header_is_sent() -> None:
    async with app_client(make_settings("memory")) as client:
        r = await client.post(
            "/v1/chat", json={"message": "hi"}, headers={"Origin": "http://localhost:8081"}
        )
        preflight = await client.options(
            "/v1/chat",
            headers={"Origin": "http://localhost:8081", "Access-Control-Request-Method": "POST"},
        )
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in preflight.headers


async def test_allowed_origins_get_cors_and_preflights_are_stamped_and_counted() -> None:
    allowed, other = "http://127.0.0.1:8081", "http://127.0.0.1:9"
    settings = make_settings("memory", cors_allow_origins=allowed)
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with app_client(settings) as client:
        preflight = await client.options("/v1/chat", headers={"Origin": allowed, **ask})
        refused = await client.options("/v1/chat", headers={"Origin": other, **ask})
        r = await client.post("/v1/chat", json={"message": "hi"}, headers={"Origin": allowed})
        error = await client.get("/v1/sessions/none/messages", headers={"Origin": allowed})
        text = (await client.get("/metrics")).text
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == allowed
    assert set(preflight.headers["access-control-allow-methods"].split(", ")) == {
        "GET", "POST", "DELETE"
    }  # fmt: skip
    assert preflight.headers["x-served-by"] == "memory-test"
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    for answer in (r, error):  # the page can read errors too
        assert answer.headers["access-control-allow-origin"] == allowed
        assert "X-Served-By" in answer.headers["access-control-expose-headers"]
        assert "access-control-allow-credentials" not in answer.headers
    assert error.status_code == 404
    assert 'method="OPTIONS",route="cors_preflight",status="200"} 1.0' in text
    assert 'route="unmatched"' not in text


@pytest.mark.parametrize(
    "value", ["*", "http://localhost:8080/chat", "localhost:8080", "ftp://x", "http://a b"]
)
def test_cors_origins_must_be_exact_origins(value: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings(cors_allow_origins=value)


def test_cors_origins_are_normalized_as_browsers_send_them() -> None:
    settings = Settings(cors_allow_origins=" HTTP://Localhost:8080/ ,,https://[::1]:8443")
    assert settings.cors_origins == ("http://localhost:8080", "https://[::1]:8443")
    assert Settings().cors_origins == ()
