/**
 * Protocol kiln.v1, pure: messages, binary frames, limits, error codes, the error tree
 * and the session core. No I/O here, and no import from outside this folder.
 * @module
 */
export { ErrorCode, ERROR_CODES, CloseCode } from "./generated/constants.js";
export * from "./errors.js";
export { FrameKind, HEADER_SIZE, MAX_REASON_BYTES, encodeFrame, decodeFrame, abortFrame } from "./frames.js";
export * as limits from "./generated/limits.js";
export { PROTOCOL_NAME, PROTOCOL_VERSION, MAJOR_VERSION, MINOR_VERSION, MAX_ID, MAX_EXCLUDE, MAX_PATH_LENGTH, MAX_TEXT, MESSAGE_TYPES, FINAL_REPLIES, INTERIM_REPLIES, build, clip, containerPathProblem, parse, serialize, } from "./messages.js";
export { Session, State } from "./session.js";
