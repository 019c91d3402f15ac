"""A rich progress bar with rate and ETA for every long loop."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from r1kit.report.logger import console


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator["Bar"]:
    if not enabled:
        yield Bar(None, None)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total, rate="", info="")
        yield Bar(progress, task)


class Bar:
    def __init__(self, progress: Progress | None, task):
        self.progress, self.task = progress, task

    def advance(self, n: int = 1, info: str = "") -> None:
        if self.progress is None:
            return
        t = self.progress.tasks[self.task]
        rate = f"{t.speed:.2f} it/s" if t.speed else ""
        self.progress.update(self.task, advance=n, info=info, rate=rate)
