/**
 * Every JSON message of protocol kiln.v1, checked as the pydantic models in
 * `python/kiln/protocol/messages.py` check them: by validators generated from
 * `protocol/v1/schema.json` (`make schema`; see `scripts/generate.mjs`), with strict
 * types (no string-to-number coercion, a bool is not a number), no extra fields, the
 * same ranges and patterns, and numbers judged by value (`7.0` is the integer 7).
 *
 * Call {@link parse} on the text of a WebSocket text frame to get a message (a plain
 * deep-frozen object, defaults filled in) or a {@link RemoteProtocolError}: the peer broke
 * the protocol. Call {@link build} on a message this side means to send (an invalid one is
 * a {@link LocalProtocolError}), and {@link serialize} to get its text. Nothing in this
 * module does I/O.
 *
 * One known difference from Python, from `JSON.parse`: integers beyond 2^53 lose precision.
 * @module
 */
import { MAX_EXCLUDE, MAX_ID, MAX_TEXT } from "./generated/limits.js";
export { MAX_PATH_LENGTH, pathProblem as containerPathProblem } from "./paths.js";
export type Message = import("../../protocol.js").Message;
export type MessageType = import("../../protocol.js").MessageType;
export type ValidationProblem = import("./generated/validators.js").ValidationProblem;
/** @typedef {import("../../protocol.js").Message} Message */
/** @typedef {import("../../protocol.js").MessageType} MessageType */
/** @typedef {import("./generated/validators.js").ValidationProblem} ValidationProblem */
export { PROTOCOL_NAME, PROTOCOL_VERSION, MAJOR_VERSION, MINOR_VERSION } from "./generated/constants.js";
export { MAX_ID, MAX_EXCLUDE, MAX_TEXT };
/** Every message `type`. */
export declare const MESSAGE_TYPES: Readonly<Set<"activities" | "activity_list" | "activity_lost" | "balance" | "balance_info" | "cancel" | "connect" | "cost" | "create" | "credit" | "destroy" | "done" | "download" | "download_info" | "error" | "exec" | "exec_result" | "hello" | "image_list" | "image_pushed" | "ledger" | "ledger_list" | "list_images" | "market" | "market_info" | "meter" | "offer" | "publish" | "published" | "push_image" | "release" | "remove_image" | "rent" | "rent_progress" | "rented" | "share_image" | "task" | "unpublish" | "upload" | "usage" | "verdict" | "want" | "welcome">>;
/** The types that end a request (its final reply, matched by `re`). */
export declare const FINAL_REPLIES: Readonly<Set<"activities" | "activity_list" | "activity_lost" | "balance" | "balance_info" | "cancel" | "connect" | "cost" | "create" | "credit" | "destroy" | "done" | "download" | "download_info" | "error" | "exec" | "exec_result" | "hello" | "image_list" | "image_pushed" | "ledger" | "ledger_list" | "list_images" | "market" | "market_info" | "meter" | "offer" | "publish" | "published" | "push_image" | "release" | "remove_image" | "rent" | "rent_progress" | "rented" | "share_image" | "task" | "unpublish" | "upload" | "usage" | "verdict" | "want" | "welcome">>;
/** The types that answer a request before its final reply (matched by `re`). */
export declare const INTERIM_REPLIES: Readonly<Set<"activities" | "activity_list" | "activity_lost" | "balance" | "balance_info" | "cancel" | "connect" | "cost" | "create" | "credit" | "destroy" | "done" | "download" | "download_info" | "error" | "exec" | "exec_result" | "hello" | "image_list" | "image_pushed" | "ledger" | "ledger_list" | "list_images" | "market" | "market_info" | "meter" | "offer" | "publish" | "published" | "push_image" | "release" | "remove_image" | "rent" | "rent_progress" | "rented" | "share_image" | "task" | "unpublish" | "upload" | "usage" | "verdict" | "want" | "welcome">>;
/**
 * A message this side means to send, checked: a deep-frozen copy of `raw`, fields left
 * at `null` or `undefined` omitted and defaults filled in.
 *
 * Throws {@link LocalProtocolError} (`bad_message`, `unknown_type` or `bad_path`): an
 * invalid message is never sent.
 * @param {Message | Record<string, unknown>} raw
 * @returns {Message}
 */
export declare function build(raw: Message | Record<string, unknown>): Message;
/**
 * Parse and validate one text frame from the peer.
 *
 * Throws {@link RemoteProtocolError} with code `bad_json`, `unknown_type`, `bad_path` or
 * `bad_message`; its `re` is the message's `id` when one could be read, so the error
 * reply can name the request.
 * @param {string} text
 * @returns {Message}
 */
export declare function parse(text: string): Message;
/**
 * The JSON text of `message`, fields left at `null` or `undefined` omitted. The message
 * is checked first ({@link build}), so a bad one is never sent.
 * @param {Message | Record<string, unknown>} message
 * @returns {string}
 */
export declare function serialize(message: Message | Record<string, unknown>): string;
/**
 * `text` made fit for a message's free-text field (an error's message): at most `limit`
 * characters (code points, as the schema counts them) and no lone surrogate, which
 * UTF-8 cannot carry (as `clip` in `python/kiln/protocol/messages.py`).
 * @param {string} text
 * @param {number} [limit]
 */
export declare function clip(text: string, limit?: number): string;
