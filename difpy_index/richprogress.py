"""A rich progress bar on stderr behind the library's Progress protocol."""

from __future__ import annotations

from typing import Any


class RichProgress:
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        self._task: Any = None

    def start(self, total: int, label: str) -> None:
        if total <= 0:
            return
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def note(self, message: str) -> None:
        self._progress.console.print(message)

    def finish(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None
