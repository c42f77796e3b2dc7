"""The result table: one row per figure, ours and theirs, the ratio ours/theirs, and the issue's target."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    workload: str
    unit: str
    higher_is_better: bool
    ours: float | None
    theirs: float | None
    target: float | None = None  # ours/theirs the issue asks for (>= when higher is better, else <=)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.theirs in (None, 0):
            return None
        return self.ours / self.theirs  # type: ignore[operator]

    @property
    def met(self) -> str:
        r = self.ratio
        if r is None or self.target is None:
            return ""
        return "yes" if (r >= self.target if self.higher_is_better else r <= self.target) else "no"


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def print_table(rows: list[Row], theirs_name: str = "theirs") -> str:
    head = ["workload", "unit", "ours", theirs_name, "ours/theirs", "better", "target", "met", "note"]
    body = [[r.workload, r.unit, fmt(r.ours), fmt(r.theirs),
             f"{r.ratio:.2f}" if r.ratio is not None else "-",
             "higher" if r.higher_is_better else "lower",
             (">=" if r.higher_is_better else "<=") + f"{r.target}" if r.target is not None else "",
             r.met, r.note] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=False)).rstrip()
             for line in [head, ["-" * w for w in widths], *body]]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


