// The session core, driven by the session vectors both languages run: literal frames and
// calls in, literal frames, events and errors out. tests/unit/test_session.py runs the same
// files through the Python Session; this runner reads them the same way.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

import { KilnError, LocalProtocolError, Session, serialize } from "../../src/protocol/index.js";

const SESSIONS = fileURLToPath(new URL("../../../protocol/v1/vectors/sessions/", import.meta.url));
const files = readdirSync(SESSIONS)
  .filter((f) => f.endsWith(".json"))
  .sort();
const vectors = files.map((file) => ({ file, ...JSON.parse(readFileSync(join(SESSIONS, file), "utf8")) }));

/** The class name both languages share (JavaScript's carry an `Error` suffix). */
const errorName = (error) => error.constructor.name.replace(/Error$/, "");

/** A message as the vectors write it: its JSON, unset optionals left out. */
const asJson = (message) => JSON.parse(serialize(message));

const hex = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");

/** An event as the vectors write it. */
function describe(event) {
  switch (event.type) {
    case "welcomed":
      return event.welcome.resumed == null
        ? { event: "welcomed", version: event.welcome.version }
        : { event: "welcomed", version: event.welcome.version, resumed: event.welcome.resumed };
    case "replied":
      return { event: "replied", request: event.request, reply: asJson(event.reply) };
    case "failed":
      return { event: "failed", request: event.request, error: errorName(event.error), code: event.error.code };
    case "informed":
      return { event: "informed", request: event.request, info: asJson(event.info) };
    case "requested":
      return { event: "requested", message: asJson(event.message) };
    case "cancelRequested":
      return { event: "cancel_requested", request: event.request };
    case "notified":
      return { event: "notified", message: asJson(event.message) };
    case "credited":
      return { event: "credited", stream: event.stream, chunks: event.chunks };
    case "dataReceived":
      return { event: "data", stream: event.stream, data: hex(event.data) };
    case "streamEnded":
      return { event: "stream_ended", stream: event.stream };
    case "streamFailed":
      return { event: "stream_failed", stream: event.stream, error: errorName(event.error), code: event.error.code };
    case "violated":
      return { event: "violated", error: errorName(event.error), code: event.error.code };
    case "closed":
      return { event: "closed", error: errorName(event.error), code: event.error.code };
  }
  throw new Error(`unknown event ${event.type}`);
}

const sent = (out) => (out.binary ? { binary: hex(out.data) } : JSON.parse(out.data));

/** An expected error frame without a `message` matches any message: the text is for people. */
function matches(expected, actual) {
  if (expected.type === "error" && !("message" in expected)) {
    actual = Object.fromEntries(Object.entries(actual).filter(([key]) => key !== "message"));
  }
  try {
    assert.deepStrictEqual(actual, expected);
    return true;
  } catch {
    return false;
  }
}

function act(session, step) {
  if ("receive" in step) session.receiveText(JSON.stringify(step.receive));
  else if ("receive_text" in step) session.receiveText(step.receive_text);
  else if ("receive_binary" in step) session.receiveBinary(Buffer.from(step.receive_binary, "hex"));
  else if ("lost" in step) session.connectionLost(step.lost);
  else if ("call" in step) {
    const call = step.call;
    if (call === "request") session.request(step.message);
    else if (call === "reply") session.reply(step.message);
    else if (call === "notify") session.notify(step.message);
    else if (call === "send_data") session.sendData(step.stream, Buffer.from(step.data, "hex"));
    else if (call === "end_stream") session.endStream(step.stream);
    else if (call === "abort_stream") session.abortStream(step.stream, step.reason);
    else if (call === "grant") session.grant(step.stream, step.chunks);
    else if (call === "cancel") session.cancel(step.request);
    else if (call === "close") session.close();
    else throw new Error(`unknown call ${call}`);
  }
}

for (const vector of vectors) {
  test(`session vector ${vector.file}`, () => {
    const session = new Session(vector.role, vector.name, { software: vector.software, resume: vector.resume });
    vector.steps.forEach((step, number) => {
      const where = `${vector.file} step ${number}: ${JSON.stringify(step).slice(0, 160)}`;
      let raised = null;
      try {
        act(session, step);
      } catch (e) {
        if (!(e instanceof KilnError)) throw e;
        raised = e;
      }
      if ("raises" in step) {
        assert.notEqual(raised, null, `${where}: expected ${JSON.stringify(step.raises)}, nothing was raised`);
        assert.deepEqual({ error: errorName(raised), code: raised.code }, step.raises, where);
      } else {
        assert.equal(raised, null, `${where}: raised ${raised}`);
      }
      const sends = session.dataToSend().map(sent);
      const expectedSends = step.sends ?? [];
      assert.ok(
        sends.length === expectedSends.length && expectedSends.every((expected, i) => matches(expected, sends[i])),
        `${where}: sent ${JSON.stringify(sends)}`,
      );
      assert.deepEqual(session.eventsReceived().map(describe), step.events ?? [], where);
    });
  });
}

test("there are session vectors for both roles", () => {
  assert.deepEqual(new Set(vectors.map((v) => v.role)), new Set(["requestor", "provider"]));
  assert.ok(vectors.length >= 20, `only ${vectors.length} session vectors`);
});

const LIMITS = {
  max_message_bytes: 2 ** 20, max_frame_bytes: 2 ** 22, chunk_bytes: 8, max_window: 4,
  max_pending: 4, max_streams: 2, max_output_bytes: 1024,
};

function welcomed(role = "requestor") {
  const session = new Session(role, "t");
  const welcome = { type: "welcome", version: "1.0", session: "r1", software: "hub", limits: LIMITS };
  session.receiveText(JSON.stringify(welcome));
  session.dataToSend();
  assert.deepEqual(session.eventsReceived().map((e) => e.type), ["welcomed"]);
  return session;
}

test("new ids pass over the ids of open requests", () => {
  const session = welcomed();
  session.request({ type: "market", id: 2 });
  assert.equal(session.newId(), 1);
  assert.equal(session.newId(), 3, "2 is open");
});

test("limits exist only once welcomed", () => {
  assert.throws(() => new Session("requestor", "t").limits, LocalProtocolError);
  assert.equal(welcomed().limits.chunk_bytes, 8);
});

test("an invalid hello is refused before anything is queued", () => {
  assert.throws(() => new Session("requestor", "a\nb"), (e) => e instanceof LocalProtocolError && e.code === "bad_message");
});

test("a data frame is a view of the frame, not a copy", () => {
  const session = welcomed();
  session.request({ type: "download", id: 1, activity: "a", path: "/a", window: 1 });
  const frame = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1, ...new TextEncoder().encode("payload")]);
  session.receiveBinary(frame);
  const [event] = session.eventsReceived();
  assert.equal(event.type, "dataReceived");
  assert.equal(event.data.buffer, frame.buffer);
  assert.equal(event.data.byteOffset, 8);
});

test("events and frames are frozen values", () => {
  const session = welcomed();
  session.request({ type: "market", id: 1 });
  const [out] = session.dataToSend();
  session.receiveText(JSON.stringify({ type: "market_info", re: 1, providers: [], matched: 0, activities: 0 }));
  const [event] = session.eventsReceived();
  assert.ok(Object.isFrozen(out) && Object.isFrozen(event) && Object.isFrozen(event.reply));
});
