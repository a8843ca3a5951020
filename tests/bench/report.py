"""Figures: percentiles, tables and the JSON file of a run."""

from __future__ import annotations

import json
import math
from pathlib import Path


def percentiles(values: list[float], points=(50, 95, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles and the max of values (None when empty)."""
    if not values:
        return {**{f"p{p}": None for p in points}, "max": None, "n": 0}
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for p in points:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out[f"p{p}"] = ordered[rank - 1]
    out["max"] = ordered[-1]
    out["n"] = len(ordered)
    return out


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    """A plain-text table with a title line."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title]
    for index, row in enumerate(cells):
        lines.append("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
