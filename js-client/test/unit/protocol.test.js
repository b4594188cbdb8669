// The pure protocol core: literal frames in, verdicts and values out.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

import {
  ErrorCode,
  abortFrame,
  FrameKind,
  LocalProtocolError,
  RemoteProtocolError,
  build,
  clip,
  containerPathProblem,
  decodeFrame,
  encodeFrame,
  parse,
  serialize,
} from "../../src/protocol/index.js";

const VECTORS = fileURLToPath(new URL("../../../protocol/v1/vectors/", import.meta.url));
const vectors = readdirSync(VECTORS)
  .filter((f) => f.endsWith(".json"))
  .sort()
  .map((f) => ({ file: f, ...JSON.parse(readFileSync(join(VECTORS, f), "utf8")) }));

/** The verdict of this implementation on one vector: "valid" or an error code (tests/unit/test_protocol.py::judge). */
function judge(vector) {
  try {
    if ("binary" in vector) decodeFrame(Buffer.from(vector.binary, "hex"), 256 * 1024);
    else parse(vector.frame);
  } catch (e) {
    if (e instanceof RemoteProtocolError) return e.code;
    throw e;
  }
  return "valid";
}

test("there are vectors of both verdicts", () => {
  assert.ok(vectors.length >= 59, `only ${vectors.length} vectors`);
  const verdicts = new Set(vectors.map((v) => v.verdict));
  assert.ok(verdicts.has("valid"));
  assert.ok(verdicts.size >= 5);
});

for (const vector of vectors) {
  test(`vector ${vector.file}: ${vector.verdict}`, () => {
    assert.equal(judge(vector), vector.verdict, vector.description);
  });
  if ("frame" in vector && vector.verdict === "valid") {
    test(`vector ${vector.file} survives a round trip`, () => {
      const message = parse(vector.frame);
      assert.deepEqual(parse(serialize(message)), message);
    });
  }
}

test("a violation carries the request id", () => {
  assert.throws(
    () => parse('{"type":"upload","id":42,"activity":"a","path":"/x/../y","size":1}'),
    (e) => e instanceof RemoteProtocolError && e.code === ErrorCode.BAD_PATH && e.re === 42 && e.message.includes("'..'"),
  );
});

test("a message built on this side that breaks the protocol is a LocalProtocolError", () => {
  assert.throws(
    () => build({ type: "upload", id: 42, activity: "a", path: "/x/../y", size: 1 }),
    (e) => e instanceof LocalProtocolError && !(e instanceof RemoteProtocolError) && e.code === ErrorCode.BAD_PATH,
  );
  assert.throws(() => build({ type: "hello" }), (e) => e instanceof LocalProtocolError && e.code === ErrorCode.BAD_MESSAGE);
  assert.throws(() => build({ type: "nope" }), (e) => e instanceof LocalProtocolError && e.code === ErrorCode.UNKNOWN_TYPE);
});

test("a bad path wins over other problems in the same message, as in pydantic", () => {
  assert.throws(
    () => parse('{"type":"upload","id":4,"activity":"a1","path":"rel"}'),
    (e) => e.code === ErrorCode.BAD_PATH,
  );
  // Too long is a bad path too (the length is part of the path rule); not a string is not.
  for (const long of ["/" + "a".repeat(5000), "a".repeat(5000)]) {
    assert.throws(
      () => parse(JSON.stringify({ type: "upload", id: 4, activity: "a1", path: long, size: 1 })),
      (e) => e.code === ErrorCode.BAD_PATH,
    );
  }
  assert.throws(
    () => parse(JSON.stringify({ type: "upload", id: 4, activity: "a1", path: 7, size: 1 })),
    (e) => e.code === ErrorCode.BAD_MESSAGE,
  );
});

test("a violation names the field of each problem, five at most", () => {
  const message = { type: "exec", id: 5, activity: "a b", argv: [], env: { "": 1 }, workdir: "/a/./b", extra: 1 };
  assert.throws(
    () => parse(JSON.stringify(message)),
    (e) =>
      e.code === ErrorCode.BAD_PATH &&
      e.message ===
        "invalid 'exec' message: extra: extra field not permitted; activity: must match pattern \"^[A-Za-z0-9_.-]{1,64}$\"; " +
          "argv: must NOT have fewer than 1 items; env..[key]: must NOT have fewer than 1 characters; env.: must be string",
  );
  assert.throws(
    () => parse('{"type":"rent","id":1,"image":"x"}'),
    (e) => e.message === "invalid 'rent' message: demand: field required",
  );
});

test("strict types: no coercion, bool is not a number, null only where optional", () => {
  const bad = [
    { type: "credit", stream: "1", chunks: 1 },
    { type: "credit", stream: 1, chunks: true },
    { type: "credit", stream: 1.5, chunks: 1 },
    { type: "rent", id: 1, image: "x", demand: { cpus: null } },
    { type: "exec_result", re: 1, exit_code: 0, timed_out: 0, stdout: "", stderr: "", duration: 0 },
    { type: "rent", id: 1, image: "x", demand: { labels: { "": "v" } } },
    { type: "hello", version: "1.0", role: "requestor", name: "a\nb" },
    { type: "hello", version: "1.0", role: "requestor", name: "x".repeat(65) },
    { type: "exec", id: 1, activity: "a", argv: ["true"], env: { X: 1 } },
  ];
  for (const message of bad) {
    assert.throws(() => parse(JSON.stringify(message)), (e) => e.code === ErrorCode.BAD_MESSAGE, JSON.stringify(message));
  }
  // Floats take integers; optional fields take null.
  const ok = parse('{"type":"exec","id":1,"activity":"a","argv":["true"],"timeout":2,"workdir":null}');
  assert.equal(ok.timeout, 2);
  // A name of 64 characters counts code points, not UTF-16 units.
  parse(JSON.stringify({ type: "hello", version: "1.0", role: "requestor", name: "😀".repeat(64) }));
});

test("defaults are filled in and messages are frozen", () => {
  const rent = parse('{"type":"rent","id":8,"image":"kiln-busybox:latest","demand":{}}');
  assert.deepEqual(rent.demand, { cpus: 1, memory: 256 * 2 ** 20, storage: 0, labels: {}, max_price: null, outbound: null });
  assert.ok(Object.isFrozen(rent) && Object.isFrozen(rent.demand));
  assert.throws(() => {
    "use strict";
    rent.id = 3;
  }, TypeError);
});

test("build checks a copy: the value given stays as it was", () => {
  const rent = { type: "rent", id: 8, image: "kiln-busybox:latest", demand: { labels: { zone: "eu" } } };
  const message = build(rent);
  assert.deepEqual(rent, { type: "rent", id: 8, image: "kiln-busybox:latest", demand: { labels: { zone: "eu" } } });
  assert.ok(!Object.isFrozen(rent.demand.labels));
  assert.equal(message.type === "rent" && message.demand.memory, 256 * 2 ** 20);
});

test("serialize omits unset optionals and refuses an invalid message", () => {
  const upload = { type: "upload", id: 3, activity: "a", path: "/golem/input/a.txt", size: 5 };
  assert.deepEqual(JSON.parse(serialize(upload)), { ...upload, mode: 0o644 });
  assert.deepEqual(JSON.parse(serialize({ type: "error", re: null, code: "internal", message: "x" })), {
    type: "error",
    code: "internal",
    message: "x",
  });
  assert.throws(() => serialize({ type: "credit", stream: 0, chunks: 1 }), LocalProtocolError);
});

test("clip makes text fit a free-text field, in characters, with no lone surrogate", () => {
  assert.equal(clip("short"), "short");
  assert.equal(clip("abcdef", 4), "abc\u2026");
  assert.equal(clip("😀😀😀", 2), "😀\u2026");
  assert.equal(clip("a\uD800b"), "a\uFFFDb");
  const error = { type: "error", code: "internal", message: clip("x".repeat(10_000)) };
  assert.equal(JSON.parse(serialize(error)).message.length, 4096);
});

test("container paths are checked as in Python", () => {
  // The verdicts of python/kiln/protocol/paths.py on each of these.
  for (const good of ["/", "/a", "/golem/input/a.txt", "/a/b.c/..d", "/" + "😀".repeat(4095)]) {
    assert.equal(containerPathProblem(good), null, good);
  }
  const bad = ["a", "", "/a/", "//a", "/a/b//", "//a//", "/a/../b", "/..", "/a//b", "/a/./b", "/.", "///", "//",
               "/a\0b", "///a", "/a/.", "/./", "/" + "a".repeat(4096)];
  for (const path of bad) {
    assert.notEqual(containerPathProblem(path), null, JSON.stringify(path));
  }
});

test("binary frames round trip and are checked", () => {
  const data = encodeFrame(FrameKind.DATA, 7, new TextEncoder().encode("hello"));
  const frame = decodeFrame(data, 16);
  assert.deepEqual([frame.kind, frame.stream, new TextDecoder().decode(frame.payload)], [FrameKind.DATA, 7, "hello"]);
  assert.throws(() => decodeFrame(encodeFrame(FrameKind.DATA, 1, new Uint8Array(17)), 16), (e) => e.code === "bad_frame" && e.re === 1);
  assert.throws(() => decodeFrame(encodeFrame(FrameKind.ABORT, 1, new Uint8Array(1025)), 16), (e) => e.code === "bad_frame");
  // An ABORT's reason is cut to 1024 bytes at a character's start.
  const reason = decodeFrame(abortFrame(3, "x".repeat(1023) + "é"), 16).payload;
  assert.deepEqual([reason.byteLength, new TextDecoder("utf-8", { fatal: true }).decode(reason)], [1023, "x".repeat(1023)]);
  // A frame that is a view into a larger buffer decodes from its own offset.
  const big = new Uint8Array(20);
  big.set(encodeFrame(FrameKind.END, 9), 4);
  assert.equal(decodeFrame(big.subarray(4, 12), 16).stream, 9);
});
