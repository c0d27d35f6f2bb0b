"""The tree itself: no unresolved merge conflicts in any tracked text file."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKERS = ("<<<<<<< ", ">>>>>>> ", "=======\n")


def test_no_conflict_markers_in_tracked_files():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".toml", ".yaml", ".yml", ".sh", ".json", ".txt", ""):
            continue
        try:
            lines = path.read_text().splitlines(keepends=True)
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        found += [f"{name}:{i + 1}" for i, line in enumerate(lines)
                  if line.startswith(MARKERS[:2]) or line == MARKERS[2]]
    assert not found, f"unresolved merge conflicts: {found}"
