"""Print the project's requirements from pyproject.toml, one a line, for `pip install -r` in the Dockerfile.

    python scripts/image_requirements.py --without torch sentencepiece sacrebleu   # the UI image: no torch
    python scripts/image_requirements.py --only torch                              # the pinned torch

Standard library only: it runs in the bare Python image before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def requirements(*, without: set[str], only: set[str] | None, pyproject: Path = PYPROJECT) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    chosen = []
    for requirement in dependencies:
        name = requirement_name(requirement)
        if name in without or (only is not None and name not in only):
            continue
        chosen.append(requirement)
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--without", nargs="*", default=[], help="distribution names to leave out")
    parser.add_argument("--only", nargs="*", default=None, help="print only these distribution names")
    args = parser.parse_args()
    without = {requirement_name(name) for name in args.without}
    only = None if args.only is None else {requirement_name(name) for name in args.only}
    lines = requirements(without=without, only=only)
    if only is not None and len(lines) != len(only):
        parser.error(f"not all of {sorted(only)} are in {PYPROJECT.name}")
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
