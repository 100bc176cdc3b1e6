"""Reading what ``sql-client.sh -f`` printed, and the SQL blocks of a markdown file."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_BORDER = re.compile(r"(\+-[-+]*\+)\s*$")


def result_sets(output: str) -> list[list[dict[str, str | None]]]:
    """Every result the client printed, in order: rows of {column: value} (``<NULL>`` -> None).

    A streaming result's changelog (``op`` +I/-U/+U/-D) is applied, so each set holds the final
    rows. ``Empty set`` counts as a result with no rows.
    """
    lines = output.splitlines()
    sets: list[list[dict[str, str | None]]] = []
    i = 0
    while i < len(lines):
        if lines[i].strip().endswith("Empty set"):
            sets.append([])
            i += 1
            continue
        if not (_BORDER.search(lines[i]) and i + 2 < len(lines) and lines[i + 1].startswith("|")):
            i += 1
            continue
        header = [h.strip() for h in lines[i + 1].strip().strip("|").split("|")]
        i += 3  # border, header, border
        rows: list[dict[str, str | None]] = []
        while i < len(lines) and lines[i].startswith("|"):
            values = [v.strip() for v in lines[i].strip().strip("|").split("|")]
            row = {h: (None if v == "<NULL>" else v) for h, v in zip(header, values)}
            op = row.pop("op", "+I") if header and header[0] == "op" else "+I"
            if op in ("+I", "+U"):
                rows.append(row)
            elif row in rows:
                rows.remove(row)
            i += 1
        sets.append(rows)
        i += 1
    return sets


@dataclass(frozen=True)
class Block:
    """One fenced SQL block of a markdown file and the ``##`` section it is in."""

    section: str
    sql: str

    @property
    def statements(self) -> list[str]:
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", self.sql) if s.strip()]

    @property
    def results(self) -> int:
        """How many results its statements print (queries, SHOW, DESCRIBE)."""
        return sum(bool(re.match(r"(SELECT|SHOW|DESCRIBE|WITH)\b", s, re.I)) for s in self.statements)


def sql_blocks(path: Path) -> list[Block]:
    section, blocks, current = "", [], None
    for line in path.read_text().splitlines():
        if current is not None:
            if line.startswith("```"):
                blocks.append(Block(section, "\n".join(current).strip()))
                current = None
            else:
                current.append(line)
        elif line.startswith("```sql"):
            current = []
        elif line.startswith("## "):
            section = line[3:].strip()
    return blocks
