/**
 * What both entry points (Node and browser) export besides `connect`.
 * @module
 */

export { Activity, Result, containerPath } from "./activity.js";
export { Job, JobSummary } from "./executor.js";
export { Requestor, demandMessage } from "./requestor.js";
export { parseSize } from "./units.js";
export { ErrorCode, ERROR_CODES } from "./protocol/codes.js";
export { PROTOCOL_NAME, PROTOCOL_VERSION } from "./protocol/messages.js";
export {
  KilnError,
  UsageError,
  InvalidPathError,
  ProtocolError,
  LocalProtocolError,
  RemoteProtocolError,
  UnsupportedVersionError,
  ConnectionClosedError,
  ConnectionLostError,
  UnauthorizedError,
  NoMatchError,
  ImageNotFoundError,
  ActivityError,
  ProviderLostError,
  CommandTimeoutError,
  FileNotFoundError,
  TransferFailedError,
  ContainerFailedError,
  CancelledError,
  TaskTimeoutError,
  TaskFailedError,
  RetryTaskError,
  RemoteError,
  errorFromCode,
} from "./errors.js";
