"""docs/contracts.md names only what exists: every `from X import a, b` of its code blocks, every dotted name in
backticks that starts with one of the packages (a module, or a module's attribute), and every `call(` in a
bullet that opens with a module (`- \`flows.chat\`: ... \`send(...)\``) is imported and looked up, so a rename
that forgets the page fails here."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = REPO_ROOT / "docs" / "contracts.md"
PACKAGES = ("settings", "model", "storage", "workers", "flows", "supervisor", "ui", "cli")
DOTTED = re.compile(r"`(" + "|".join(PACKAGES) + r")((?:\.[A-Za-z_]\w*)+)")
BULLET = re.compile(
    r"^- `((?:" + "|".join(PACKAGES) + r")(?:\.\w+)*)`(.*?)(?=^- |^$|\Z)", re.MULTILINE | re.DOTALL
)
CALL = re.compile(r"`([A-Za-z_]\w*)\(")
FROM_IMPORT = re.compile(r"^from ((?:" + "|".join(PACKAGES) + r")(?:\.\w+)*) import (.+)$", re.MULTILINE)


def _resolves(dotted: str) -> bool:
    """True if `dotted` is a module, or a module followed by attributes that exist."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            if not hasattr(found, name):
                return False
            found = getattr(found, name)
        return True
    return False


def named_in_contracts() -> list[str]:
    text = CONTRACTS.read_text(encoding="utf-8")
    names = {package + rest for package, rest in DOTTED.findall(text)}
    for module, imported in FROM_IMPORT.findall(text):
        names.update(f"{module}.{name.strip()}" for name in imported.split(","))
    for module, body in BULLET.findall(text):
        names.update(f"{module}.{call}" for call in CALL.findall(body))
    return sorted(names)


def test_every_name_the_contracts_give_exists() -> None:
    names = named_in_contracts()
    assert len(names) > 30  # the page was read
    assert [name for name in names if not _resolves(name)] == []


def test_the_check_catches_a_name_that_does_not_exist() -> None:
    assert _resolves("storage.db.transaction")
    assert not _resolves("model.inference.Answer")
    assert not _resolves("workers.redis_transport")
