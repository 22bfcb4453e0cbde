"""Refresh or verify the JavaScript the book ships in `vendor/` (MathJax 3, require.js, the widget manager).

    python tools/vendor_js.py --check     # offline: every file in vendor/SHA256SUMS is present and intact,
                                          # and vendor/ holds no file that SHA256SUMS does not list
    python tools/vendor_js.py             # re-fetch the pinned packages with `npm pack`, re-extract, verify
    python tools/vendor_js.py --repin     # after changing a version below: fetch, extract, print new pins,
                                          # rewrite vendor/SHA256SUMS (review the diff before committing)

The book must render math and widgets with no internet, so `_config.yml` points Sphinx's `mathjax_path`
and myst-nb's `nb_ipywidgets_js` at copies of these files that `html_static_path: [vendor]` puts in
`_build/html/_static/`. Packages are fetched by name with `npm pack NAME@VERSION` from whatever registry
npm is configured for; each tarball's sha256 must match the pin below, and every extracted file must
match `vendor/SHA256SUMS`. Only the files the book loads are extracted (plus licenses).

Left out on purpose:
- MathJax: only `es5/tex-chtml-full.js` (all TeX extensions built in, so nothing is autoloaded) and the
  CHTML woff-v2 fonts it asks for; no SVG output, no speech-rule engine, no MathML input.
- html-manager: only `dist/embed-amd.js` and its three Font Awesome 5 woff2 fonts (the woff/ttf/eot/svg
  fallbacks are for old browsers). embed-amd.js is one file holding six AMD modules (base, controls,
  their ipywidgets-7 twins, html-manager, libembed-amd): no webpack chunks are loaded at run time. It
  finds its fonts next to the URLs require.js gives its modules, which `vendor/local/widgets-glue.js`
  (ours, not fetched) points at `_static/html-manager/`.
- requirejs: only `require.js`.

Hand-written files, kept as they are by a refresh and covered by SHA256SUMS: `vendor/local/*`,
`vendor/requirejs/LICENSE` (the npm package has no LICENSE file; this is the MIT notice from the header
of require.js) and `vendor/html-manager/LICENSE` (likewise; ipywidgets' BSD-3-Clause text).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "vendor"
SUMS = VENDOR / "SHA256SUMS"
UNPINNED = {"SHA256SUMS", "README.md"}  # the only files in vendor/ that SHA256SUMS does not list


@dataclass(frozen=True)
class Package:
    name: str  # npm package name
    version: str  # exact version, never a range
    tarball_sha256: str  # sha256 of the tarball `npm pack` writes
    dest: str  # folder under vendor/
    # tarball member (glob allowed) -> path under vendor/<dest>/; a target ending in "/" or empty keeps
    # the member's file name in that folder
    files: dict[str, str] = field(default_factory=dict)


PACKAGES = [
    Package(
        name="mathjax",
        version="3.2.2",
        tarball_sha256="1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09",
        dest="mathjax",
        files={
            "package/LICENSE": "LICENSE",
            "package/es5/tex-chtml-full.js": "es5/tex-chtml-full.js",
            "package/es5/output/chtml/fonts/woff-v2/*.woff": "es5/output/chtml/fonts/woff-v2/",
        },
    ),
    Package(
        name="requirejs",
        version="2.3.8",
        tarball_sha256="777158e89275e16bd51aec3ef714fbcb5dc45789e7078659933bc814916d7dec",
        dest="requirejs",
        files={"package/require.js": "require.js"},
    ),
    Package(
        # 1.0.x is the line ipywidgets 8.1.x asks for (ipywidgets._version.__html_manager_version__)
        name="@jupyter-widgets/html-manager",
        version="1.0.15",
        tarball_sha256="2b9d65cb7913e1c7d671757a10008b32c9c2448d4429513371e55c07d6107638",
        dest="html-manager",
        files={
            "package/dist/embed-amd.js": "embed-amd.js",
            "package/dist/*.woff2": "",
            "package/dist/embed.js.LICENSE.txt": "THIRD-PARTY-NOTICES.txt",
        },
    ),
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_hand_written(rel: str) -> bool:
    """Files under vendor/ that we wrote (glue code, license notes) rather than extracted."""
    return rel.startswith("local/") or rel in ("requirejs/LICENSE", "html-manager/LICENSE")


def read_sums(path: Path = SUMS) -> dict[str, str]:
    """Parse a `sha256sum`-style file: '<hex>  <path relative to vendor/>' per line."""
    sums: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"{path}:{n}: expected '<64 hex digits>  <path>', got {line!r}")
        sums[rel] = digest
    return sums


def check(vendor: Path = VENDOR) -> list[str]:
    """Problems found comparing vendor/ with its SHA256SUMS (empty list: all good). No network."""
    sums_file = vendor / "SHA256SUMS"
    if not sums_file.exists():
        return [f"missing {sums_file}"]
    problems = []
    sums = read_sums(sums_file)
    for rel, digest in sums.items():
        p = vendor / rel
        if not p.is_file():
            problems.append(f"missing vendor/{rel}")
        elif sha256(p) != digest:
            problems.append(f"checksum mismatch: vendor/{rel}")
    # the book copies all of vendor/ into _static/: a file nobody pinned would ship unchecked
    on_disk = {p.relative_to(vendor).as_posix() for p in vendor.rglob("*") if p.is_file() or p.is_symlink()}
    for rel in sorted(on_disk - set(sums) - UNPINNED):
        problems.append(f"not listed in SHA256SUMS: vendor/{rel} (delete it, or add it and run --repin)")
    return problems


def npm_pack(pkg: Package, workdir: Path) -> Path:
    """Fetch NAME@VERSION as a tarball into workdir with the user's npm (and its registry setting)."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm not found: install Node.js (npm) to refresh vendor/, or run with --check")
    out = subprocess.run(
        [npm, "pack", "--json", f"{pkg.name}@{pkg.version}"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    info = json.loads(out)
    return workdir / info[0]["filename"]


def extract(pkg: Package, tarball: Path, vendor: Path) -> list[str]:
    """Copy the wanted members of the tarball into vendor/<dest>/; return their paths under vendor/."""
    written = []
    with tarfile.open(tarball, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        for pattern, target in pkg.files.items():
            hits = [m for m in members if fnmatch.fnmatchcase(m.name, pattern)]
            if not hits:
                raise SystemExit(f"{pkg.name}@{pkg.version}: no file matches {pattern!r} in the tarball")
            for m in hits:
                rel = target + Path(m.name).name if target == "" or target.endswith("/") else target
                out = vendor / pkg.dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(m).read())  # no tar.extract: names are ours, not the tarball's
                written.append(f"{pkg.dest}/{rel}")
    return written


def refresh(repin: bool) -> int:
    written: list[str] = []
    with tempfile.TemporaryDirectory(prefix="minillm-vendor-") as tmp:
        for pkg in PACKAGES:
            tarball = npm_pack(pkg, Path(tmp))
            got = sha256(tarball)
            if got != pkg.tarball_sha256:
                if not repin:
                    print(
                        f"{pkg.name}@{pkg.version}: tarball sha256 {got} != pinned {pkg.tarball_sha256}; "
                        "if you changed the version on purpose, run with --repin",
                        file=sys.stderr,
                    )
                    return 1
                print(f'{pkg.name}@{pkg.version}: new pin tarball_sha256="{got}"')
            written += extract(pkg, tarball, VENDOR)
    files = sorted(
        p.relative_to(VENDOR).as_posix()
        for p in VENDOR.rglob("*")
        if p.is_file() and p.name not in ("SHA256SUMS", "README.md")
    )
    stale = [f for f in files if f not in written and not is_hand_written(f)]
    for f in stale:  # left over from an older version: delete them by hand after checking
        print(f"not from any pinned package (stale?): vendor/{f}", file=sys.stderr)
    if repin:
        SUMS.write_text("".join(f"{sha256(VENDOR / f)}  {f}\n" for f in files))
        print(f"wrote {SUMS.relative_to(ROOT)} ({len(files)} files); update the pins above in {__file__}")
    problems = check()
    listed = set(read_sums())
    problems += [f"extracted but not in SHA256SUMS: vendor/{w}" for w in written if w not in listed]
    problems += [f"in vendor/ but not in SHA256SUMS: vendor/{f}" for f in files if f not in listed]
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        size = sum((VENDOR / f).stat().st_size for f in listed)
        print(f"vendor/: {len(listed)} files, {size / 1e6:.2f} MB, all checksums match")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="verify vendor/ against SHA256SUMS (offline)")
    mode.add_argument("--repin", action="store_true", help="accept new tarballs and rewrite SHA256SUMS")
    args = ap.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        if not problems:
            print(f"vendor/: {len(read_sums())} files match SHA256SUMS")
        return 1 if problems else 0
    return refresh(repin=args.repin)


if __name__ == "__main__":
    sys.exit(main())
