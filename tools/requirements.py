"""Print minillm's requirements (core + the `dev` extra) one per line, for `make wheelhouse`.

    python tools/requirements.py [--no-torch]

torch is listed by itself in the wheelhouse step (its pin decides CPU vs CUDA wheels), hence --no-torch.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
if "--no-torch" in sys.argv[1:]:
    reqs = [r for r in reqs if not r.replace(" ", "").lower().startswith("torch")]
print("\n".join(reqs))
