"""decode.json, read without torch: its checks, and finding the file of the checkpoint serving a route."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.decode_file import decode_settings_for, read_decode_file

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_file_means_no_overrides(tmp_path: Path) -> None:
    assert read_decode_file(tmp_path / "decode.json") == {}


@pytest.mark.parametrize(("text", "message"), [("[1]", "JSON object"), ('{"beam_sise": 4}', "beam_sise")])
def test_a_file_that_is_not_an_object_of_known_settings_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "decode.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_decode_file(path)


def test_a_route_leads_to_the_file_of_its_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text(json.dumps({"rc/en": "rc", "chat/en": "chat"}))
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "decode.json").write_text('{"beam_size": 10}')
    assert decode_settings_for(tmp_path, "chat/en") == {"beam_size": 10}
    assert decode_settings_for(tmp_path, "rc/en") == {}  # its folder has no decode.json
    assert decode_settings_for(tmp_path, "chat/zh") == {}  # no such route
    assert decode_settings_for(tmp_path / "chat", "chat/en") == {"beam_size": 10}  # a single checkpoint


def test_reading_it_does_not_load_torch() -> None:
    code = (
        "import sys; from model.decode_file import decode_settings_for; "
        "decode_settings_for(__import__('pathlib').Path('model/checkpoints'), 'chat/en'); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
