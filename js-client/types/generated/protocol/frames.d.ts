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
import { HEADER_SIZE, MAX_REASON_BYTES, MAX_STREAM_ID } from "./generated/limits.js";
/** MAX_STREAM_ID: a stream's id is its request's id. */
export { HEADER_SIZE, MAX_REASON_BYTES, MAX_STREAM_ID };
/** @enum {number} */
export declare const FrameKind: Readonly<{
    DATA: 0;
    END: 1;
    ABORT: 2;
}>;
export type Frame = {
    /**
     * one of {@link FrameKind}
     */
    kind: number;
    stream: number;
    /**
     * a view into the frame, not a copy
     */
    payload: Uint8Array;
};
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
export declare function encodeFrame(kind: number, stream: number, payload?: Uint8Array): Uint8Array;
/**
 * The ABORT frame of `stream`, its reason cut to {@link MAX_REASON_BYTES} bytes (at a
 * character's start, so the reason stays valid UTF-8).
 * @param {number} stream
 * @param {string} reason
 */
export declare function abortFrame(stream: number, reason: string): Uint8Array<ArrayBufferLike>;
/**
 * Split one binary frame into kind, stream and payload.
 * Throws {@link RemoteProtocolError} (`bad_frame`) on a short header, nonzero reserved
 * bytes, an unknown kind, a stream id outside 1 to 2^31-1 (a stream's id is its request's),
 * or a payload over its limit.
 * @param {Uint8Array} data
 * @param {number} maxPayload the largest DATA payload (the hub's `chunk_bytes`)
 * @returns {Frame}
 */
export declare function decodeFrame(data: Uint8Array, maxPayload: number): Frame;
