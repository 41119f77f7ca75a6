"""Progress and summary output. Stage cores take a Reporter and never print themselves.

The default Reporter is silent, so library calls and tests are quiet; the CLI passes one that draws
rich progress bars on a terminal (plain periodic lines otherwise) and prints the summary table.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager

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

    def table(self, title: str, rows: list[tuple], columns: tuple[str, ...] = ("", "")):
        """Print a summary table (always, unless quiet)."""
        if self.quiet:
            return
        t = Table(title=title, show_header=any(columns))
        for c in columns:
            t.add_column(c, justify="right" if c and c != columns[0] else "left")
        for r in rows:
            t.add_row(*[_fmt(v) for v in r])
        Console(file=sys.stdout).print(t)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


SILENT = Reporter(quiet=True)
