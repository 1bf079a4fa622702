"""A batch job's results as downloadable files: JSONL, CSV and SQuAD predictions JSON ({id: answer}).

Rows come from storage.qa.export_results (via ui.handlers.job_results); this module only formats and writes.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

CSV_FIELDS = ["id", "question", "answer", "score", "status", "error"]


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_squad_predictions(rows: list[dict[str, Any]]) -> str:
    """SQuAD's evaluation format: {question id: predicted answer}; unanswered items get ""."""
    return json.dumps({row["id"]: row["answer"] or "" for row in rows}, ensure_ascii=False, indent=1) + "\n"


def write_exports(rows: list[dict[str, Any]], job_id: str, directory: Path | None = None) -> list[str]:
    """Write the three files into a fresh directory; return their paths (JSONL, CSV, SQuAD JSON)."""
    target = directory or Path(tempfile.mkdtemp(prefix="s2s-export-"))
    files = {
        f"job-{job_id}.jsonl": to_jsonl(rows),
        f"job-{job_id}.csv": to_csv(rows),
        f"job-{job_id}-predictions.json": to_squad_predictions(rows),
    }
    paths = []
    for name, text in files.items():
        path = target / name
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths
