"""A batch job's results as text: JSONL, CSV and SQuAD predictions JSON ({id: answer}); the one exporter of
the UI's downloads and `s2s batch results`.

Rows come from flows.batch.results (storage.batch_jobs.export_results); this module only formats and writes.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Callable
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


FORMATS: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "jsonl": to_jsonl,
    "csv": to_csv,
    "squad": to_squad_predictions,
}


def render(rows: list[dict[str, Any]], kind: str) -> str:
    """The rows as one of FORMATS' texts ("jsonl", "csv" or "squad")."""
    return FORMATS[kind](rows)


def write_exports(rows: list[dict[str, Any]], job_id: str, directory: Path | None = None) -> list[str]:
    """Write the three files into a fresh directory; return their paths (JSONL, CSV, SQuAD JSON)."""
    target = directory or Path(tempfile.mkdtemp(prefix="s2s-export-"))
    files = {
        f"job-{job_id}.jsonl": render(rows, "jsonl"),
        f"job-{job_id}.csv": render(rows, "csv"),
        f"job-{job_id}-predictions.json": render(rows, "squad"),
    }
    paths = []
    for name, text in files.items():
        path = target / name
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths
