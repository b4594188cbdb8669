// A command's input and live output (protocol 1.2), played through a stand-in socket: the
// tests are the hub, feeding literal messages and frames and reading what the client sends.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Activity } from "../../src/activity.js";
import {
  CancelledError,
  CommandTimeoutError,
  FileNotFoundError,
  NoMatchError,
  RemoteProtocolError,
  UnsupportedVersionError,
  UsageError,
} from "../../src/errors.js";
import { openSource, saveDownload } from "../../src/node/files.js";
import { Requestor } from "../../src/requestor.js";
import { LIMITS, connected, frame, tick } from "../support/fake_socket.js";

const RENTED = {
  type: "rented", re: 1, activity: "a1", provider: "p1", cached: true,
  resources: { cpus: 1, memory: 256 * 2 ** 20, storage: 0 },
};
const FILES = { open: openSource, save: saveDownload };

/** An activity over a stand-in hub (chunks of 4 bytes, a window of 4 at most). */
async function setup(version = "1.2", limits = LIMITS) {
  const { socket, conn } = await connected(limits, version);
  return { socket, conn, act: new Activity(conn, RENTED, FILES, () => {}) };
}

/** The exec_result of request `re`; `stdout` as text. */
const result = (re, { exitCode = 0, stdout = "", timedOut = false } = {}) => ({
  type: "exec_result", re, exit_code: exitCode, timed_out: timedOut, duration: 0.5,
  stdout: Buffer.from(stdout).toString("base64"), stderr: "",
});

/** An output DATA frame of stream `id`: its tag byte, then `text` (at most 3 bytes: the hub's chunks are 4). */
const output = (id, tag, text) => frame(0, id, Buffer.concat([Buffer.from([tag]), Buffer.from(text)]));

/** The exec the client sent (once it has: a local file is opened first), all else sent before it dropped. */
async function execSent(socket) {
  const sent = [];
  for (let i = 0; i < 100; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1));
    sent.push(...socket.take());
    const exec = sent.find((m) => m.type === "exec");
    if (exec !== undefined) return exec;
  }
  assert.fail(`no exec among ${JSON.stringify(sent)}`);
}

/** What the client sends until `count` frames came (a local file is read asynchronously), within a second. */
async function sentFrames(socket, count) {
  const sent = [];
  for (let i = 0; i < 1000 && sent.length < count; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1));
    sent.push(...socket.take());
  }
  return sent;
}

// --- stdin ---------------------------------------------------------------------------------

test("stdin goes within the credit granted, in chunks of chunk_bytes, then END", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const running = act.run(["wc", "-c"], { stdin: "0123456789" });
  const exec = await execSent(socket);
  assert.deepEqual(exec, { type: "exec", id: 1, activity: "a1", argv: ["wc", "-c"], env: {}, stdin: true });
  await tick();
  assert.deepEqual(socket.take(), [], "nothing before the provider's first credit");
  socket.receive({ type: "credit", stream: 1, chunks: 2 });
  await tick();
  assert.deepEqual(socket.take(), [frame(0, 1, "0123"), frame(0, 1, "4567")]);
  await tick();
  assert.deepEqual(socket.take(), [], "the credit is spent");
  socket.receive({ type: "credit", stream: 1, chunks: 1 });
  await tick();
  assert.deepEqual(socket.take(), [frame(0, 1, "89"), frame(1, 1)]);
  socket.receive(result(1, { stdout: "10\n" }));
  assert.equal((await running).stdout, "10\n");
});

test("stdin takes bytes, an async iterable of bytes, and a local file", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const file = join(mkdtempSync(join(tmpdir(), "kiln-stdin-")), "in.txt");
  writeFileSync(file, "from a file");
  async function* chunks() {
    yield new TextEncoder().encode("ab");
    yield new Uint8Array(0);
    yield new TextEncoder().encode("cdef");
  }
  const sources = [
    [new Uint8Array([1, 2, 3]), [Buffer.from([1, 2, 3])]],
    [chunks(), ["ab", "cdef"]],
    [{ file }, ["from", " a f", "ile"]],
  ];
  for (const [stdin, parts] of sources) {
    const running = act.run(["cat"], { stdin });
    const { id } = await execSent(socket);
    socket.receive({ type: "credit", stream: id, chunks: 4 });
    assert.deepEqual(await sentFrames(socket, parts.length + 1), [...parts.map((part) => frame(0, id, part)), frame(1, id)]);
    socket.receive(result(id));
    assert.equal((await running).exitCode, 0);
  }
});

test("a command that ends before reading all its input gets no more of it, and the run succeeds", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const running = act.run(["head", "-c", "4"], { stdin: new Uint8Array(4 * 100) });
  const { id } = await execSent(socket);
  socket.receive({ type: "credit", stream: id, chunks: 1 });
  await tick();
  assert.equal(socket.take().length, 1);
  socket.receive(result(id, { stdout: "xxxx" }));
  assert.equal((await running).stdout, "xxxx");
  socket.receive({ type: "credit", stream: id, chunks: 4 });
  for (let i = 0; i < 5; i++) await tick();
  assert.deepEqual(socket.take(), [], "neither data nor END after the reply");
});

test("a stdin source that fails aborts the stream; the run rejects with its error", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  async function* broken() {
    yield new TextEncoder().encode("ok");
    throw new Error("the source broke");
  }
  const running = act.run(["cat"], { stdin: broken() });
  const { id } = await execSent(socket);
  socket.receive({ type: "credit", stream: id, chunks: 4 });
  const [data, abort] = await sentFrames(socket, 2);
  assert.equal(data, frame(0, id, "ok"));
  assert.ok(abort.startsWith(`02000000${id.toString(16).padStart(8, "0")}`), "an ABORT frame");
  socket.receive({ type: "error", re: id, code: "transfer_failed", message: "aborted" });
  await assert.rejects(running, (e) => e.message === "the source broke");
});

test("bad stdin is refused before anything is sent", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  await assert.rejects(act.run(["cat"], { stdin: 42 }), UsageError);
  await assert.rejects(act.run(["cat"], { stdin: { file: "/no/such/file" } }), FileNotFoundError);
  await tick();
  assert.deepEqual(socket.take(), []);
});

test("a hub welcomed at 1.1 gets no 1.2 field: stdin and stream are refused here, a plain run goes", { timeout: 5_000 }, async () => {
  const { socket, act, conn } = await setup("1.1");
  await assert.rejects(act.run(["cat"], { stdin: "x" }), UnsupportedVersionError);
  await assert.rejects(act.stream(["cat"]).next(), UnsupportedVersionError);
  const requestor = new Requestor(conn, { files: FILES });
  await assert.rejects(requestor.rent({ image: "x", user: "root" }), UnsupportedVersionError);
  await tick();
  assert.deepEqual(socket.take(), [], "nothing was sent");
  const running = act.run(["true"]);
  const exec = await execSent(socket);
  assert.deepEqual(exec, { type: "exec", id: exec.id, activity: "a1", argv: ["true"], env: {} });
  socket.receive(result(exec.id));
  assert.equal((await running).exitCode, 0);
});

// --- live output -----------------------------------------------------------------------------

test("stream yields output in order with its kind, then the exit", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const events = act.stream(["sh", "-c", "echo a; echo b >&2"], { env: { X: "1" } });
  const first = events.next();
  const exec = await execSent(socket);
  assert.deepEqual(exec, {
    type: "exec", id: 1, activity: "a1", argv: ["sh", "-c", "echo a; echo b >&2"], env: { X: "1" },
    stream: true, window: 4,
  });
  socket.receiveBinary(output(1, 1, "a\n"));
  socket.receiveBinary(output(1, 2, "b\n"));
  // "é" split between two frames: each event's text holds whole characters.
  socket.receiveBinary(frame(0, 1, Buffer.from([1, 0xc3])));
  socket.receiveBinary(frame(0, 1, Buffer.from([1, 0xa9, 0x21])));
  socket.receiveBinary(frame(1, 1));
  socket.receive(result(1, { exitCode: 3 }));
  const seen = [(await first).value];
  for await (const event of { [Symbol.asyncIterator]: () => events }) seen.push(event);
  assert.deepEqual(
    seen.slice(0, 4).map((e) => [e.kind, Buffer.from(e.data).toString("hex"), e.text]),
    [["stdout", "610a", "a\n"], ["stderr", "620a", "b\n"], ["stdout", "c3", ""], ["stdout", "a921", "é!"]],
  );
  const exit = seen[4];
  assert.equal(seen.length, 5);
  assert.equal(exit.kind, "exit");
  assert.deepEqual([exit.result.exitCode, exit.result.stdout, exit.result.ok], [3, "", false]);
  assert.ok(Object.isFrozen(exit) && Object.isFrozen(seen[0]));
});

test("stream grants credit back as events are taken, and not before", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const events = act.stream(["yes"]);
  const first = events.next();
  const { id, window } = await execSent(socket);
  assert.equal(window, LIMITS.max_window);
  for (const text of ["1", "2", "3", "4"]) socket.receiveBinary(output(id, 1, text));
  await tick();
  assert.equal((await first).value.text, "1");
  assert.deepEqual(socket.take(), [], "one event taken: no credit yet");
  assert.equal((await events.next()).value.text, "2");
  assert.deepEqual(socket.take(), [{ type: "credit", stream: id, chunks: 2 }], "half a window taken: half a window back");
  await tick();
  assert.deepEqual(socket.take(), [], "no more until more is taken");
  assert.equal((await events.next()).value.text, "3");
  assert.equal((await events.next()).value.text, "4");
  assert.deepEqual(socket.take(), [{ type: "credit", stream: id, chunks: 2 }]);
  await events.return(undefined);
});

test("leaving the loop early cancels the command", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const reading = (async () => {
    for await (const event of act.stream(["yes"])) {
      if (event.text === "y\n") break;
    }
  })();
  const { id } = await execSent(socket);
  socket.receiveBinary(output(id, 1, "y\n"));
  await reading;
  assert.deepEqual(socket.take(), [{ type: "cancel", target: id }]);
  socket.receive({ type: "error", re: id, code: "cancelled", message: "cancelled" });
  socket.receiveBinary(output(id, 1, "y\n"));
  await tick();
  assert.deepEqual(socket.take(), [], "frames that cross the cancel are dropped");
});

test("an AbortSignal cancels a stream at once, even while the consumer is not reading", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const controller = new AbortController();
  const events = act.stream(["yes"], { signal: controller.signal });
  const first = events.next();
  const { id } = await execSent(socket);
  socket.receiveBinary(output(id, 1, "y\n"));
  socket.receiveBinary(output(id, 1, "y\n"));
  assert.equal((await first).value.text, "y\n");
  controller.abort();
  assert.deepEqual(socket.take(), [{ type: "cancel", target: id }]);
  await assert.rejects(events.next(), CancelledError);
});

test("an output frame that is not tagged stdout or stderr, or is empty, fails the stream with bad_frame", { timeout: 5_000 }, async () => {
  for (const bad of [output(1, 3, "x"), output(1, 0, "x"), frame(0, 1, Buffer.from([1]))]) {
    const { socket, act } = await setup();
    const events = act.stream(["cat"]);
    const first = events.next();
    await execSent(socket);
    socket.receiveBinary(output(1, 1, "ok"));
    socket.receiveBinary(bad);
    assert.equal((await first).value.text, "ok");
    await assert.rejects(events.next(), (e) => e instanceof RemoteProtocolError && e.code === "bad_frame" && e.re === 1);
    assert.deepEqual(socket.take().filter((m) => m.type === "cancel"), [{ type: "cancel", target: 1 }]);
  }
});

test("a streamed command past its timeout throws CommandTimeoutError after its output", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const events = act.stream(["sleep", "9"], { timeoutMs: 500 });
  const first = events.next();
  const exec = await execSent(socket);
  assert.equal(exec.timeout, 0.5);
  socket.receiveBinary(output(1, 1, "so"));
  socket.receiveBinary(frame(1, 1));
  socket.receive(result(1, { exitCode: 137, timedOut: true }));
  assert.equal((await first).value.text, "so");
  await assert.rejects(events.next(), (e) => e instanceof CommandTimeoutError && e.result.timedOut);
});

test("stream with stdin: one stream each way under the exec's id", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const events = act.stream(["cat"], { stdin: "hello" });
  const first = events.next();
  const exec = await execSent(socket);
  assert.deepEqual([exec.stdin, exec.stream], [true, true]);
  socket.receive({ type: "credit", stream: 1, chunks: 2 });
  await tick();
  assert.deepEqual(socket.take(), [frame(0, 1, "hell"), frame(0, 1, "o"), frame(1, 1)]);
  socket.receiveBinary(output(1, 1, "hel"));
  socket.receiveBinary(output(1, 1, "lo"));
  socket.receiveBinary(frame(1, 1));
  socket.receive(result(1));
  assert.equal((await first).value.text, "hel");
  assert.equal((await events.next()).value.text, "lo");
  assert.equal((await events.next()).value.kind, "exit");
  assert.equal((await events.next()).done, true);
});

test("a reply that comes before the output's END fails the stream rather than leave it waiting", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const events = act.stream(["true"]);
  const first = events.next();
  await execSent(socket);
  socket.receive(result(1));
  await assert.rejects(first, (e) => e instanceof RemoteProtocolError && e.code === "out_of_order");
});

// --- root -------------------------------------------------------------------------------------

test("rent passes user root on; anything else is refused here", { timeout: 5_000 }, async () => {
  const { socket, conn } = await setup();
  const requestor = new Requestor(conn, { files: FILES });
  const renting = requestor.rent({ image: "kiln-busybox:latest", user: "root" });
  await tick();
  const [rent] = socket.take();
  assert.equal(rent.user, "root");
  socket.receive({ type: "error", re: rent.id, code: "no_match", message: "no provider allows root" });
  await assert.rejects(renting, NoMatchError);
  await assert.rejects(requestor.rent({ image: "x", user: "admin" }), UsageError);
  const plain = requestor.rent({ image: "kiln-busybox:latest" });
  await tick();
  const [message] = socket.take();
  assert.equal("user" in message, false, "no user field unless asked");
  socket.receive({ ...RENTED, re: message.id });
  assert.equal((await plain).id, "a1");
});
