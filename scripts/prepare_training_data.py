"""Prepare the training/evaluation files the shipped models use, from ../shared/data, into an ignored folder.

Writes OUT/ (default .gpu/data):
  lccc_train.jsonl, lccc_heldout.jsonl   LCCC-base valid split 90/10 by a hash of each dialog (the held-out
                                         10% is our LCCC validation set: never trained on)
  chatterbot_persona/                    the ChatterBot corpus without english/coding.yml (Python code answers,
                                         "Sure. Here's quicksort in Python: ...") and english/tech_support.yml
                                         (1,050 repeated troubleshooting pairs): greetings and bot persona only
  and copies of the source files the training commands read. Nothing here is committed.
Usage: python scripts/prepare_training_data.py [--shared ../shared/data] [--out .gpu/data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.readers import read_lccc  # noqa: E402

COPIES = [
    "squad/train-v1.1.json",
    "squad/dev-public-v1.1.json",
    "cmrc2018/cmrc2018_train.json",
    "cmrc2018/cmrc2018_trial.json",
    "cmrc2018/cmrc2018_dev-public.json",
    "dailydialog/train/dialogues_train.txt",
    "dailydialog/validation/dialogues_validation.txt",
    "lccc/cdial-gpt-toy/toy_train.txt",
]

NOT_PERSONA = {"coding.yml", "tech_support.yml"}  # left out of chatterbot_persona (see the docstring)


def is_heldout(turns: tuple[str, ...]) -> bool:
    digest = hashlib.sha256("\n".join(turns).encode("utf-8")).digest()
    return digest[0] < 26  # about 10%


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", default=".gpu/data")
    args = parser.parse_args()
    shared, out = Path(args.shared), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIES:
        shutil.copyfile(shared / name, out / Path(name).name)
    shutil.copytree(shared / "chatterbot_corpus", out / "chatterbot_corpus", dirs_exist_ok=True)
    shutil.copytree(
        shared / "chatterbot_corpus",
        out / "chatterbot_persona",
        dirs_exist_ok=True,
        ignore=lambda _folder, names: [name for name in names if name in NOT_PERSONA],
    )
    dialogs, report = read_lccc(shared / "lccc" / "LCCC-base_valid.json")
    counts = {"train": 0, "heldout": 0}
    with (
        (out / "lccc_train.jsonl").open("w", encoding="utf-8") as train,
        (out / "lccc_heldout.jsonl").open("w", encoding="utf-8") as heldout,
    ):
        for dialog in dialogs:
            split = "heldout" if is_heldout(dialog.turns) else "train"
            counts[split] += 1
            (heldout if split == "heldout" else train).write(
                json.dumps({"dialog": list(dialog.turns)}, ensure_ascii=False) + "\n"
            )
    print(  # noqa: T201
        json.dumps(
            {
                "lccc_dialogs": counts,
                "lccc_skipped": report.skipped,
                "out": str(out),
            }
        )
    )


if __name__ == "__main__":
    main()
