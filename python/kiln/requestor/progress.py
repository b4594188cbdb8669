"""A live progress bar for a :class:`~kiln.requestor.executor.Job`, its summary at the end, and
its HTML report when asked (``report="job.html"``).

The bar and summary are quiet unless the console is a terminal (or ``enabled=True``): logs and
pipes stay clean. A report asked for is written however the job ends, and its path printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kiln.protocol.errors import UsageError
from kiln.requestor.executor import Job, JobEvent


class ProgressView:
    """Shows done/total, running, retries, failed providers, elapsed time and ETA, and while a
    provider loads the job's image, how far it got (``loading wordcount:1 on p1, 45 of 120 MiB``).

    With ``report``, the job's HTML report (:meth:`~kiln.requestor.executor.Job.report`) is written
    there when the view closes, and its path printed (also when the bar is quiet); ``written``
    holds that path then. A report that cannot be written is said on the console and does not hide
    how the job ended; a folder for it that does not exist is a :class:`~kiln.UsageError` at once."""

    def __init__(
        self,
        job: Job[Any, Any],
        *,
        enabled: bool | None = None,
        summary: bool = True,
        console: Console | None = None,
        report: str | os.PathLike[str] | None = None,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.summary = summary
        if report is not None and not Path(report).resolve().parent.is_dir():
            raise UsageError(f"no folder {str(Path(report).resolve().parent)!r} to write the report {str(report)!r} in")
        self.report = report
        self.written: Path | None = None
        """Where the report went, once written."""
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.job = job
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "running {task.fields[running]}  retries {task.fields[retries]}  failed providers {task.fields[failed]}"
            ),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[loading]}"),
            console=self.console,
            disable=not self.enabled,
        )
        self._task: TaskID | None = None
        self._retries = 0
        self._failed: set[str] = set()
        self._done = 0
        self._loading: dict[str, str] = {}  # provider -> how far its load got
        if self.enabled:
            job.subscribe(self._on_event)

    def __enter__(self) -> ProgressView:
        if self.enabled:
            self._progress.start()
            self._task = self._progress.add_task(
                "tasks", total=self.job.total, running=0, retries=0, failed=0, loading=""
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.enabled:
            self._progress.stop()
            for line in self.job.summary.lines() if self.summary else []:
                self.console.print(line, highlight=False)
        if self.report is not None:
            try:
                self.written = self.job.report(self.report)
            except OSError as e:
                self.console.print(f"could not write the report to {self.report}: {e}", highlight=False, soft_wrap=True)
            else:
                self.console.print(f"report: {self.written}", highlight=False, soft_wrap=True)

    def _on_event(self, event: JobEvent) -> None:
        if self._task is None:
            return
        if event.kind == "task_done" or event.kind == "task_failed":
            self._done += 1
        elif event.kind == "task_retry":
            self._retries += 1
        elif event.kind == "provider_banned" and event.provider is not None:
            self._failed.add(event.provider)
        if event.kind == "image_loading" and event.provider is not None:
            if event.bytes_done is not None and event.bytes_done >= (event.bytes_total or 0):
                self._loading.pop(event.provider, None)
            else:
                self._loading[event.provider] = event.detail
        elif event.kind in ("rented", "provider_banned") and event.provider is not None:
            self._loading.pop(event.provider, None)
        self._progress.update(
            self._task,
            completed=self._done,
            running=self.job.running,
            retries=self._retries,
            failed=len(self._failed),
            loading="  ".join(self._loading.values()),
        )
