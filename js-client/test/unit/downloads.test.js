// Downloads from a provider that does not keep its word, played through a stand-in socket:
// a file must be exactly the size announced in `download_info`, `maxBytes` bounds what is
// taken, the stream is cancelled as soon as either rule breaks (or a folder's archive
// is found broken), and no file (nor its temporary file) is left behind.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Activity } from "../../src/activity.js";
import { DownloadTooLargeError, TransferFailedError, UsageError } from "../../src/errors.js";
import { openSource, saveDownload } from "../../src/node/files.js";
import { LIMITS, connected, frame, tick } from "../support/fake_socket.js";

const MiB = 2 ** 20;
const RENTED = {
  type: "rented", re: 1, activity: "a1", provider: "p1", cached: true,
  resources: { cpus: 1, memory: 256 * MiB, storage: 0 },
};

/** An activity over a stand-in hub whose chunks are `chunkBytes` long, and a fresh local folder. */
async function setup(chunkBytes = LIMITS.chunk_bytes, rented = RENTED) {
  const { socket, conn } = await connected({ ...LIMITS, chunk_bytes: chunkBytes, max_window: 8 });
  const act = new Activity(conn, rented, { open: openSource, save: saveDownload }, () => {});
  const dir = mkdtempSync(join(tmpdir(), "kiln-dl-"));
  return { socket, act, dir };
}

/** Play the provider for the download `act` just asked for: its info, then `chunks`. */
async function answer(socket, info, chunks = []) {
  await tick();
  const [request] = socket.take();
  assert.equal(request.type, "download");
  socket.receive({ type: "download_info", re: request.id, mode: 0o644, ...info });
  for (const chunk of chunks) socket.receiveBinary(frame(0, request.id, chunk));
  return request.id;
}

/** Then end the stream and the request. */
function finish(socket, id, bytes) {
  socket.receiveBinary(frame(1, id));
  socket.receive({ type: "done", re: id, bytes });
}

const cancelOf = (socket, id) => socket.take().filter((m) => m.type === "cancel" && m.target === id);

test("a provider announcing 5 bytes and sending 3 MiB fails at the first chunk; the stream is cancelled", { timeout: 5_000 }, async () => {
  const { socket, act, dir } = await setup(MiB);
  const downloading = act.downloadFile("/golem/output/a.txt", join(dir, "a.txt"));
  const id = await answer(socket, { kind: "file", size: 5 }, [0, 1, 2].map(() => Buffer.alloc(MiB, 0x61)));
  await assert.rejects(downloading, (e) => e instanceof TransferFailedError && /more than the 5 bytes it announced/.test(e.message));
  assert.equal(cancelOf(socket, id).length, 1);
  assert.deepEqual(readdirSync(dir), [], "neither the file nor its temporary file");
});

test("a file that ends short of its announced size fails, in memory and on disk", { timeout: 5_000 }, async () => {
  const { socket, act, dir } = await setup();
  const downloading = act.downloadFile("/golem/output/a.txt", join(dir, "a.txt"));
  finish(socket, await answer(socket, { kind: "file", size: 10 }, ["hell", "o"]), 5);
  await assert.rejects(downloading, (e) => e instanceof TransferFailedError && /sent 5 of the 10 bytes/.test(e.message));
  assert.deepEqual(readdirSync(dir), []);

  const reading = act.downloadBytes("/golem/output/a.txt");
  finish(socket, await answer(socket, { kind: "file", size: 10 }, ["hell", "o"]), 5);
  await assert.rejects(reading, (e) => e instanceof TransferFailedError && /sent 5 of the 10 bytes/.test(e.message));
});

test("a file of its announced size is written whole, and no temporary file stays", { timeout: 5_000 }, async () => {
  const { socket, act, dir } = await setup();
  const downloading = act.downloadFile("/golem/output/a.txt", join(dir, "a.txt"), { maxBytes: 5 });
  finish(socket, await answer(socket, { kind: "file", size: 5 }, ["hell", "o"]), 5);
  assert.equal(await downloading, join(dir, "a.txt"));
  assert.deepEqual(readdirSync(dir), ["a.txt"]);
  assert.equal(readFileSync(join(dir, "a.txt"), "utf8"), "hello");
});

test("a stream the provider aborts midway leaves no temporary file", { timeout: 5_000 }, async () => {
  const { socket, act, dir } = await setup();
  const downloading = act.downloadFile("/golem/output/a.txt", join(dir, "a.txt"));
  const id = await answer(socket, { kind: "file", size: 12 }, ["abcd", "efgh"]);
  await tick(); // the two chunks reach the temporary file
  socket.receiveBinary(frame(2, id, "disk gone"));
  await assert.rejects(downloading, (e) => e instanceof TransferFailedError && /disk gone/.test(e.message));
  assert.deepEqual(readdirSync(dir), []);
});

test("a destination that cannot be written is the caller's UsageError, and the stream is cancelled", { timeout: 5_000 }, async () => {
  const { socket, act, dir } = await setup();
  writeFileSync(join(dir, "taken"), "a file, not a folder");
  const downloading = act.downloadFile("/golem/output/a.txt", join(dir, "taken", "a.txt"));
  const id = await answer(socket, { kind: "file", size: 5 });
  await assert.rejects(downloading, (e) => e instanceof UsageError && /cannot write into .*taken/.test(e.message));
  assert.equal(cancelOf(socket, id).length, 1);
});

test("maxBytes refuses a file announced larger before taking any data", { timeout: 5_000 }, async () => {
  const { socket, act, dir } = await setup();
  const downloading = act.downloadFile("/golem/output/a.txt", join(dir, "a.txt"), { maxBytes: 4 });
  const id = await answer(socket, { kind: "file", size: 10 });
  await assert.rejects(downloading, (e) => e instanceof UsageError && /holds 10 bytes, more than maxBytes=4/.test(e.message));
  assert.equal(cancelOf(socket, id).length, 1);
  assert.deepEqual(readdirSync(dir), []);
});

test("maxBytes bounds what streams when no size is announced: a folder's archive, a file of unknown size", { timeout: 5_000 }, async () => {
  const { socket, act, dir } = await setup();
  const extracting = act.downloadFile("/golem/output", join(dir, "out"), { maxBytes: 6 });
  const id = await answer(socket, { kind: "dir", size: null }, ["abcd", "efgh"]);
  await assert.rejects(extracting, (e) => e instanceof UsageError && /larger than maxBytes=6/.test(e.message));
  assert.equal(cancelOf(socket, id).length, 1);

  const reading = act.downloadBytes("/golem/output/a.txt", { maxBytes: 6 });
  const second = await answer(socket, { kind: "file", size: null }, ["abcd", "efgh"]);
  await assert.rejects(reading, (e) => e instanceof UsageError && /larger than maxBytes=6/.test(e.message));
  assert.equal(cancelOf(socket, second).length, 1);
});

test("a folder whose archive is garbage fails as a TransferFailedError, and its stream is cancelled", { timeout: 5_000 }, async () => {
  const { socket, act, dir } = await setup(512);
  const extracting = act.downloadFile("/golem/output", join(dir, "out"));
  const id = await answer(socket, { kind: "dir", size: null }, [Buffer.alloc(512, "garbage ")]);
  await assert.rejects(extracting, (e) => e instanceof TransferFailedError && /archive of \/golem\/output is damaged/.test(e.message));
  assert.equal(cancelOf(socket, id).length, 1);
  assert.deepEqual(readdirSync(join(dir, "out")), []);
});

test("a maxBytes that is not a whole number of bytes is refused before anything is sent", { timeout: 5_000 }, async () => {
  const { socket, act, dir } = await setup();
  for (const maxBytes of [-1, 1.5, "10", Infinity]) {
    await assert.rejects(act.downloadBytes("/golem/output/a.txt", { maxBytes }), UsageError, String(maxBytes));
    await assert.rejects(act.downloadFile("/golem/output/a.txt", join(dir, "a"), { maxBytes }), UsageError, String(maxBytes));
  }
  assert.deepEqual(socket.take(), []);
});

test("by default a download to a file takes at most the storage rented (256 MiB when the rent named none)", { timeout: 10_000 }, async () => {
  const tooLarge = (pattern) => (e) => e instanceof DownloadTooLargeError && e instanceof UsageError
    && e.code === "download_too_large" && pattern.test(e.message);
  {
    const { socket, act, dir } = await setup();
    assert.equal(act.storage, 256 * MiB);
    const downloading = act.downloadFile("/golem/output/a.txt", join(dir, "a.txt"));
    const id = await answer(socket, { kind: "file", size: 300 * MiB });
    await assert.rejects(downloading, tooLarge(/holds 314572800 bytes, more than maxBytes=268435456/));
    assert.equal(cancelOf(socket, id).length, 1);
    assert.deepEqual(readdirSync(dir), []);
  }
  const small = { ...RENTED, resources: { ...RENTED.resources, storage: 4 * MiB } };
  const { socket, act, dir } = await setup(2 * MiB, small);
  assert.equal(act.storage, 4 * MiB);
  const downloading = act.downloadFile("/golem/output/a.txt", join(dir, "a.txt"));
  const id = await answer(socket, { kind: "file", size: null }, [0, 1, 2].map(() => Buffer.alloc(2 * MiB, 0x61)));
  await assert.rejects(downloading, tooLarge(/larger than maxBytes=4194304/));
  assert.equal(cancelOf(socket, id).length, 1);
  assert.deepEqual(readdirSync(dir), []);
  // maxBytes raises the bound.
  const raised = act.downloadFile("/golem/output/a.txt", join(dir, "a.txt"), { maxBytes: 8 * MiB });
  const chunks = [2, 2, 1].map((n) => Buffer.alloc(n * MiB, 0x62));
  finish(socket, await answer(socket, { kind: "file", size: 5 * MiB }, chunks), 5 * MiB);
  await raised;
  assert.equal(readFileSync(join(dir, "a.txt")).byteLength, 5 * MiB);
});
