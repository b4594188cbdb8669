/**
 * Binary frames: the data of file streams (`python/kiln/protocol/frames.py`).
 *
 * Layout (all integers big-endian):
 *
 *     byte 0      kind: 0 = DATA, 1 = END, 2 = ABORT
 *     bytes 1-3   zero
 *     bytes 4-7   stream id: the id of the request that opened the stream
 *     bytes 8-    DATA: up to `chunk_bytes` of file data; END: nothing;
 *                 ABORT: a UTF-8 reason, at most 1024 bytes
 *
 * Each DATA frame spends one credit of the stream; END and ABORT spend none.
 * @module
 */

import { RemoteProtocolError } from "./errors.js";
import { ErrorCode } from "./generated/constants.js";
import { HEADER_SIZE, MAX_REASON_BYTES, MAX_STREAM_ID } from "./generated/limits.js";

/** MAX_STREAM_ID: a stream's id is its request's id. */
export { HEADER_SIZE, MAX_REASON_BYTES, MAX_STREAM_ID };

/** @enum {number} */
export const FrameKind = Object.freeze({ DATA: 0, END: 1, ABORT: 2 });
const KIND_NAMES = ["DATA", "END", "ABORT"];

/**
 * @typedef {object} Frame
 * @property {number} kind one of {@link FrameKind}
 * @property {number} stream
 * @property {Uint8Array} payload a view into the frame, not a copy
 */

/**
 * The bytes of one binary frame.
 * @param {number} kind
 * @param {number} stream
 * @param {Uint8Array} [payload]
 * @returns {Uint8Array}
 */
export function encodeFrame(kind, stream, payload = new Uint8Array(0)) {
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint8(0, kind);
  view.setUint32(4, stream);
  out.set(payload, HEADER_SIZE);
  return out;
}

/**
 * The ABORT frame of `stream`, its reason cut to {@link MAX_REASON_BYTES} bytes (at a
 * character's start, so the reason stays valid UTF-8).
 * @param {number} stream
 * @param {string} reason
 */
export function abortFrame(stream, reason) {
  const bytes = new TextEncoder().encode(reason);
  let end = Math.min(bytes.byteLength, MAX_REASON_BYTES);
  // A UTF-8 continuation byte (10xxxxxx) just past the cut means a character was split.
  while (end < bytes.byteLength && end > 0 && (bytes[end] & 0xc0) === 0x80) end -= 1;
  return encodeFrame(FrameKind.ABORT, stream, bytes.subarray(0, end));
}

/**
 * Split one binary frame into kind, stream and payload.
 * Throws {@link RemoteProtocolError} (`bad_frame`) on a short header, nonzero reserved
 * bytes, an unknown kind, a stream id outside 1 to 2^31-1 (a stream's id is its request's),
 * or a payload over its limit.
 * @param {Uint8Array} data
 * @param {number} maxPayload the largest DATA payload (the hub's `chunk_bytes`)
 * @returns {Frame}
 */
export function decodeFrame(data, maxPayload) {
  if (data.byteLength < HEADER_SIZE) {
    throw badFrame(`binary frame shorter than its ${HEADER_SIZE}-byte header`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const kind = view.getUint8(0);
  const stream = view.getUint32(4);
  if (data[1] !== 0 || data[2] !== 0 || data[3] !== 0) {
    throw badFrame("binary frame header bytes 1-3 must be zero");
  }
  if (kind > FrameKind.ABORT) {
    throw badFrame(`unknown binary frame kind ${kind}`);
  }
  if (stream < 1 || stream > MAX_STREAM_ID) {
    throw badFrame(`binary frame for stream ${stream}: a stream id is 1 to 2^31-1`);
  }
  const payload = data.subarray(HEADER_SIZE);
  const limit = kind === FrameKind.DATA ? maxPayload : kind === FrameKind.END ? 0 : MAX_REASON_BYTES;
  if (payload.byteLength > limit) {
    throw badFrame(`${KIND_NAMES[kind]} frame payload of ${payload.byteLength} bytes exceeds ${limit}`, stream);
  }
  return { kind, stream, payload };
}

/** @param {string} message @param {number | null} [stream] */
const badFrame = (message, stream = null) => new RemoteProtocolError(message, { code: ErrorCode.BAD_FRAME, re: stream });
