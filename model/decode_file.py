"""decode.json: a checkpoint's hand-edited decoding defaults, readable without torch (the UI reads them too).

A checkpoint folder may hold a decode.json beside model.pt; its settings override the decoding stored in
model.pt (checkpoint.load_checkpoint applies them). A folder of several checkpoints routes tasks and
languages to sub-folders with models.json ({"chat/en": "chat", ...}); `decode_settings_for` follows it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import DecodeConfig

DECODE_FILE = "decode.json"
MODELS_FILE = "models.json"


def read_decode_file(path: Path) -> dict[str, Any]:
    """The settings in the decode.json at `path` ({} if there is none). Unlike the copy inside model.pt (written
    by this code), the file is edited by hand, so an unknown setting is an error."""
    if not path.exists():
        return {}
    settings = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(settings, dict):
        raise ValueError(f"{path} must hold a JSON object of decoding settings")
    unknown = sorted(set(settings) - set(DecodeConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{path}: unknown decoding setting(s): {', '.join(unknown)}")
    return settings


def decode_settings_for(checkpoint: Path, route: str) -> dict[str, Any]:
    """The decode.json settings of the checkpoint that serves `route` (e.g. "chat/en") under `checkpoint`: a
    single checkpoint folder, or a folder with models.json. {} where there is no such file or route."""
    manifest = checkpoint / MODELS_FILE
    if manifest.exists():
        routes = json.loads(manifest.read_text(encoding="utf-8"))
        if route not in routes:
            return {}
        checkpoint = checkpoint / routes[route]
    return read_decode_file(checkpoint / DECODE_FILE)
