// kiln-client: the Kiln requestor for Node.js and browsers (protocol kiln.v1).
//
// The declarations are generated from the sources' JSDoc, which `npm run typecheck` holds to
// the code: types/generated/ (`npm run generate`, `make schema`). This file only names what
// the package exports: the Node entry's values (the browser entry exports the same names),
// and the types its API speaks of.

export * from "./generated/node/index.js";

export type {
  ActivitiesOptions,
  Balance,
  ConnectOptions,
  CostInfo,
  EstimateOptions,
  LedgerOptions,
  LedgerTransaction,
  Strategy,
  DemandOptions,
  ImageArchiveSource,
  ImageInfo,
  ImageList,
  MarketOptions,
  PushedImage,
  PushOptions,
  RentOptions,
  RentProgress,
  ResourcesOptions,
  ShareOptions,
  TaskReportFields,
} from "./generated/requestor.js";
export type {
  ExitEvent,
  LocalDestination,
  LocalSource,
  OutputChunk,
  OutputEvent,
  RunCheckOptions,
  RunOptions,
  SignalOption,
  Stdin,
} from "./generated/activity.js";
export type { JobEvent, JobEventKind, JobOptions, Renter, TaskContext, Worker } from "./generated/executor.js";
export type { Forward, ForwardOptions, NodeDuplex, PortOptions, PortStream } from "./generated/ports.js";
export type { Attempt, AttemptOutcome } from "./generated/report.js";
export type { Agree, Dispute, Verify } from "./generated/scheduling.js";
export type { HealthCheck, ReplicaStatus, Restart, ServiceEvent, ServiceOptions } from "./generated/service.js";
export type { PriceOptions, WirePrice } from "./generated/money.js";
export type { KilnErrorOptions } from "./generated/protocol/errors.js";
export type {
  ActivityInfo,
  DownloadInfo,
  KnownErrorCode,
  Message,
  ProviderInfo,
  Resources,
} from "./protocol.js";
