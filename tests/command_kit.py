"""Helpers shared by the tests of the `minillm` commands (test_commands.py, test_commands_sft.py)."""

from __future__ import annotations


def one_error(capsys, command: str, *fragments: str) -> str:
    """The captured stderr is exactly one line `minillm COMMAND: error: ...` containing every fragment."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"minillm {command}: error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]
