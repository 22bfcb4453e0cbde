"""The built book in a real browser, offline: no request leaves localhost, math, figures and widgets render.

`make browser` builds the book, then runs this file (`pytest -m browser tests`). The book in
`_build/html` is served by `http.server` on 127.0.0.1 and opened in headless Debian Chromium driven by
Playwright's Python client (the system browser: Playwright never downloads one here). Every request
the pages make is recorded; any whose host is not 127.0.0.1/localhost fails the test (and is aborted,
so the test behaves the same with or without internet). Full-page screenshots land in
`_build/screenshots/` for a human to look at. Chromium is installed with apt only when asked
(MINILLM_INSTALL_BROWSER=1, root); without it, or when installing fails (offline), the test skips.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
# every chapter folder of notebooks/ must show rendered math, a figure and a widget in the book
CHAPTERS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("[0-9][0-9]_*") if p.is_dir())
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


INSTALL_OPT_IN = "MINILLM_INSTALL_BROWSER"  # =1: allowed to apt-get install chromium (CI, `make browser`)
APT_PACKAGES = ["chromium", "fonts-noto-cjk", "fonts-noto-color-emoji"]  # fonts: readable screenshots only


def find_chromium() -> str:
    """Path of Debian's chromium. Installs it with apt only on explicit opt-in (MINILLM_INSTALL_BROWSER=1, as root);
    skips when it is missing, or when the install fails (offline, no apt, not root)."""
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    how = f"`sudo apt-get install -y chromium` (or set {INSTALL_OPT_IN}=1 as root), then `make browser`"
    if os.environ.get(INSTALL_OPT_IN) != "1":
        pytest.skip(f"Debian's chromium is not installed: run {how}")
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        pytest.skip(f"{INSTALL_OPT_IN}=1 but installing needs root and apt-get: run {how}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update"], check=True, env=env, timeout=600, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", *APT_PACKAGES], check=True, env=env, timeout=1200,
                       capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        pytest.skip(f"could not install chromium with apt-get ({type(e).__name__}; offline?): run {how}")
    if not os.access("/usr/bin/chromium", os.X_OK):
        pytest.skip(f"apt-get ran but /usr/bin/chromium is missing: run {how}")
    return "/usr/bin/chromium"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def server():
    """Serve _build/html on 127.0.0.1 at a free port, in a daemon thread."""
    if not (HTML / "index.html").exists():
        pytest.skip("no built book in _build/html: run `make book` first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.timeout = 10
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def context(server, tmp_path_factory):
    """A headless Chromium context with a fresh profile that records every request."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python client")
    executable = find_chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
            service_workers="block",
        )
        ctx.set_default_timeout(TIMEOUT_MS)
        ctx.requests = []  # every URL any page asked for
        ctx.failures = []  # (url, why) of requests that failed or answered >= 400
        ctx.on("request", lambda req: ctx.requests.append(req.url))
        ctx.on("requestfailed", lambda req: ctx.failures.append((req.url, req.failure)))
        ctx.on("response", lambda r: r.status >= 400 and ctx.failures.append((r.url, f"HTTP {r.status}")))
        # abort anything not local, so the outcome does not depend on this machine's network
        ctx.route(lambda url: not _is_local(url), lambda route: route.abort())
        yield ctx
        ctx.close()


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.hostname in LOCAL_HOSTS


def _visit(context, server: str, rel: str, shot: str):
    """Open a page, let it settle, screenshot it; returns (page, external URLs, local failures, js errors)."""
    n_req, n_fail = len(context.requests), len(context.failures)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/{rel}", wait_until="load")
    page.wait_for_load_state("networkidle")
    # MathJax typesets after load; wait for it (and its fonts) when the page uses it
    page.evaluate("""async () => {
        if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
        await document.fonts.ready;
    }""")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
    external = [u for u in context.requests[n_req:] if not _is_local(u)]
    failed = [f"{url} ({why})" for url, why in context.failures[n_fail:] if urlsplit(url).hostname in LOCAL_HOSTS]
    return page, external, failed, errors


def _chapter_pages(chapter: str) -> list[str]:
    return sorted(p.relative_to(HTML).as_posix() for p in (HTML / chapter).glob("*.html"))


def test_index_page_is_local_only(context, server):
    page, external, failed, errors = _visit(context, server, "index.html", "index")
    assert not external, f"the index page requested non-local URLs: {external}"
    assert not failed, f"local requests failed: {failed}"
    assert not errors, f"JavaScript errors on the index page: {errors}"
    assert "minillm" in page.title()
    page.close()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_notebooks_render_math_figures_and_widgets(context, server, chapter):
    pages = _chapter_pages(chapter)
    assert pages, f"no HTML pages under _build/html/{chapter}: is the chapter in _toc.yml?"
    seen = {"math": [], "figure": [], "widget": []}
    problems = []
    for rel in pages:
        page, external, failed, errors = _visit(context, server, rel, rel.replace("/", "__")[:-5])
        problems += [f"{rel}: non-local request {u}" for u in external]
        problems += [f"{rel}: failed local request {f}" for f in failed]
        problems += [f"{rel}: JavaScript error {e}" for e in errors]

        n_math = page.locator("span.math, div.math").count()  # TeX waiting for MathJax, in the HTML
        if n_math:
            rendered = page.locator("mjx-container").count()
            tex_errors = page.locator("mjx-merror").count()
            fonts = page.evaluate("""() => [...document.fonts]
                .filter(f => f.family.includes('MJXTEX') && f.status === 'loaded').length""")
            if rendered < n_math or tex_errors or not fonts:
                problems.append(
                    f"{rel}: {n_math} math elements, {rendered} rendered by MathJax, "
                    f"{tex_errors} TeX errors, {fonts} MathJax fonts loaded"
                )
            else:
                seen["math"].append(rel)

        images = page.evaluate("""() => [...document.querySelectorAll('.cell_output img')]
            .map(i => ({src: i.currentSrc, ok: i.complete && i.naturalWidth > 0}))""")
        problems += [f"{rel}: output image did not load: {i['src']}" for i in images if not i["ok"]]
        if images and all(i["ok"] for i in images):
            seen["figure"].append(rel)

        n_views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
        if n_views:
            widgets = page.locator(".cell_output .jupyter-widgets:not(.widget-error)")
            try:
                widgets.first.wait_for(state="visible", timeout=TIMEOUT_MS)
                seen["widget"].append(rel)
            except Exception:  # Playwright's TimeoutError; reported below with the page's state
                problems.append(f"{rel}: {n_views} saved widget views but no visible rendered widget")
            n_err = page.locator(".widget-error").count() + page.get_by_text("Error displaying widget").count()
            if n_err:
                problems.append(f"{rel}: {n_err} widgets failed to render")
        page.close()

    assert not problems, "\n".join(problems)
    for what, where in seen.items():
        assert where, f"no notebook page of {chapter} showed a rendered {what} (looked at {pages})"


def test_search_works_offline(context, server):
    page, external, failed, errors = _visit(context, server, "search.html?q=tokenization", "search")
    results = page.locator("#search-results ul.search li")
    results.first.wait_for(state="attached", timeout=TIMEOUT_MS)
    assert results.count() > 0, "search for 'tokenization' found nothing"
    assert not external, f"the search page requested non-local URLs: {external}"
    assert not failed, f"local requests failed: {failed}"
    assert not errors, f"JavaScript errors on the search page: {errors}"
    page.close()
