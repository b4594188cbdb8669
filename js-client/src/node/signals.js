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

import { constants } from "node:os";

import { settlesWithin } from "../deferred.js";

/** How long a signal waits for the requestors to release what they hold before the process exits anyway. */
export const RELEASE_WAIT_MS = 10_000;
const SIGNALS = /** @type {const} */ (["SIGINT", "SIGTERM"]);

/** @typedef {import("../requestor.js").Requestor} Requestor */

/** @type {Set<Requestor>} the open requestors that release on a signal */
const held = new Set();
/** @type {Promise<void> | null} the release under way, once a signal came */
let releasing = null;

/** An error the program did not catch while its requestors release on a signal: not the end of the process. */
const expected = () => {};

/** @param {NodeJS.Signals} signal */
function onSignal(signal) {
  const theirs = process.listenerCount(signal) > 1; // the program listens too: it decides
  const exit = () => {
    if (!theirs) process.exit(128 + constants.signals[signal]);
  };
  if (releasing !== null) {
    exit(); // a second signal: no more waiting
    return;
  }
  if (!theirs) {
    // The program's calls fail as their activities go (a map rejects with TaskFailedError, a
    // run with CancelledError): what it does not catch must not end the process, with code 1
    // and a stack trace, before the release is done. It is exiting on the signal anyway.
    process.on("uncaughtException", expected);
    process.on("unhandledRejection", expected);
  }
  const closing = Promise.allSettled([...held].map((requestor) => requestor.close()));
  releasing = settlesWithin(closing, RELEASE_WAIT_MS).then(() => {
    releasing = null;
    if (held.size === 0) uninstall();
    exit();
  });
}

const listeners = new Map(SIGNALS.map((signal) => [signal, () => onSignal(signal)]));

function install() {
  for (const [signal, listener] of listeners) process.on(signal, listener);
}

function uninstall() {
  for (const [signal, listener] of listeners) process.off(signal, listener);
}

/**
 * Have `requestor` closed (what it holds released) on SIGINT or SIGTERM, until it closes.
 * @param {Requestor} requestor
 */
export function releaseOnSignal(requestor) {
  if (held.size === 0) install();
  held.add(requestor);
  void requestor._closed.promise.then(() => {
    held.delete(requestor);
    // Kept while a signal's release is under way, so that a second signal ends it.
    if (held.size === 0 && releasing === null) uninstall();
  });
}

