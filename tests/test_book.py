"""Static checks of the book: the vendored JavaScript, the config, the table of contents, the built HTML.

The book must work with no internet: every script, style sheet and font a built page loads comes from
the build itself. These tests read files only (no browser, no network):

- vendor/: each file matches vendor/SHA256SUMS (hashed here, independently of tools/vendor_js.py), and
  holds the pinned versions, the widget manager matching the installed ipywidgets;
- _config.yml: MathJax and the widget scripts point at vendored files, nothing remote is switched on;
- _toc.yml: every entry exists and every notebook is listed;
- _build/html (marked `book`: `make browser` runs them right after `make book`; skipped when there is
  no build): no page, nor a style sheet it loads, refers to a non-local script, style sheet, font or
  image; pages with math / widgets load the vendored copies.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "vendor"
HTML = ROOT / "_build" / "html"

_spec = importlib.util.spec_from_file_location("vendor_js", ROOT / "tools" / "vendor_js.py")
vendor_js = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("vendor_js", vendor_js)  # dataclasses look their module up there
_spec.loader.exec_module(vendor_js)


def load_yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


def is_external(url: str) -> bool:
    """True for a URL that leaves the book: has a host, or a scheme other than data:/blob:."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob"):
        return False
    return bool(parts.netloc) or bool(parts.scheme) or url.startswith("//")


def test_is_external_on_hand_picked_urls():
    for url in ["https://cdn.example.org/x.js", "http://a/b.css", "//fonts.example/f.woff2", "ftp://h/f"]:
        assert is_external(url), url
    for url in [
        "_static/x.js",
        "../../_static/mathjax/es5/tex-chtml-full.js?v=1",
        "/abs/local.css",
        "data:font/woff2;base64,AAAA",
        "blob:http://127.0.0.1/abc",
        "#top",
        "page.html",
    ]:
        assert not is_external(url), url


# --------------------------------------------------------------------------------------------- vendor/


def read_sums() -> dict[str, str]:
    sums = {}
    for line in (VENDOR / "SHA256SUMS").read_text().splitlines():
        digest, _, rel = line.partition("  ")
        assert re.fullmatch(r"[0-9a-f]{64}", digest) and rel, f"bad SHA256SUMS line: {line!r}"
        sums[rel] = digest
    return sums


def test_vendor_files_match_sha256sums():
    sums = read_sums()
    assert sums, "vendor/SHA256SUMS lists no files"
    bad = [
        rel
        for rel, digest in sums.items()
        if not (VENDOR / rel).is_file() or hashlib.sha256((VENDOR / rel).read_bytes()).hexdigest() != digest
    ]
    assert not bad, f"missing or changed vendored files (refresh with tools/vendor_js.py): {bad}"
    on_disk = {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()}
    unlisted = sorted(on_disk - set(sums) - {"SHA256SUMS", "README.md"})
    assert not unlisted, f"files in vendor/ that SHA256SUMS does not cover: {unlisted}"


def test_vendor_check_fails_on_unlisted_missing_and_changed_files(tmp_path):
    vendor = tmp_path / "vendor"
    shutil.copytree(VENDOR, vendor)
    assert vendor_js.check(vendor) == []
    (vendor / "mathjax" / "extra.js").write_text("alert(1)")  # shipped by the book, pinned by nobody
    rel = next(iter(read_sums()))
    (vendor / rel).write_bytes((vendor / rel).read_bytes() + b" ")
    problems = vendor_js.check(vendor)
    assert any("not listed in SHA256SUMS: vendor/mathjax/extra.js" in p for p in problems)
    assert f"checksum mismatch: vendor/{rel}" in problems and len(problems) == 2
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "vendor_js.py"), "--check"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr  # the committed vendor/ passes


def test_vendor_is_small_and_licensed():
    size = sum(p.stat().st_size for p in VENDOR.rglob("*") if p.is_file())
    assert size < 8e6, f"vendor/ is {size / 1e6:.1f} MB; keep only the files the book loads"
    for pkg in vendor_js.PACKAGES:
        assert (VENDOR / pkg.dest / "LICENSE").is_file(), f"vendor/{pkg.dest}/LICENSE is missing"


def test_vendored_files_are_the_pinned_versions():
    pins = {p.name: p.version for p in vendor_js.PACKAGES}
    for pkg in vendor_js.PACKAGES:
        assert re.fullmatch(r"\d+\.\d+\.\d+", pkg.version), f"{pkg.name}: pin an exact version, not {pkg.version}"
    mathjax = (VENDOR / "mathjax/es5/tex-chtml-full.js").read_text(encoding="utf-8")
    assert re.search(r'VERSION\s*=\s*"' + re.escape(pins["mathjax"]) + '"', mathjax), "not MathJax " + pins["mathjax"]
    assert pins["mathjax"].startswith("3."), "the book's config is written for MathJax 3"
    head = (VENDOR / "requirejs/require.js").read_text(encoding="utf-8")[:400]
    assert f"RequireJS {pins['requirejs']} " in head
    embed = (VENDOR / "html-manager/embed-amd.js").read_text(encoding="utf-8")
    assert 'define("@jupyter-widgets/controls"' in embed and 'define("@jupyter-widgets/base"' in embed
    assert f'"{pins["@jupyter-widgets/html-manager"]}"' in embed


def test_widget_manager_matches_installed_ipywidgets():
    """ipywidgets declares the html-manager range its widget state needs, e.g. '^1.0.1'."""
    from ipywidgets._version import __html_manager_version__ as wanted

    m = re.fullmatch(r"\^(\d+)\.(\d+)\.(\d+)", wanted)
    assert m, f"unexpected range format from ipywidgets: {wanted!r}"
    have = tuple(
        int(x)
        for x in dict((p.name, p.version) for p in vendor_js.PACKAGES)["@jupyter-widgets/html-manager"].split(".")
    )
    low = tuple(int(x) for x in m.groups())
    assert have[0] == low[0] and have >= low, f"vendored html-manager {have} does not satisfy {wanted}"


# --------------------------------------------------------------------------------------------- config


def test_config_uses_only_vendored_javascript():
    cfg = load_yaml("_config.yml")
    sx = cfg["sphinx"]["config"]
    assert sx["html_static_path"] == ["vendor"]
    assert not is_external(sx["mathjax_path"]), "mathjax_path must be a path inside vendor/"
    sums = read_sums()
    assert sx["mathjax_path"] in sums, f"{sx['mathjax_path']} is not a vendored file"
    scripts = sx["nb_ipywidgets_js"]
    assert list(scripts)[0] == "requirejs/require.js" and list(scripts)[-1] == "html-manager/embed-amd.js"
    for path, attrs in scripts.items():
        assert not is_external(path) and path in sums, f"nb_ipywidgets_js: {path} is not a vendored file"
        for key, value in (attrs or {}).items():
            assert not is_external(str(value)), f"nb_ipywidgets_js[{path}][{key}] points off the book: {value}"
    # the widget manager's fallback for unknown widget modules must not be a CDN
    assert "data-jupyter-widgets-cdn" in scripts["html-manager/embed-amd.js"]


def test_config_switches_off_remote_features():
    cfg = load_yaml("_config.yml")
    sx = cfg["sphinx"]["config"]
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert "sphinx_thebe" not in sx["extensions"]
    assert not sx.get("intersphinx_mapping"), "intersphinx would download inventories at build time"
    launch = cfg.get("launch_buttons", {})
    assert not launch.get("thebe") and not any(
        launch.get(k) for k in ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url")
    )
    analytics = cfg.get("html", {}).get("analytics", {})
    assert not analytics.get("google_analytics_id") and not analytics.get("plausible_analytics_domain")
    for ext in ("dollarmath", "amsmath"):
        assert ext in cfg["parse"]["myst_enable_extensions"]


# --------------------------------------------------------------------------------------------- toc


def toc_files() -> list[str]:
    toc = load_yaml("_toc.yml")
    assert toc["format"] == "jb-book"
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            assert "file" in e, f"_toc.yml entry without 'file' (only files are used here): {e}"
            files.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        assert part.get("caption"), "every part needs a caption"
        assert part.get("chapters"), f"part {part['caption']!r} lists no chapters: leave it out until it has one"
        walk(part["chapters"])
    return files


def test_toc_entries_exist_once():
    files = toc_files()
    missing = [f for f in files if not any((ROOT / (f + ext)).is_file() for ext in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"
    dupes = sorted({f for f in files if files.count(f) > 1})
    assert not dupes, f"_toc.yml lists these twice: {dupes}"


def test_every_notebook_is_in_the_toc():
    listed = set(toc_files())
    notebooks = [p for p in sorted(ROOT.glob("notebooks/**/*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
    notebooks += sorted(ROOT.glob("exercises/*.ipynb"))
    unlisted = [
        p.relative_to(ROOT).as_posix()
        for p in notebooks
        if p.relative_to(ROOT).with_suffix("").as_posix() not in listed
    ]
    assert not unlisted, f"notebooks missing from _toc.yml: {unlisted}"


def test_toc_parts():
    toc = load_yaml("_toc.yml")
    assert toc["root"] == "book/intro"
    captions = [p["caption"] for p in toc["parts"]]
    assert "Foundations" in captions and captions[-1] == "Appendix"


# --------------------------------------------------------------------------------------------- built HTML

# <link rel=...> values that only name another page, never make the browser fetch anything
NAVIGATION_RELS = {"index", "search", "next", "prev", "canonical", "alternate", "author", "license", "help"}
URL_IN_CSS = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")


class ResourceParser(HTMLParser):
    """Collects (what, url) for everything an HTML page makes the browser fetch."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.resources: list[tuple[str, str]] = []
        self.inline_css: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("style"):
            self.inline_css.append(a["style"])
        if tag == "script" and a.get("src"):
            self.resources.append(("script", a["src"]))
        elif tag == "link" and a.get("href"):
            rels = set((a.get("rel") or "").lower().split())
            if not rels <= NAVIGATION_RELS:
                self.resources.append((f"link rel={a.get('rel')}", a["href"]))
        elif tag in ("img", "iframe", "embed", "source", "video", "audio", "track", "input"):
            for key in ("src", "poster"):
                if a.get(key):
                    self.resources.append((tag, a[key]))
            for item in (a.get("srcset") or "").split(","):
                if item.strip():
                    self.resources.append((f"{tag} srcset", item.split()[0]))
        elif tag == "object" and a.get("data"):
            self.resources.append(("object", a["data"]))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.inline_css.append(data)


def built_pages() -> list[Path]:
    if not (HTML / "index.html").is_file():
        pytest.skip("no built book in _build/html: run `make book` first")
    # _static/*.html are the themes' Jinja macro files, not pages
    return sorted(p for p in HTML.rglob("*.html") if p.relative_to(HTML).parts[0] not in ("_static", "_sources"))


def parse(page: Path) -> ResourceParser:
    p = ResourceParser()
    p.feed(page.read_text(encoding="utf-8"))
    return p


def local_file(page: Path, url: str) -> Path:
    """The file in the build that a relative URL on `page` names (query and fragment dropped)."""
    path = urlsplit(urljoin(page.relative_to(HTML).as_posix(), url)).path
    return HTML / path.lstrip("/")


def css_problems(css_file: Path, seen: set[Path]) -> list[str]:
    """External url()/@import in a local style sheet, following its local @imports."""
    if css_file in seen or not css_file.is_file():
        return []
    seen.add(css_file)
    problems = []
    for m in URL_IN_CSS.finditer(css_file.read_text(encoding="utf-8", errors="replace")):
        url = m.group(1) or m.group(2)
        if is_external(url):
            problems.append(f"{css_file.relative_to(HTML)}: {url}")
        elif url.endswith(".css"):
            problems += css_problems((css_file.parent / urlsplit(url).path).resolve(), seen)
    return problems


@pytest.mark.book
def test_built_pages_load_nothing_from_the_web():
    problems, seen_css = [], set()
    for page in built_pages():
        rel = page.relative_to(HTML)
        parsed = parse(page)
        for what, url in parsed.resources:
            if is_external(url):
                problems.append(f"{rel}: {what} {url}")
            elif what.startswith("link") and urlsplit(url).path.endswith(".css"):
                problems += css_problems(local_file(page, url).resolve(), seen_css)
        for css in parsed.inline_css:
            problems += [f"{rel}: inline style {u or i}" for u, i in URL_IN_CSS.findall(css) if is_external(u or i)]
    assert seen_css, "no page loads a local style sheet: is this a Sphinx build?"
    assert not problems, "the built book refers to remote resources:\n" + "\n".join(problems)


@pytest.mark.book
def test_built_pages_load_their_local_scripts():
    missing = []
    for page in built_pages():
        for what, url in parse(page).resources:
            if (
                not is_external(url)
                and (what == "script" or what.startswith("link"))
                and not local_file(page, url).is_file()
            ):
                missing.append(f"{page.relative_to(HTML)}: {url}")
    assert not missing, "pages refer to files that are not in the build:\n" + "\n".join(missing)


@pytest.mark.book
def test_math_and_widget_pages_use_the_vendored_copies():
    mathjax = "_static/" + load_yaml("_config.yml")["sphinx"]["config"]["mathjax_path"]
    widget_js = ["_static/" + s for s in load_yaml("_config.yml")["sphinx"]["config"]["nb_ipywidgets_js"]]
    n_math = n_widgets = 0
    for page in built_pages():
        text = page.read_text(encoding="utf-8")
        scripts = [
            local_file(page, u).relative_to(HTML).as_posix()
            for what, u in parse(page).resources
            if what == "script" and not is_external(u)
        ]
        rel = page.relative_to(HTML)
        if re.search(r'class="math[ "]', text):
            n_math += 1
            assert mathjax in scripts, f"{rel} has math but does not load {mathjax}"
        if "application/vnd.jupyter.widget-state+json" in text:
            n_widgets += 1
            assert [s for s in scripts if s in widget_js] == widget_js, (
                f"{rel} has widgets but does not load {widget_js} in this order"
            )
    # the copies in the build are the vendored files, byte for byte
    for rel, digest in read_sums().items():
        built = HTML / "_static" / rel
        assert built.is_file() and hashlib.sha256(built.read_bytes()).hexdigest() == digest, f"_static/{rel}"
    assert n_math and n_widgets, f"expected pages with math and with widgets, found {n_math} and {n_widgets}"
