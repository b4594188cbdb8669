/**
 * What both entry points (Node and browser) export besides `connect`.
 * @module
 */

export { Activity, Result, containerPath } from "./activity.js";
export { Job, JobSummary, Redundant, SpotCheck } from "./executor.js";
export { PortSocket, Publication } from "./ports.js";
export { Requestor, demandMessage } from "./requestor.js";
export { Http, Service, ServiceFailedError, Tcp } from "./service.js";
export { parseSize } from "./units.js";
export { MICRO, due, formatCredits, isFree, secondsCovered, toMicro, within, worstCase } from "./money.js";
export { ErrorCode, ERROR_CODES } from "./protocol/generated/constants.js";
export { PROTOCOL_NAME, PROTOCOL_VERSION } from "./protocol/messages.js";
export * from "./errors.js";
