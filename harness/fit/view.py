"""The "fits on" view: rows are technique combinations, columns budgets, cells the largest batch (or
seq) and the tokens/s there. `does not fit at 1` is a cell like any other."""

from __future__ import annotations

from typing import Any

DOES_NOT_FIT = "does not fit at 1"


def cell_text(answer: dict[str, Any] | None) -> str:
    if answer is None:
        return "-"
    largest = answer.get("largest")
    if largest is None:
        return f"n/a ({answer.get('reason') or 'no answer'})"  # whole: tables wrap it, never cut it
    if largest == 0:  # a ZeRO/FSDP batch starts at one sample per rank
        step = answer.get("batch_step") or 1
        return DOES_NOT_FIT if step == 1 else f"does not fit at {step} ({step} ranks x 1)"
    text = str(largest) + (" (axis max)" if answer.get("at_axis_maximum") else "")
    if answer.get("reason"):  # a probe above it could not answer
        text += " (?)"
    tps = answer.get("tokens_per_s")
    if isinstance(tps, (int, float)):
        text += f" · {tps:,.0f} tok/s"
    if answer.get("largest_estimated") is not None:  # the estimate's answer failed; runs found this one
        text += f" (measured; the estimate's {answer['largest_estimated']} did not fit)"
    elif answer.get("verified_by_run") is False:
        text += " (real probe: does not fit)"
    return text


def grid(answers: list[dict[str, Any]], budgets: list[str]) -> tuple[list[str], dict[tuple[str, str], Any]]:
    """Rows ordered by the largest fit (summed over budgets), ties broken by throughput."""
    cells = {(a["combination"], a["budget"]): a for a in answers}
    rows = list(dict.fromkeys(a["combination"] for a in answers))

    def rank(row: str) -> tuple[int, float]:
        got = [cells.get((row, b)) or {} for b in budgets]
        return (
            -sum(int(a.get("largest") or 0) for a in got),
            -sum(float(a.get("tokens_per_s") or 0.0) for a in got),
        )

    return sorted(rows, key=rank), cells


def _title(answers: list[dict[str, Any]]) -> str:
    axis = answers[0]["axis"] if answers else "batch_size"
    method = answers[0].get("method", "run") if answers else "run"
    how = "estimated, checked by one run" if method == "estimate" else "measured"
    return f"largest {axis} that fits ({how})"


def fit_table(answers: list[dict[str, Any]], budgets: list[str]) -> Any:
    from rich.table import Table

    rows, cells = grid(answers, budgets)
    t = Table(title=_title(answers))
    t.add_column("model/workload/techniques")
    for b in budgets:
        t.add_column(b, justify="right")
    for row in rows:
        t.add_row(row, *(cell_text(cells.get((row, b))) for b in budgets))
    return t


def fit_markdown(answers: list[dict[str, Any]], budgets: list[str]) -> str:
    rows, cells = grid(answers, budgets)
    lines = [f"**{_title(answers)}**", "", "| model/workload/techniques | " + " | ".join(budgets) + " |"]
    lines.append("|---|" + "---:|" * len(budgets))
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(cell_text(cells.get((row, b))) for b in budgets) + " |")
    return "\n".join(lines) + "\n"
