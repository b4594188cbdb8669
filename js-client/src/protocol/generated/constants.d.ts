// Generated from protocol/v1/schema.json by js-client/scripts/generate.mjs: do not edit.
// Run `make schema` after changing the models in python/kiln/protocol/.

export declare const PROTOCOL_NAME: "kiln.v1";
export declare const PROTOCOL_VERSION: string;
export declare const MAJOR_VERSION: number;
/** The minor version this side speaks (a hub may welcome it at a lower one). */
export declare const MINOR_VERSION: number;

/** Every error code of protocol kiln.v1. */
export type KnownErrorCode =
  | "bad_frame"
  | "bad_image"
  | "bad_json"
  | "bad_message"
  | "bad_path"
  | "budget_exceeded"
  | "cancelled"
  | "command_failed"
  | "connection_closed"
  | "connection_refused"
  | "container_failed"
  | "download_too_large"
  | "duplicate_id"
  | "expired"
  | "file_not_found"
  | "flow_control"
  | "image_corrupt"
  | "image_not_found"
  | "image_too_large"
  | "insufficient_funds"
  | "internal"
  | "message_too_large"
  | "name_taken"
  | "no_match"
  | "not_a_file"
  | "not_published"
  | "out_of_order"
  | "provider_lost"
  | "store_full"
  | "task_failed"
  | "timeout"
  | "too_many"
  | "transfer_failed"
  | "unauthorized"
  | "unknown_activity"
  | "unknown_stream"
  | "unknown_type"
  | "unsupported_version"
;

/** The stable error codes, by name (`ErrorCode.NO_MATCH` is "no_match"). */
export declare const ErrorCode: Readonly<Record<string, KnownErrorCode>>;
/** Every known code, for membership tests. */
export declare const ERROR_CODES: ReadonlySet<string>;

/** The WebSocket close codes of the protocol, by name. */
export declare const CloseCode: {
  /** never sent: the connection ended without a close frame */
  readonly ABNORMAL: 1006;
  /** too many failed hellos from the peer's address: its hello is not read (`too_many`) */
  readonly FAILED_HELLOS: 4009;
  /** the peer is going away on purpose: a provider stopped, or the hub shuts down */
  readonly GOING_AWAY: 1001;
  /** no valid `hello` as the first frame, or none in time */
  readonly HANDSHAKE: 4003;
  /** a frame over `limits.max_frame_bytes` (a hello over its own bound), closed unread */
  readonly MESSAGE_TOO_BIG: 1009;
  /** a provider with the hello's name is connected (`name_taken`) */
  readonly NAME_TAKEN: 4004;
  /** the peer ended the connection on purpose: a requestor's activities go at once (no grace) */
  readonly NORMAL: 1000;
  /** another connection took this requestor's session over (`hello.resume`) */
  readonly RESUMED: 4007;
  /** the peer does not read: the hub's buffer for it is full */
  readonly SLOW: 4005;
  /** too many connections: from the peer's address, or with its credential (`too_many`) */
  readonly TOO_MANY: 4008;
  /** the hub cannot take the hello yet: another hub of its database holds the session resumed */
  readonly TRY_AGAIN: 1013;
  /** the hub refused the hello's token, or revoked its credential (`unauthorized`) */
  readonly UNAUTHORIZED: 4002;
  /** a provider left a `create` or `destroy` unanswered past its timeout */
  readonly UNRESPONSIVE: 4006;
  /** the hello's major version differs from the hub's (`unsupported_version`) */
  readonly UNSUPPORTED_VERSION: 4001;
};
