/**
 * A job's timeline: each attempt of each task, and the HTML report drawn from them (mirrors
 * `python/kiln/requestor/report.py`).
 *
 * Pure (no clock, no I/O, no Node module: it runs in browsers too): the executor tells a
 * {@link Timeline} when an attempt starts and how it ended, in seconds since the job started;
 * {@link renderHtml} turns what it kept into one self-contained HTML page — inline CSS and an
 * inline SVG Gantt chart of the attempts on each provider, the job's summary, and the retries
 * with their reasons — that fetches nothing.
 *
 * Everything shown is escaped: a reason is an error's message, and a provider writes much of
 * what such messages hold. Reasons are clipped to {@link MAX_REASON} characters, and a timeline
 * keeps the latest {@link ATTEMPTS_KEPT} ended attempts (it counts those it dropped).
 * @module
 */

import { formatCredits } from "./money.js";
import { MAX_TASK_REASON as MAX_REASON } from "./protocol/generated/limits.js";
import { clip } from "./protocol/messages.js";

/** Ended attempts a timeline keeps (the latest): a job of a million tasks stays bounded. */
export const ATTEMPTS_KEPT = 10_000;
/** The longest reason kept (what the hub takes in a `task` report), and the highest attempt number one carries. */
export { MAX_TASK_REASON as MAX_REASON, MAX_TASK_ATTEMPT } from "./protocol/generated/limits.js";

/**
 * How an attempt ended: `done`; it failed and the task was `retried` (elsewhere or later); it
 * `failed` the task for good; its activity was `lost` (the provider vanished, the hub ended
 * the activity, or the job ended under it); `running` while it has not ended.
 * @typedef {"running" | "done" | "retried" | "failed" | "lost"} AttemptOutcome
 */

/**
 * One attempt of task `task` (its `attempt`-th, from 1) on `activity` at `provider`, from
 * `start` to `end` (seconds since the job started; `end` is null while it runs), how it
 * ended and why (`reason`, empty when done), and the `bytes` it moved to and from the activity.
 * @typedef {object} Attempt
 * @property {number} task
 * @property {number} attempt
 * @property {string} provider
 * @property {string} activity
 * @property {number} start
 * @property {number | null} end
 * @property {AttemptOutcome} outcome
 * @property {string} reason
 * @property {number} bytes
 */

/** @type {Readonly<Record<AttemptOutcome, string>>} */
const COLOURS = Object.freeze({
  done: "#2e7d32",
  retried: "#ef8c00",
  failed: "#c62828",
  lost: "#6a1b9a",
  running: "#78909c",
});
const WIDTH = 960;
const LABELS = 180;
const LANE = 20;
const AXIS = 24;

/**
 * The attempts of one job: those running, and the latest `keep` that ended. Call
 * {@link Timeline#start} when an attempt starts and {@link Timeline#end} with the number it
 * gave once it is over; {@link Timeline#attempts} lists them all by start.
 */
export class Timeline {
  /** @param {number} [keep] */
  constructor(keep = ATTEMPTS_KEPT) {
    this._keep = keep;
    /** @type {Map<number, Attempt>} */
    this._running = new Map();
    /** @type {Attempt[]} a ring of the latest ended ones, `_first` the oldest */
    this._ended = [];
    this._first = 0;
    this._next = 0;
    /** Ended attempts no longer kept (the oldest). */
    this.dropped = 0;
  }

  /**
   * An attempt started `at` seconds into the job; the number to end it with.
   * @param {number} task @param {number} attempt @param {string} provider @param {string} activity @param {number} at
   * @returns {number}
   */
  start(task, attempt, provider, activity, at) {
    this._next += 1;
    this._running.set(this._next, { task, attempt, provider, activity, start: at, end: null, outcome: "running", reason: "", bytes: 0 });
    return this._next;
  }

  /**
   * The attempt {@link Timeline#start} numbered `started` ended `at` seconds into the job.
   * @param {number} started @param {AttemptOutcome} outcome @param {string} reason @param {number} moved @param {number} at
   * @returns {Attempt}
   */
  end(started, outcome, reason, moved, at) {
    const running = /** @type {Attempt} */ (this._running.get(started));
    this._running.delete(started);
    const ended = Object.freeze({ ...running, end: at, outcome, reason: clip(reason, MAX_REASON), bytes: moved });
    if (this._ended.length < this._keep) {
      this._ended.push(ended);
    } else {
      this._ended[this._first] = ended;
      this._first = (this._first + 1) % this._keep;
      this.dropped += 1;
    }
    return ended;
  }

  /** Every attempt kept, running ones included, by start (copies). @returns {Attempt[]} */
  get attempts() {
    const all = [...this._ended, ...[...this._running.values()].map((a) => Object.freeze({ ...a }))];
    return all.sort((a, b) => a.start - b.start || a.task - b.task || a.attempt - b.attempt);
  }
}

// --- the HTML report ------------------------------------------------------------------------

const STYLE = `
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
`;

/** @type {Readonly<Record<string, string>>} */
const ENTITIES = Object.freeze({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;" });

/** `text` safe in HTML text and in a quoted attribute. @param {unknown} text */
export const escape = (text) => String(text).replace(/[&<>"']/g, (c) => ENTITIES[c]);

/** @param {number} value */
const seconds = (value) => (value < 100 ? `${value.toFixed(2)} s` : `${value.toFixed(0)} s`);

/** A short human form of `size` bytes: `512B`, `1.5KiB`, `3MiB`. @param {number} size */
export function formatSize(size) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1).replace(/\.0$/, "")}${units[unit]}`;
}

/**
 * Each attempt with its provider's row and the lane in it: attempts that overlap in time on
 * one provider go on separate lanes.
 * @param {readonly Attempt[]} attempts @param {number} now
 * @returns {[string, number, Attempt][]}
 */
function lanes(attempts, now) {
  /** @type {[string, number, Attempt][]} */
  const placed = [];
  /** @type {Map<string, number[]>} provider -> when each of its lanes is free again */
  const freeAt = new Map();
  for (const attempt of attempts) {
    const free = freeAt.get(attempt.provider) ?? [];
    freeAt.set(attempt.provider, free);
    const end = attempt.end ?? now;
    let lane = free.findIndex((at) => at <= attempt.start);
    if (lane === -1) lane = free.length;
    free[lane] = end;
    placed.push([attempt.provider, lane, attempt]);
  }
  return placed;
}

/** @param {Attempt} attempt @param {number} now */
function title(attempt, now) {
  const end = attempt.end ?? now;
  let text =
    `task ${attempt.task}, attempt ${attempt.attempt} on ${attempt.provider} (${attempt.activity}): ` +
    `${attempt.outcome}, ${seconds(attempt.start)} to ${seconds(end)}`;
  if (attempt.bytes) text += `, ${formatSize(attempt.bytes)} moved`;
  return text + (attempt.reason ? `\n${attempt.reason}` : "");
}

/**
 * An SVG Gantt chart of `attempts`: a row per provider, a bar per attempt, coloured by
 * outcome, its title (a tooltip) saying what it was and why it ended.
 * @param {readonly Attempt[]} attempts @param {number} elapsed
 * @returns {string}
 */
export function gantt(attempts, elapsed) {
  const span = Math.max(elapsed, 1e-3, ...attempts.map((a) => a.end ?? 0), ...attempts.map((a) => a.start));
  const placed = lanes(attempts, span);
  /** @type {Map<string, number>} provider -> its lanes */
  const rows = new Map();
  for (const [provider, lane] of placed) rows.set(provider, Math.max(rows.get(provider) ?? 0, lane + 1));
  /** @type {Map<string, number>} */
  const top = new Map();
  let y = AXIS;
  for (const [provider, count] of rows) {
    top.set(provider, y);
    y += count * LANE + 6;
  }
  const height = y + 4;
  const scale = (WIDTH - LABELS - 10) / span;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" ` +
      `viewBox="0 0 ${WIDTH} ${height}" role="img" aria-label="attempts per provider over time">`,
  ];
  for (let step = 0; step <= 5; step += 1) {
    const at = (span * step) / 5;
    const x = (LABELS + at * scale).toFixed(1);
    parts.push(`<line class="grid" x1="${x}" y1="${AXIS - 6}" x2="${x}" y2="${height}"/>`);
    const anchor = step === 5 ? "end" : step === 0 ? "start" : "middle";
    parts.push(`<text x="${x}" y="14" text-anchor="${anchor}">${escape(seconds(at))}</text>`);
  }
  for (const [provider, y0] of top) {
    const label = provider.length <= 24 ? provider : `${provider.slice(0, 23)}…`;
    parts.push(`<text x="4" y="${y0 + 14}"><title>${escape(provider)}</title>${escape(label)}</text>`);
  }
  for (const [provider, lane, attempt] of placed) {
    const end = attempt.end ?? span;
    const x = LABELS + attempt.start * scale;
    const width = Math.max((end - attempt.start) * scale, 2);
    const y0 = /** @type {number} */ (top.get(provider)) + lane * LANE;
    parts.push(
      `<rect class="bar ${attempt.outcome}" data-task="${attempt.task}" data-attempt="${attempt.attempt}" ` +
        `x="${x.toFixed(1)}" y="${y0}" width="${width.toFixed(1)}" height="${LANE - 4}" rx="2" ` +
        `fill="${COLOURS[attempt.outcome]}"><title>${escape(title(attempt, span))}</title></rect>`,
    );
    if (width >= 8 * String(attempt.task).length + 6) {
      parts.push(
        `<text x="${(x + 3).toFixed(1)}" y="${y0 + 12}" style="fill:#fff;font-size:10px" ` +
          `pointer-events="none">${attempt.task}</text>`,
      );
    }
  }
  parts.push("</svg>");
  return parts.join("");
}

/** @param {Map<string, number>} map */
const total = (map) => [...map.values()].reduce((a, b) => a + b, 0);

/** @param {import("./scheduling.js").JobSummary} summary @param {readonly Attempt[]} attempts */
function summaryCells(summary, attempts) {
  const cells = [
    ["tasks", String(summary.tasks)],
    ["done", String(summary.succeeded)],
    ["failed", String(summary.failed)],
    ["attempts", String(summary.attempts)],
    ["retries", String(summary.retries)],
    ["providers", String(new Set(attempts.map((a) => a.provider)).size)],
    ["elapsed", seconds(summary.wallSeconds)],
    ["spent", `${formatCredits(total(summary.spentMicro))} credits`],
    ["bytes moved", formatSize(attempts.reduce((sum, a) => sum + a.bytes, 0))],
  ];
  if (summary.verified || summary.disputed) cells.push(["verified", String(summary.verified)], ["disputed", String(summary.disputed)]);
  const body = cells.map(([name, value]) => `<div><dt>${escape(name)}</dt><dd>${escape(value)}</dd></div>`).join("");
  return `<dl class="summary">${body}</dl>`;
}

/** @param {import("./scheduling.js").JobSummary} summary @param {readonly Attempt[]} attempts */
function providers(summary, attempts) {
  /** @type {Map<string, Attempt[]>} grouped once: a job may have thousands of each */
  const byProvider = new Map();
  for (const attempt of attempts) {
    const mine = byProvider.get(attempt.provider);
    if (mine === undefined) byProvider.set(attempt.provider, [attempt]);
    else mine.push(attempt);
  }
  const names = [...new Set([...byProvider.keys(), ...summary.tasksPerProvider.keys(), ...summary.spentMicro.keys()])].sort();
  const rows = names.map((name) => {
    const mine = byProvider.get(name) ?? [];
    return (
      "<tr>" +
      `<td>${escape(name)}${summary.failedProviders.has(name) ? " (failed the job)" : ""}</td>` +
      `<td class="num">${summary.tasksPerProvider.get(name) ?? 0}</td>` +
      `<td class="num">${mine.length}</td>` +
      `<td class="num">${mine.filter((a) => a.outcome !== "done" && a.outcome !== "running").length}</td>` +
      `<td class="num">${(summary.cpuSeconds.get(name) ?? 0).toFixed(2)}</td>` +
      `<td class="num">${escape(formatCredits(summary.spentMicro.get(name) ?? 0))}</td>` +
      `<td class="num">${escape(formatSize(mine.reduce((sum, a) => sum + a.bytes, 0)))}</td>` +
      "</tr>"
    );
  });
  const head =
    '<tr><th>provider</th><th class="num">tasks done</th><th class="num">attempts</th>' +
    '<th class="num">not done</th><th class="num">CPU-seconds</th><th class="num">credits</th>' +
    '<th class="num">bytes moved</th></tr>';
  return `<table>${head}${rows.join("")}</table>`;
}

/** @param {readonly Attempt[]} attempts @param {number} now */
function attemptRows(attempts, now) {
  const rows = attempts.map((a) => {
    const end = a.end ?? now;
    return (
      `<tr data-task="${a.task}"><td class="num">${a.task}</td><td class="num">${a.attempt}</td>` +
      `<td>${escape(a.provider)}</td><td>${escape(a.activity)}</td>` +
      `<td class="num">${a.start.toFixed(2)}</td><td class="num">${(end - a.start).toFixed(2)}</td>` +
      `<td>${escape(a.outcome)}</td><td class="num">${escape(formatSize(a.bytes))}</td>` +
      `<td class="reason">${escape(a.reason)}</td></tr>`
    );
  });
  const head =
    '<tr><th class="num">task</th><th class="num">attempt</th><th>provider</th><th>activity</th>' +
    '<th class="num">start (s)</th><th class="num">took (s)</th><th>outcome</th><th class="num">bytes</th>' +
    "<th>reason</th></tr>";
  return `<table>${head}${rows.join("")}</table>`;
}

/**
 * The report of a job (`title` names it): a self-contained HTML page, every text escaped.
 * @param {string} title
 * @param {import("./scheduling.js").JobSummary} summary
 * @param {readonly Attempt[]} attempts
 * @param {{dropped?: number}} [options] `dropped`: the oldest attempts the timeline no longer keeps
 * @returns {string}
 */
export function renderHtml(title, summary, attempts, { dropped = 0 } = {}) {
  const elapsed = summary.wallSeconds || Math.max(0, ...attempts.map((a) => a.end ?? a.start));
  const troubled = attempts.filter((a) => a.outcome === "retried" || a.outcome === "failed" || a.outcome === "lost");
  const legend = Object.entries(COLOURS)
    .map(([name, colour]) => `<span><i style="background:${colour}"></i>${escape(name)}</span>`)
    .join("");
  const note = dropped
    ? `<p class="muted">The ${dropped} oldest attempts are not shown (a report keeps the latest ${ATTEMPTS_KEPT}).</p>`
    : "";
  const retries = troubled.length > 0 ? attemptRows(troubled, elapsed) : '<p class="muted">Every attempt succeeded: no retries.</p>';
  const providerCount = new Set(attempts.map((a) => a.provider)).size;
  return (
    "<!doctype html>\n" +
    '<html lang="en"><head><meta charset="utf-8">' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">' +
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">` +
    `<title>${escape(title)}</title><style>${STYLE}</style></head><body>` +
    `<h1>${escape(title)}</h1>` +
    `<p class="muted">${count(attempts.length, "attempt")} of ${count(summary.tasks, "task")} on ${count(providerCount, "provider")} in ${escape(seconds(elapsed))}</p>` +
    summaryCells(summary, attempts) +
    `<h2>Attempts per provider</h2><p class="legend">${legend}</p>${note}` +
    `<div class="chart">${gantt(attempts, elapsed)}</div>` +
    `<h2>Retries and why</h2>${retries}` +
    `<h2>Providers</h2>${providers(summary, attempts)}` +
    `<details><summary>Every attempt (${attempts.length})</summary>${attemptRows(attempts, elapsed)}</details>` +
    "</body></html>\n"
  );
}

/**
 * `n` and `noun`, plural but for one: `1 provider`, `2 providers`.
 * @param {number} n
 * @param {string} noun
 * @returns {string}
 */
function count(n, noun) {
  return n === 1 ? `${n} ${noun}` : `${n} ${noun}s`;
}
