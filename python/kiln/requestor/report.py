"""A job's timeline: each attempt of each task, and the HTML report drawn from them.

Pure (no clock, no I/O): the executor (:mod:`kiln.requestor.executor`) tells a
:class:`Timeline` when an attempt starts and how it ended, in seconds since the job started;
:func:`render_html` turns what it kept into one self-contained HTML page — inline CSS and an
inline SVG Gantt chart of the attempts on each provider, the job's summary, and the retries
with their reasons — that fetches nothing. js-client/src/report.js draws the same page.

Everything shown is escaped: a reason is an error's message, and a provider writes much of
what such messages hold. Reasons are clipped to :data:`MAX_REASON` characters, and a timeline
keeps the latest :data:`ATTEMPTS_KEPT` ended attempts (it counts those it dropped).
"""

from __future__ import annotations

import html
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

from kiln.protocol.messages import MAX_REASON, clip
from kiln.protocol.money import format_credits
from kiln.protocol.sizes import format_size
from kiln.requestor.scheduling import JobSummary

ATTEMPTS_KEPT: Final = 10_000
"""Ended attempts a timeline keeps (the latest): a job of a million tasks stays bounded."""

AttemptOutcome = Literal["running", "done", "retried", "failed", "lost"]
"""How an attempt ended: ``done``; it failed and the task was ``retried`` (elsewhere or later);
it ``failed`` the task for good; its activity was ``lost`` (the provider vanished, the hub ended
the activity, or the job ended under it); ``running`` while it has not ended."""

COLOURS: Final[dict[str, str]] = {
    "done": "#2e7d32",
    "retried": "#ef8c00",
    "failed": "#c62828",
    "lost": "#6a1b9a",
    "running": "#78909c",
}
WIDTH: Final = 960
"""The chart's width in pixels, the provider names' column included."""
LABELS: Final = 180
LANE: Final = 20
AXIS: Final = 24


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of task ``task`` (its ``attempt``-th, from 1) on ``activity`` at ``provider``,
    from ``start`` to ``end`` (seconds since the job started; ``end`` is None while it runs),
    how it ended and why (``reason``, empty when done), and the ``bytes`` it moved to and from
    the activity (uploads, downloads, commands' input and output)."""

    task: int
    attempt: int
    provider: str
    activity: str
    start: float
    end: float | None = None
    outcome: AttemptOutcome = "running"
    reason: str = ""
    bytes: int = 0


class Timeline:
    """The attempts of one job: those running, and the latest ``keep`` that ended.

    Call :meth:`start` when an attempt starts and :meth:`end` with the number it gave once the
    attempt is over; :attr:`attempts` lists them all by start.
    """

    def __init__(self, keep: int = ATTEMPTS_KEPT) -> None:
        self._running: dict[int, Attempt] = {}
        self._ended: deque[Attempt] = deque(maxlen=keep)
        self._next = 0
        self.dropped = 0
        """Ended attempts no longer kept (the oldest)."""

    def start(self, task: int, attempt: int, provider: str, activity: str, at: float) -> int:
        """An attempt started ``at`` seconds into the job; the number to end it with."""
        self._next += 1
        self._running[self._next] = Attempt(task, attempt, provider, activity, at)
        return self._next

    def end(self, started: int, outcome: AttemptOutcome, reason: str, moved: int, at: float) -> Attempt:
        """The attempt :meth:`start` numbered ``started`` ended ``at`` seconds into the job."""
        ended = replace(
            self._running.pop(started), end=at, outcome=outcome, reason=clip(reason, MAX_REASON), bytes=moved
        )
        if len(self._ended) == self._ended.maxlen:
            self.dropped += 1
        self._ended.append(ended)
        return ended

    @property
    def attempts(self) -> list[Attempt]:
        """Every attempt kept, running ones included, by start."""
        return sorted([*self._ended, *self._running.values()], key=lambda a: (a.start, a.task, a.attempt))


# --- the HTML report ------------------------------------------------------------------------

STYLE: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1c2833;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.muted{color:#5d6d7e}
dl.summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:8px;margin:16px 0}
dl.summary div{border:1px solid #d5dbdb;border-radius:6px;padding:8px 10px}
dl.summary dt{font-size:12px;color:#5d6d7e}dl.summary dd{margin:0;font-size:18px;font-weight:600}
.chart{overflow-x:auto;border:1px solid #d5dbdb;border-radius:6px;padding:8px}
svg text{font:12px system-ui,sans-serif;fill:#1c2833}svg .grid{stroke:#e5e8e8}
svg rect.bar{stroke:#fff;stroke-width:0.5}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border-bottom:1px solid #e5e8e8;padding:4px 10px;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.reason{max-width:640px;overflow-wrap:anywhere;white-space:pre-wrap}
details{margin:8px 0}summary{cursor:pointer}
"""


def escape(text: object) -> str:
    """``text`` safe in HTML text and in a quoted attribute."""
    return html.escape(str(text), quote=True)


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def _lanes(attempts: Iterable[Attempt], now: float) -> list[tuple[str, int, Attempt]]:
    """Each attempt with its provider's row and the lane in it: attempts that overlap in time on
    one provider (two activities there, one after the other's release) go on separate lanes."""
    placed: list[tuple[str, int, Attempt]] = []
    free_at: dict[str, list[float]] = {}  # provider -> when each of its lanes is free again
    for attempt in attempts:
        lanes = free_at.setdefault(attempt.provider, [])
        end = attempt.end if attempt.end is not None else now
        lane = next((i for i, free in enumerate(lanes) if free <= attempt.start), len(lanes))
        if lane == len(lanes):
            lanes.append(end)
        else:
            lanes[lane] = end
        placed.append((attempt.provider, lane, attempt))
    return placed


def _title(attempt: Attempt, now: float) -> str:
    end = attempt.end if attempt.end is not None else now
    text = (
        f"task {attempt.task}, attempt {attempt.attempt} on {attempt.provider} ({attempt.activity}): "
        f"{attempt.outcome}, {seconds(attempt.start)} to {seconds(end)}"
    )
    if attempt.bytes:
        text += f", {format_size(attempt.bytes)} moved"
    return text + (f"\n{attempt.reason}" if attempt.reason else "")


def gantt(attempts: Sequence[Attempt], elapsed: float) -> str:
    """An SVG Gantt chart of ``attempts``: a row per provider, a bar per attempt, coloured by
    outcome, its title (a tooltip) saying what it was and why it ended."""
    span = max([elapsed, *(a.end or 0.0 for a in attempts), *(a.start for a in attempts), 1e-3])
    placed = _lanes(attempts, span)
    rows: dict[str, int] = {}  # provider -> its lanes
    for provider, lane, _ in placed:
        rows[provider] = max(rows.get(provider, 0), lane + 1)
    top: dict[str, int] = {}
    y = AXIS
    for provider, lanes in rows.items():
        top[provider] = y
        y += lanes * LANE + 6
    height = y + 4
    scale = (WIDTH - LABELS - 10) / span
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="attempts per provider over time">'
    ]
    for step in range(6):
        at = span * step / 5
        x = LABELS + at * scale
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{AXIS - 6}" x2="{x:.1f}" y2="{height}"/>')
        anchor = "end" if step == 5 else "start" if step == 0 else "middle"
        parts.append(f'<text x="{x:.1f}" y="14" text-anchor="{anchor}">{escape(seconds(at))}</text>')
    for provider, y0 in top.items():
        label = provider if len(provider) <= 24 else provider[:23] + "…"
        parts.append(f'<text x="4" y="{y0 + 14}"><title>{escape(provider)}</title>{escape(label)}</text>')
    for provider, lane, attempt in placed:
        end = attempt.end if attempt.end is not None else span
        x = LABELS + attempt.start * scale
        width = max((end - attempt.start) * scale, 2.0)
        y0 = top[provider] + lane * LANE
        parts.append(
            f'<rect class="bar {attempt.outcome}" data-task="{attempt.task}" data-attempt="{attempt.attempt}" '
            f'x="{x:.1f}" y="{y0}" width="{width:.1f}" height="{LANE - 4}" rx="2" '
            f'fill="{COLOURS[attempt.outcome]}"><title>{escape(_title(attempt, span))}</title></rect>'
        )
        if width >= 8 * len(str(attempt.task)) + 6:
            parts.append(
                f'<text x="{x + 3:.1f}" y="{y0 + 12}" style="fill:#fff;font-size:10px" '
                f'pointer-events="none">{attempt.task}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _summary(summary: JobSummary, attempts: Sequence[Attempt]) -> str:
    moved = sum(a.bytes for a in attempts)
    cells = [
        ("tasks", str(summary.tasks)),
        ("done", str(summary.succeeded)),
        ("failed", str(summary.failed)),
        ("attempts", str(summary.attempts)),
        ("retries", str(summary.retries)),
        ("providers", str(len({a.provider for a in attempts}))),
        ("elapsed", seconds(summary.wall_seconds)),
        ("spent", f"{format_credits(sum(summary.spent_micro.values()))} credits"),
        ("bytes moved", format_size(moved)),
    ]
    if summary.verified or summary.disputed:
        cells += [("verified", str(summary.verified)), ("disputed", str(summary.disputed))]
    body = "".join(f"<div><dt>{escape(name)}</dt><dd>{escape(value)}</dd></div>" for name, value in cells)
    return f'<dl class="summary">{body}</dl>'


def _providers(summary: JobSummary, attempts: Sequence[Attempt]) -> str:
    by_provider: dict[str, list[Attempt]] = {}  # grouped once: a job may have thousands of each
    for attempt in attempts:
        by_provider.setdefault(attempt.provider, []).append(attempt)
    names = sorted(by_provider.keys() | set(summary.tasks_per_provider) | set(summary.spent_micro))
    rows = []
    for name in names:
        mine = by_provider.get(name, [])
        rows.append(
            "<tr>"
            f"<td>{escape(name)}{' (failed the job)' if name in summary.failed_providers else ''}</td>"
            f'<td class="num">{summary.tasks_per_provider[name]}</td>'
            f'<td class="num">{len(mine)}</td>'
            f'<td class="num">{sum(a.outcome != "done" and a.outcome != "running" for a in mine)}</td>'
            f'<td class="num">{summary.cpu_seconds.get(name, 0.0):.2f}</td>'
            f'<td class="num">{escape(format_credits(summary.spent_micro[name]))}</td>'
            f'<td class="num">{escape(format_size(sum(a.bytes for a in mine)))}</td>'
            "</tr>"
        )
    head = (
        '<tr><th>provider</th><th class="num">tasks done</th><th class="num">attempts</th>'
        '<th class="num">not done</th><th class="num">CPU-seconds</th><th class="num">credits</th>'
        '<th class="num">bytes moved</th></tr>'
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _attempt_rows(attempts: Iterable[Attempt], now: float) -> str:
    rows = []
    for a in attempts:
        end = a.end if a.end is not None else now
        rows.append(
            f'<tr data-task="{a.task}"><td class="num">{a.task}</td><td class="num">{a.attempt}</td>'
            f"<td>{escape(a.provider)}</td><td>{escape(a.activity)}</td>"
            f'<td class="num">{a.start:.2f}</td><td class="num">{end - a.start:.2f}</td>'
            f'<td>{escape(a.outcome)}</td><td class="num">{escape(format_size(a.bytes))}</td>'
            f'<td class="reason">{escape(a.reason)}</td></tr>'
        )
    head = (
        '<tr><th class="num">task</th><th class="num">attempt</th><th>provider</th><th>activity</th>'
        '<th class="num">start (s)</th><th class="num">took (s)</th><th>outcome</th><th class="num">bytes</th>'
        "<th>reason</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def render_html(title: str, summary: JobSummary, attempts: Sequence[Attempt], *, dropped: int = 0) -> str:
    """The report of a job (``title`` names it): a self-contained HTML page, every text escaped."""
    elapsed = summary.wall_seconds or max([0.0, *(a.end or a.start for a in attempts)])
    troubled = [a for a in attempts if a.outcome in ("retried", "failed", "lost")]
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{escape(name)}</span>' for name, colour in COLOURS.items()
    )
    note = (
        f'<p class="muted">The {dropped} oldest attempts are not shown (a report keeps the latest {ATTEMPTS_KEPT}).</p>'
        if dropped
        else ""
    )
    retries = (
        _attempt_rows(troubled, elapsed) if troubled else '<p class="muted">Every attempt succeeded: no retries.</p>'
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="muted">{_count(len(attempts), "attempt")} of {_count(summary.tasks, "task")} on '
        f"{_count(len({a.provider for a in attempts}), 'provider')} in {escape(seconds(elapsed))}</p>"
        f"{_summary(summary, attempts)}"
        f'<h2>Attempts per provider</h2><p class="legend">{legend}</p>{note}'
        f'<div class="chart">{gantt(attempts, elapsed)}</div>'
        f"<h2>Retries and why</h2>{retries}"
        f"<h2>Providers</h2>{_providers(summary, attempts)}"
        f"<details><summary>Every attempt ({len(attempts)})</summary>{_attempt_rows(attempts, elapsed)}</details>"
        "</body></html>\n"
    )


def _count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural but for one: ``1 provider``, ``2 providers``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
