"""Every ```python block of README.md and docs/**/*.md runs, so the docs cannot rot.

Blocks of one file run in order in one namespace, in a fresh temporary working directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


def _blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", [p for p in DOCS if _blocks(p)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_python_snippets_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INTERLOCK_DOCS_ROOT", str(ROOT))
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for number, block in enumerate(_blocks(path), start=1):
        code = compile(block, f"{path.relative_to(ROOT)}[block {number}]", "exec")
        exec(code, namespace)
    assert os.getcwd() == str(tmp_path)
