/**
 * Ctrl-C (SIGINT) and SIGTERM release what the process's requestors hold before it exits,
 * as Python does (a KeyboardInterrupt unwinds `async with kiln.connect(...)`), rather than
 * leaving the hub to hold it for its grace period (`kiln hub --grace`). Node only.
 *
 * - The handlers are installed when the first requestor that wants them connects
 *   (`connect(url, { releaseOnSignal: false })` opts out), and removed when the last one
 *   closes: a process with no open requestor keeps Node's default behaviour.
 * - On the signal every open requestor is closed (its activities released, its connection
 *   closed; at most {@link RELEASE_WAIT_MS}), then:
 *   - if nothing else in the process listens for that signal, the process exits with the
 *     conventional code, 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as
 *     Node's default would have, only later;
 *   - if the program listens too, it handles the signal: Node calls its listener as well
 *     (the requestors are being closed meanwhile), and the process does not exit here —
 *     the program's listener decides what happens next. A program that wants its
 *     requestors left alone on a signal (say, to fetch what is done before it stops)
 *     connects them with `releaseOnSignal: false` and closes them itself.
 * - A second signal while releasing exits at once (unless the program listens too).
 * - While the release goes on (unless the program listens too), the program's calls fail as
 *   their activities go, and what it does not catch is passed over rather than ending the
 *   process early with code 1 and a stack trace: the process exits on the signal, as a
 *   Python requestor ends with KeyboardInterrupt.
 * @module
 */
/** How long a signal waits for the requestors to release what they hold before the process exits anyway. */
export declare const RELEASE_WAIT_MS = 10000;
export type Requestor = import("../requestor.js").Requestor;
/**
 * Have `requestor` closed (what it holds released) on SIGINT or SIGTERM, until it closes.
 * @param {Requestor} requestor
 */
export declare function releaseOnSignal(requestor: Requestor): void;
