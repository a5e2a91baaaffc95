"""The console's frame in a real browser: pages without the key, data only with it, the key asked once,
the nav at desktop and phone widths, and JavaScript errors caught by the fixture."""

from __future__ import annotations

import httpx

from tests.e2e.ui.conftest import NAV_LABELS


def test_pages_are_public_data_needs_the_key(console_server):
    url = console_server.url
    page = httpx.get(f"{url}/ui/chat", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-eval';" in csp and "frame-ancestors 'none'" in csp  # the browser tests run under it
    assert httpx.get(f"{url}/ui/static/vendor/htmx.min.js", timeout=10).status_code == 200
    assert httpx.get(f"{url}/ui/static/../routes.py", timeout=10).status_code == 404
    assert httpx.get(f"{url}/ui/api/workflows/runs", timeout=10).status_code == 401
    assert httpx.get(f"{url}/ui/api/workflows/runs", headers=console_server.headers, timeout=10).status_code == 200
    assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401
    # a page on another origin may not use the console's data routes (guards.py), the same origin may
    evil = {**console_server.headers, "Origin": "http://evil.example"}
    assert httpx.get(f"{url}/ui/api/workflows/runs", headers=evil, timeout=10).status_code == 403
    same = {**console_server.headers, "Origin": url}
    assert httpx.get(f"{url}/ui/api/workflows/runs", headers=same, timeout=10).status_code == 200


def test_key_is_asked_once_and_kept(console):
    page = console.page
    page.goto(console.server.url + "/ui/models")
    assert page.locator("#key-dialog").is_visible()
    page.fill("#api-key", console.server.key)
    page.click("#key-save")
    page.locator("#key-dialog").wait_for(state="hidden")
    assert page.evaluate("localStorage.getItem('athanor.apiKey')") == console.server.key
    page.click("a[data-nav=workflows]")
    page.wait_for_url("**/ui/workflows")
    assert not page.locator("#key-dialog").is_visible()  # kept in localStorage: not asked again
    assert page.locator("a[data-nav=workflows]").get_attribute("aria-current") == "page"
    labels = [a.inner_text().strip() for a in page.locator("nav a").all()]
    assert labels == NAV_LABELS


def test_phone_width_collapses_the_nav(console):
    page = console.page
    page.set_viewport_size({"width": 375, "height": 740})
    console.open("/ui/chat")
    nav = page.locator("#nav")
    assert not nav.is_visible()  # collapsed behind the menu button
    page.click("label.nav-button")
    assert nav.is_visible()
    box = page.locator("a[data-nav=knowledge]").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 375
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing wider than the phone
    console.shot("phone-nav")
    page.click("a[data-nav=knowledge]")
    page.wait_for_url("**/ui/knowledge")


def test_every_page_fits_a_phone(console):
    page = console.page
    page.set_viewport_size({"width": 375, "height": 740})
    console.open("/ui/chat")
    for path in ("/ui/chat", "/ui/models", "/ui/workflows", "/ui/knowledge"):
        page.goto(console.server.url + path)
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").is_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} is {width} px wide at phone width"


def test_a_javascript_error_is_caught(console):
    console.open("/ui/chat")
    console.page.evaluate("setTimeout(() => { throw new Error('boom from the test') }, 0)")
    console.page.wait_for_function("!document.getElementById('error-banner').hidden")
    assert "boom from the test" in console.page.inner_text("#error-banner")
    assert any("boom from the test" in e for e in console.errors)
    console.errors.clear()  # seen: the fixture would fail this test otherwise


def test_console_data_routes_answer_bad_input_with_4xx(console_server):
    url, headers = console_server.url, console_server.headers
    cases = {"/ui/api/workflows/runs/no-such-run/view": 404, "/ui/api/models/no-such-model/lineage": 404,
             "/ui/api/kb/no-such-kb/documents": 400, "/ui/api/kb/..%2F..%2Fetc/documents": 404,
             "/ui/api/workflows/runs?limit=0": 400, "/ui/static/%2e%2e/api.py": 404}
    for path, status in cases.items():
        r = httpx.get(url + path, headers=headers, timeout=30)
        assert r.status_code == status, (path, r.status_code, r.text)
        if path.startswith("/ui/api/"):
            assert r.json()["error"]["message"], path  # the OpenAI error shape, one line


def test_a_server_without_a_key_never_asks(server, browser):
    """The shared e2e server has no API key: the page loads data straight away, no dialog."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page, errors = context.new_page(), []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(server.url + "/ui/models")
        page.locator('#models-table tr[data-model="tiny"]').wait_for()
        assert not page.locator("#key-dialog").is_visible()
    finally:
        context.close()
    assert not errors, errors
