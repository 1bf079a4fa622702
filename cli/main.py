"""The `s2s` command: one argparse parser whose sub-commands live in small modules.

Each module registers its own sub-commands; none of them imports torch, gradio or a database driver
at import time, so `s2s --help` is instant and the UI image does not need torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = ("cli.model_commands", "cli.db_commands", "cli.service_commands")
# Commands whose module does not import torch: building only their parser keeps `s2s worker --check` (a
# container healthcheck, run every few seconds) and `s2s db upgrade` fast, and working in the UI image.
LIGHT_COMMANDS = {command: "cli.service_commands" for command in ("up", "worker", "ask", "chat", "batch")}
LIGHT_COMMANDS["db"] = "cli.db_commands"


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2s", description="Seq2Seq chat and reading-comprehension service."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in modules:
        try:
            importlib.import_module(name).register(subparsers)
        except ModuleNotFoundError as error:
            if error.name not in (name, "torch"):  # no torch (the UI image): no model commands
                raise
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    light = LIGHT_COMMANDS.get(argv[0]) if argv else None
    parser = build_parser((light,) if light else COMMAND_MODULES)
    args = parser.parse_args(argv)
    result = args.handler(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
