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
/** Ended attempts a timeline keeps (the latest): a job of a million tasks stays bounded. */
export declare const ATTEMPTS_KEPT = 10000;
/** The longest reason kept (what the hub takes in a `task` report), and the highest attempt number one carries. */
export { MAX_TASK_REASON as MAX_REASON, MAX_TASK_ATTEMPT } from "./protocol/generated/limits.js";
export type AttemptOutcome = "running" | "done" | "retried" | "failed" | "lost";
export type Attempt = {
    task: number;
    attempt: number;
    provider: string;
    activity: string;
    start: number;
    end: number | null;
    outcome: AttemptOutcome;
    reason: string;
    bytes: number;
};
/**
 * The attempts of one job: those running, and the latest `keep` that ended. Call
 * {@link Timeline#start} when an attempt starts and {@link Timeline#end} with the number it
 * gave once it is over; {@link Timeline#attempts} lists them all by start.
 */
export declare class Timeline {
    /** Ended attempts no longer kept (the oldest). */
    dropped: number;
    /** @param {number} [keep] */
    constructor(keep?: number);
    /**
     * An attempt started `at` seconds into the job; the number to end it with.
     * @param {number} task @param {number} attempt @param {string} provider @param {string} activity @param {number} at
     * @returns {number}
     */
    start(task: number, attempt: number, provider: string, activity: string, at: number): number;
    /**
     * The attempt {@link Timeline#start} numbered `started` ended `at` seconds into the job.
     * @param {number} started @param {AttemptOutcome} outcome @param {string} reason @param {number} moved @param {number} at
     * @returns {Attempt}
     */
    end(started: number, outcome: AttemptOutcome, reason: string, moved: number, at: number): Attempt;
    /** Every attempt kept, running ones included, by start (copies). @returns {Attempt[]} */
    get attempts(): Attempt[];
}
/** `text` safe in HTML text and in a quoted attribute. @param {unknown} text */
export declare const escape: (text: unknown) => string;
/** A short human form of `size` bytes: `512B`, `1.5KiB`, `3MiB`. @param {number} size */
export declare function formatSize(size: number): string;
/**
 * An SVG Gantt chart of `attempts`: a row per provider, a bar per attempt, coloured by
 * outcome, its title (a tooltip) saying what it was and why it ended.
 * @param {readonly Attempt[]} attempts @param {number} elapsed
 * @returns {string}
 */
export declare function gantt(attempts: readonly Attempt[], elapsed: number): string;
/**
 * The report of a job (`title` names it): a self-contained HTML page, every text escaped.
 * @param {string} title
 * @param {import("./scheduling.js").JobSummary} summary
 * @param {readonly Attempt[]} attempts
 * @param {{dropped?: number}} [options] `dropped`: the oldest attempts the timeline no longer keeps
 * @returns {string}
 */
export declare function renderHtml(title: string, summary: import("./scheduling.js").JobSummary, attempts: readonly Attempt[], { dropped }?: {
    dropped?: number;
}): string;
