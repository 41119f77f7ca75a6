"""Progress and summary output. Stage cores take a Reporter and never print themselves.

The default Reporter is silent, so library calls and tests are quiet; the CLI passes one that draws
rich progress bars on a terminal (plain periodic lines otherwise) and prints the summary table.
"""
from __future__ import annotations

import io
import sys
import time
from contextlib import contextmanager

from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class Reporter:
    def __init__(self, quiet: bool = True, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True)

    @contextmanager
    def task(self, description: str, total: int | None):
        """Yield an `advance(n=1, **fields)` callable for a loop of `total` steps."""
        if self.quiet:
            yield lambda n=1, **kw: None
            return
        if not self.console.is_terminal:
            # Logs (CI, files): a line every ~10% instead of a redrawn bar.
            state = {"done": 0, "next": 0.1, "t0": time.time()}

            def advance(n=1, **kw):
                state["done"] += n
                if total and state["done"] / total >= state["next"]:
                    state["next"] += 0.1
                    extra = " ".join(f"{k}={v}" for k, v in kw.items())
                    self.console.print(f"{description}: {state['done']}/{total} "
                                       f"({time.time() - state['t0']:.0f}s) {extra}".rstrip())
            yield advance
            return
        cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
        with Progress(*cols, console=self.console, transient=False) as prog:
            tid = prog.add_task(description, total=total, info="")

            def advance(n=1, **kw):
                info = " ".join(f"{k}={v}" for k, v in kw.items())
                prog.update(tid, advance=n, info=info)
            yield advance

    def log(self, msg: str):
        if not self.quiet:
            self.console.print(msg)

    def skipped(self, items: list[dict], key: str = "id", shown: int = 10):
        """Name the first `shown` skipped items ({key: name, "reason": why}), then how many more."""
        for s in items[:shown]:
            self.log(f"[yellow]skipped[/] {s[key]}: {s['reason']}")
        if len(items) > shown:
            self.log(f"... and {len(items) - shown} more (manifest.json lists them all)")

    def table(self, title: str, rows: list[tuple], columns: tuple[str, ...] = ("", "")):
        """Print a summary table (always, unless quiet)."""
        if self.quiet:
            return
        t = Table(title=title, show_header=any(columns))
        for c in columns:
            t.add_column(c, justify="right" if c and c != columns[0] else "left")
        for r in rows:
            t.add_row(*[_fmt(v) for v in r])
        # A pipe or log file has no width; rich would squeeze the table into $COLUMNS or 80 and cut cells
        # ("teach…", "laten…"). Logs are read later and wider: print them at the table's own width. Asks
        # the file, not rich's is_terminal, which FORCE_COLOR (set in CI for coloured logs) turns on.
        need = _natural_width(t)
        out = Console(file=sys.stdout, width=None if _isatty(sys.stdout) else need)
        if need <= out.width:
            if cell_len(title) > need:
                # rich wraps a title to the table's width, a path mid-word ("checkpoints/b" / "est.pt"): a
                # line of its own instead, whole in a log, wrapped by the terminal between words on a screen.
                t.title = None
                out.print(title, style="italic", markup=False, highlight=False, soft_wrap=True)
            out.print(t)
            return
        # A terminal narrower than the table: rich would cut "1548.75M" to "1548.…" and hide the magnitude.
        # One line per row keeps every value whole; the terminal wraps it between fields.
        out.print(title, style="italic", markup=False, highlight=False)
        for r in rows:
            head, *rest = [_fmt(v) for v in r]
            fields = [f"{c}={v}" if c else v for c, v in zip(columns[1:], rest)]
            out.print(f"{columns[0] + '=' if columns[0] else ''}{head}  " + " ".join(fields),
                      markup=False, highlight=False)


def _isatty(f) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):  # no such method, or already closed
        return False


def _natural_width(t: Table) -> int:
    """Columns the table needs to show every cell and header on one line."""
    probe = Console(file=io.StringIO(), width=100_000)
    return max(20, probe.measure(t).maximum)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


SILENT = Reporter(quiet=True)
