/**
 * Protocol kiln.v1, pure: messages, binary frames, limits and error codes. No I/O here.
 * @module
 */

export { ErrorCode, ERROR_CODES } from "./codes.js";
export { FrameKind, HEADER_SIZE, MAX_REASON_BYTES, encodeFrame, decodeFrame, abortFrame } from "./frames.js";
export * as limits from "./limits.js";
export {
  PROTOCOL_NAME,
  PROTOCOL_VERSION,
  MAJOR_VERSION,
  MAX_ID,
  MAX_PATH_LENGTH,
  MESSAGE_TYPES,
  FINAL_REPLIES,
  containerPathProblem,
  parse,
  serialize,
  validate,
} from "./messages.js";
export { ProtocolViolation } from "./violation.js";
