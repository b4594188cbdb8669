/**
 * Stable error codes shared by the protocol, the hub, the provider and every client.
 * Mirrors `python/kiln/protocol/codes.py`; a test checks that both list the same codes.
 *
 * A code never changes meaning once published; a later minor version may add codes,
 * so treat an unknown one like `internal`.
 * @module
 */

/** @type {Readonly<Record<string, string>>} */
export const ErrorCode = Object.freeze({
  // The frame or message itself is wrong (the peer broke the protocol).
  BAD_JSON: "bad_json",
  BAD_MESSAGE: "bad_message",
  UNKNOWN_TYPE: "unknown_type",
  MESSAGE_TOO_LARGE: "message_too_large",
  BAD_FRAME: "bad_frame",
  UNSUPPORTED_VERSION: "unsupported_version",
  UNAUTHORIZED: "unauthorized",
  NAME_TAKEN: "name_taken",
  OUT_OF_ORDER: "out_of_order",
  DUPLICATE_ID: "duplicate_id",
  TOO_MANY: "too_many",
  FLOW_CONTROL: "flow_control",
  BAD_PATH: "bad_path",
  // The message is well formed but names something that is not there (or not yours).
  UNKNOWN_ACTIVITY: "unknown_activity",
  UNKNOWN_STREAM: "unknown_stream",
  // The market.
  NO_MATCH: "no_match",
  IMAGE_NOT_FOUND: "image_not_found",
  // The image store (1.1).
  BAD_IMAGE: "bad_image",
  IMAGE_CORRUPT: "image_corrupt",
  STORE_FULL: "store_full",
  IMAGE_TOO_LARGE: "image_too_large",
  // The work.
  PROVIDER_LOST: "provider_lost",
  FILE_NOT_FOUND: "file_not_found",
  NOT_A_FILE: "not_a_file",
  TRANSFER_FAILED: "transfer_failed",
  CONTAINER_FAILED: "container_failed",
  CANCELLED: "cancelled",
  TIMEOUT: "timeout",
  CONNECTION_CLOSED: "connection_closed",
  // The requestor SDKs' own, never sent on the wire.
  COMMAND_FAILED: "command_failed",
  DOWNLOAD_TOO_LARGE: "download_too_large",
  TASK_FAILED: "task_failed",
  INTERNAL: "internal",
});

/** Every known code, for membership tests. */
export const ERROR_CODES = Object.freeze(new Set(Object.values(ErrorCode)));
