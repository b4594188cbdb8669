// Generated from protocol/v1/schema.json by js-client/scripts/generate.mjs: do not edit.
// Run `make schema` after changing the models in python/kiln/protocol/.

/** The name of the protocol, offered as the WebSocket subprotocol. */
export const PROTOCOL_NAME = "kiln.v1";
/** The "MAJOR.MINOR" version this side speaks. */
export const PROTOCOL_VERSION = "1.7";
export const MAJOR_VERSION = 1;
/** The minor version this side speaks (a hub may welcome it at a lower one). */
export const MINOR_VERSION = 7;

/**
 * The stable error codes, by name (`ErrorCode.NO_MATCH` is "no_match"). A code never
 * changes meaning once published; a later minor version may add codes, so treat an unknown
 * one like `internal`.
 * @type {Readonly<Record<string, string>>}
 */
export const ErrorCode = Object.freeze({
  /** a binary frame with a bad layout or an oversized payload (sent by: hub, provider) */
  BAD_FRAME: "bad_frame",
  /** (1.1) not an image: a config that does not describe the pushed layers, a bad `docker save` archive (sent by: hub) */
  BAD_IMAGE: "bad_image",
  /** the text frame is not JSON (sent by: hub, provider) */
  BAD_JSON: "bad_json",
  /** not an object, no `type`, a missing or extra field, a wrong type or range (sent by: hub, provider) */
  BAD_MESSAGE: "bad_message",
  /** a container path that is relative, not normalized, or holds `..` (sent by: hub, provider) */
  BAD_PATH: "bad_path",
  /** (1.5) a rent whose hold what is left of its group's budget cannot cover; an activity ended when its group's budget ran out (a job's `BudgetExceeded`) (sent by: hub, client) */
  BUDGET_EXCEEDED: "budget_exceeded",
  /** the request was cancelled (sent by: hub, provider) */
  CANCELLED: "cancelled",
  /** a command run with `check` exited with a code other than 0 (raised by the client itself, never sent) */
  COMMAND_FAILED: "command_failed",
  /** the connection to the hub is gone (raised by the client itself, never sent) */
  CONNECTION_CLOSED: "connection_closed",
  /** (1.7) a `connect` to a port of the container where nothing listens (sent by: provider) */
  CONNECTION_REFUSED: "connection_refused",
  /** Docker refused an operation (sent by: provider) */
  CONTAINER_FAILED: "container_failed",
  /** a download would pass its bound (by default the storage rented) (raised by the client itself, never sent) */
  DOWNLOAD_TOO_LARGE: "download_too_large",
  /** a request id already open on this connection (sent by: hub, provider) */
  DUPLICATE_ID: "duplicate_id",
  /** (1.5) an activity ended by the hub at its rent's `max_duration` (sent by: hub) */
  EXPIRED: "expired",
  /** no such path in the container (sent by: provider) */
  FILE_NOT_FOUND: "file_not_found",
  /** data without credit, or credit over `max_window` (sent by: hub, provider) */
  FLOW_CONTROL: "flow_control",
  /** (1.1) a blob's bytes do not match its digest or declared size (sent by: hub, provider) */
  IMAGE_CORRUPT: "image_corrupt",
  /** the provider does not hold the image (and may not fetch it), or the store has no such image (sent by: hub, provider) */
  IMAGE_NOT_FOUND: "image_not_found",
  /** (1.4) the image's layers would expand past a limit: the hub's or a provider's image cache (sent by: hub, provider) */
  IMAGE_TOO_LARGE: "image_too_large",
  /** (1.5) a rent of a priced provider whose worst-case cost the requestor's available credits cannot hold (or by a requestor with no account); an activity whose hold ran out (sent by: hub) */
  INSUFFICIENT_FUNDS: "insufficient_funds",
  /** anything else; also how to treat a code you do not know (sent by: hub, provider, client) */
  INTERNAL: "internal",
  /** a text frame over `limits.max_message_bytes` (the connection stays open) (sent by: hub) */
  MESSAGE_TOO_LARGE: "message_too_large",
  /** a provider with that name is connected (sent by: hub) */
  NAME_TAKEN: "name_taken",
  /** no provider can take the demand now (sent by: hub) */
  NO_MATCH: "no_match",
  /** a folder where a file is needed (or the reverse) (sent by: provider) */
  NOT_A_FILE: "not_a_file",
  /** (1.7) an `unpublish` of a token that is not one of yours (sent by: hub) */
  NOT_PUBLISHED: "not_published",
  /** a message not allowed now or for this role (anything before `hello`, a reply to no open request) (sent by: hub, provider) */
  OUT_OF_ORDER: "out_of_order",
  /** the activity's provider disconnected (sent by: hub) */
  PROVIDER_LOST: "provider_lost",
  /** (1.1) the hub's image store cannot make room for the push (sent by: hub) */
  STORE_FULL: "store_full",
  /** a job's task failed for good (raised by the client itself, never sent) */
  TASK_FAILED: "task_failed",
  /** a command ran past its timeout (or a job's task past its own) (raised by the client itself, never sent) */
  TIMEOUT: "timeout",
  /** over `max_pending` requests or `max_streams` streams, a `rent` past the activities one connection may hold, or too many connections or failed hellos (sent by: hub, provider) */
  TOO_MANY: "too_many",
  /** a stream broke off, or its size was wrong (sent by: hub, provider) */
  TRANSFER_FAILED: "transfer_failed",
  /** wrong or missing token, a credential of the other role, a provider name bound to another credential, a revoked credential; an `activities` with `all` without an admin credential; a `remove_image` or `share_image` of an image the requestor does not own (sent by: hub) */
  UNAUTHORIZED: "unauthorized",
  /** no such activity of yours, or not ready (sent by: hub, provider) */
  UNKNOWN_ACTIVITY: "unknown_activity",
  /** a frame or credit for a stream that is not open (sent by: hub, provider) */
  UNKNOWN_STREAM: "unknown_stream",
  /** a `type` this version does not define (sent by: hub, provider) */
  UNKNOWN_TYPE: "unknown_type",
  /** hello with another major version (sent by: hub) */
  UNSUPPORTED_VERSION: "unsupported_version",
});

/** Every known code, for membership tests. */
export const ERROR_CODES = Object.freeze(new Set(Object.values(ErrorCode)));

/** The WebSocket close codes of the protocol, by name: RFC 6455's it gives a meaning, and its own (4000-4999). */
export const CloseCode = Object.freeze({
  /** never sent: the connection ended without a close frame */
  ABNORMAL: 1006,
  /** too many failed hellos from the peer's address: its hello is not read (`too_many`) */
  FAILED_HELLOS: 4009,
  /** the peer is going away on purpose: a provider stopped, or the hub shuts down */
  GOING_AWAY: 1001,
  /** no valid `hello` as the first frame, or none in time */
  HANDSHAKE: 4003,
  /** a frame over `limits.max_frame_bytes` (a hello over its own bound), closed unread */
  MESSAGE_TOO_BIG: 1009,
  /** a provider with the hello's name is connected (`name_taken`) */
  NAME_TAKEN: 4004,
  /** the peer ended the connection on purpose: a requestor's activities go at once (no grace) */
  NORMAL: 1000,
  /** another connection took this requestor's session over (`hello.resume`) */
  RESUMED: 4007,
  /** the peer does not read: the hub's buffer for it is full */
  SLOW: 4005,
  /** too many connections: from the peer's address, or with its credential (`too_many`) */
  TOO_MANY: 4008,
  /** the hub cannot take the hello yet: another hub of its database holds the session resumed */
  TRY_AGAIN: 1013,
  /** the hub refused the hello's token, or revoked its credential (`unauthorized`) */
  UNAUTHORIZED: 4002,
  /** a provider left a `create` or `destroy` unanswered past its timeout */
  UNRESPONSIVE: 4006,
  /** the hello's major version differs from the hub's (`unsupported_version`) */
  UNSUPPORTED_VERSION: 4001,
});
