"""Fixtures of the chapter test files: `solution` and `stubs`, the names that the code cells of the chapter's
solution source define (solution or stub version, check cells left out). A test module that uses them names
its chapter in a module-level CHAPTER ("05")."""

from __future__ import annotations

import exercise_kit as kit
import pytest


@pytest.fixture(scope="module")
def solution(request) -> dict:
    return kit.load_namespace(kit.source(request.module.CHAPTER), solution=True)


@pytest.fixture(scope="module")
def stubs(request) -> dict:
    return kit.load_namespace(kit.source(request.module.CHAPTER), solution=False)
