"""What a user meets before running anything: the licence, and no paths of one machine."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_licence_file_is_the_one_pyproject_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_no_tracked_file_names_a_path_of_one_machine() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.suffix == ".png" or path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        for needle in ("/work/", "/check/work", "../shared"):
            if needle in text:
                offenders.append(f"{name}: {needle}")
    assert offenders == []
