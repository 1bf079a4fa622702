"""Shared pieces for the deployment tests: the compose file, the Settings aliases, the generator script."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str) -> ModuleType:
    """A module from scripts/ (not a package), e.g. load_script("settings_table")."""
    path = REPO_ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8")))


@pytest.fixture(scope="session")
def setting_names() -> set[str]:
    """Every environment variable the Settings object reads."""
    return {field.alias for field in Settings.model_fields.values() if field.alias}


@pytest.fixture(scope="session")
def settings_table() -> ModuleType:
    return load_script("settings_table")
