"""environment.yml (for conda users) must list exactly the pip requirements of pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


def _environment_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml must have exactly one pip: section"
    return [r for r in pip_sections[0] if not r.startswith("-e")]


def _norm(req: str) -> str:
    return req.replace(" ", "").lower()


def test_environment_matches_pyproject():
    env = sorted(map(_norm, _environment_pip()))
    py = sorted(map(_norm, _pyproject_requirements()))
    missing = sorted(set(py) - set(env))
    extra = sorted(set(env) - set(py))
    assert not missing and not extra, f"environment.yml differs from pyproject: missing {missing}, extra {extra}"
    assert len(env) == len(set(env)), "environment.yml lists a requirement twice"


def test_environment_installs_the_package_and_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip, "environment.yml must install minillm itself (-e .)"
    assert any(isinstance(d, str) and d.startswith("python") for d in env["dependencies"])
