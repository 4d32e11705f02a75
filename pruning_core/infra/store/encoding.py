"""Values in and out of the store: JSON columns, per-layer tables as JSON rows, strict JSON for export."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "tolist") and hasattr(value, "detach"):  # torch tensor, without importing torch
        return value.detach().cpu().tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any, what: str) -> str:
    """`value` as JSON text (numpy, tensors, sets and paths included), else a ValueError naming `what`."""
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON serialisable: {e}") from None


def loads(text: str | None, default: Any = None) -> Any:
    """A JSON column's value; `default` for NULL."""
    return default if text is None else json.loads(text)


def encode_cell(value: Any) -> Any:
    """A DataFrame cell as JSON, keeping tuples (e.g. layer shapes) apart from lists."""
    if isinstance(value, tuple):
        return {"$tuple": [encode_cell(v) for v in value]}
    if isinstance(value, list):
        return [encode_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode_cell(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [encode_cell(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NaT or value is pd.NA:
        return None
    return value


def decode_cell(value: Any) -> Any:
    """The inverse of `encode_cell`."""
    if isinstance(value, dict):
        if set(value) == {"$tuple"}:
            return tuple(decode_cell(v) for v in value["$tuple"])
        return {k: decode_cell(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_cell(v) for v in value]
    return value


def encode_layers(df: pd.DataFrame) -> tuple[str, list[tuple[int, str | None, str]]]:
    """A per-layer table as (its columns and dtypes as JSON, one (position, name, JSON row) per layer)."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"layers must be a pandas DataFrame, got {type(df).__name__}")
    columns = list(df.columns)
    if any(not isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise ValueError(f"layer table columns must be unique strings, got {columns!r}")
    meta = dumps({"columns": columns, "dtypes": [str(df[c].dtype) for c in columns]}, "layer columns")
    rows = []
    for position, record in enumerate(df.itertuples(index=False, name=None)):
        cells = dict(zip(columns, record))
        name = cells.get("name")
        rows.append((position, None if name is None else str(name),
                     dumps([encode_cell(v) for v in record], "layer row")))
    return meta, rows


def decode_layers(meta_text: str, row_texts: Sequence[str]) -> pd.DataFrame:
    """The table `encode_layers` was given, with the same columns and dtypes."""
    meta = json.loads(meta_text)
    columns, dtypes = meta["columns"], meta["dtypes"]
    data = [[decode_cell(v) for v in json.loads(r)] for r in row_texts]
    df = pd.DataFrame.from_records(data, columns=columns) if data else pd.DataFrame(
        {c: pd.Series([], dtype="object") for c in columns})
    for column, dtype in zip(columns, dtypes):
        if dtype == "object":
            df[column] = df[column].astype(object)
            continue
        with contextlib.suppress(TypeError, ValueError):
            df[column] = df[column].astype(dtype)
    return df


def plain(value: Any) -> Any:
    """A value as strict JSON (NaN -> None, tuples -> lists, numpy -> Python), for export."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if value is pd.NaT or value is pd.NA:
        return None
    return value


def frame_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as a list of strict-JSON row dicts."""
    return [plain(r) for r in df.to_dict("records")]


def check_id(value: Any, what: str = "run id") -> int:
    """An integer id (numpy integers included; bools and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def number(value: Any, what: str) -> float | None:
    """A number (numpy/torch scalars included) as float, None as None, anything else refused."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


def text(value: Any) -> str | None:
    """A value for a TEXT column (None stays NULL)."""
    return None if value is None else str(value)


def scalar(value: Any) -> float | None:
    """A summary entry as a float column value; None for anything that is not a plain number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


SQL_CHUNK = 500   # bound parameters per query (SQLite allows at least 999)


def chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """`items` in lists of at most `size` (queries that bind more parameters than SQLite allows at once)."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
