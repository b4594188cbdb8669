import { test } from "node:test";
import assert from "node:assert/strict";

import { parseSize, UsageError, demandMessage, containerPath, InvalidPathError } from "../src/node/index.js";

test("sizes as people write them", () => {
  assert.equal(parseSize(1024), 1024);
  assert.equal(parseSize("256MiB"), 256 * 2 ** 20);
  assert.equal(parseSize("2GiB"), 2 * 2 ** 30);
  assert.equal(parseSize("1.5G"), 1.5e9);
  assert.equal(parseSize(" 10 kb "), 10_000);
  for (const bad of [-1, "1 parsec", "lots", Number.NaN, true, null]) assert.throws(() => parseSize(bad), UsageError);
});

test("a demand is checked before anything is sent", () => {
  assert.deepEqual(demandMessage({ cpus: 0.5, memory: "128MiB" }), {
    cpus: 0.5, memory: 128 * 2 ** 20, storage: 0, labels: {},
  });
  assert.throws(() => demandMessage({ cpus: 0 }), UsageError);
  assert.throws(() => demandMessage({ cpus: "1" }), UsageError);
});

test("container paths are checked locally", () => {
  assert.equal(containerPath("/golem/input/a.txt"), "/golem/input/a.txt");
  for (const bad of ["relative", "/golem/../etc/passwd", "/a//b", "", 5]) {
    assert.throws(() => containerPath(bad), (e) => e instanceof InvalidPathError && e.code === "bad_path");
  }
});

test("an invalid message is refused before it is sent, as a UsageError", async () => {
  const { Endpoint } = await import("../src/endpoint.js");
  const sent = [];
  const socket = { addEventListener() {}, send: (d) => sent.push(d), close() {}, bufferedAmount: 0 };
  const endpoint = new Endpoint(socket, undefined);
  assert.throws(
    () => endpoint.send({ type: "upload", id: 1, activity: "a", path: "/x", size: 1, mode: 0o4755 }),
    (e) => e instanceof UsageError && e.code === "bad_message",
  );
  assert.deepEqual(sent, []);
  endpoint.send({ type: "cancel", target: 1 });
  assert.deepEqual(sent, ['{"type":"cancel","target":1}']);
});
