// Generated from protocol/v1/schema.json by js-client/scripts/generate.mjs: do not edit.
// Run `make schema` after changing the models in python/kiln/protocol/.

import type {
  Message,
  ActivitiesQuery,
  ActivityList,
  ActivityLost,
  BalanceInfo,
  BalanceQuery,
  Cancel,
  Connect,
  Cost,
  Create,
  Credit,
  Destroy,
  Done,
  Download,
  DownloadInfo,
  Error,
  Exec,
  ExecResult,
  Hello,
  ImageList,
  ImagePushed,
  LedgerList,
  LedgerQuery,
  ListImages,
  MarketInfo,
  MarketQuery,
  Meter,
  Offer,
  Publish,
  Published,
  PushImage,
  Release,
  RemoveImage,
  Rent,
  RentProgress,
  Rented,
  ShareImage,
  TaskReport,
  Unpublish,
  Upload,
  Usage,
  VerdictReport,
  Want,
  Welcome,
} from "../../../types/protocol.generated.js";

/** One problem an ajv validator found (ajv's `ErrorObject`, without its verbose fields). */
export interface ValidationProblem {
  keyword: string;
  /** A JSON Pointer to the value with the problem: "" for the message, "/demand/cpus" for a field. */
  instancePath: string;
  schemaPath: string;
  params: Record<string, any>;
  /** Set when the problem is with an object key (`propertyNames`). */
  propertyName?: string;
  message?: string;
}

/** Checks a decoded JSON value, filling in the defaults of missing fields in place. */
export interface Validator<T> {
  (data: unknown): data is T;
  /** Why the last call returned false (null after a true). */
  errors: ValidationProblem[] | null;
}

export declare const VALIDATORS: { readonly [K in Message["type"]]: Validator<Extract<Message, { type: K }>> };

export declare const validateActivitiesQuery: Validator<ActivitiesQuery>;
export declare const validateActivityList: Validator<ActivityList>;
export declare const validateActivityLost: Validator<ActivityLost>;
export declare const validateBalanceInfo: Validator<BalanceInfo>;
export declare const validateBalanceQuery: Validator<BalanceQuery>;
export declare const validateCancel: Validator<Cancel>;
export declare const validateConnect: Validator<Connect>;
export declare const validateCost: Validator<Cost>;
export declare const validateCreate: Validator<Create>;
export declare const validateCredit: Validator<Credit>;
export declare const validateDestroy: Validator<Destroy>;
export declare const validateDone: Validator<Done>;
export declare const validateDownload: Validator<Download>;
export declare const validateDownloadInfo: Validator<DownloadInfo>;
export declare const validateError: Validator<Error>;
export declare const validateExec: Validator<Exec>;
export declare const validateExecResult: Validator<ExecResult>;
export declare const validateHello: Validator<Hello>;
export declare const validateImageList: Validator<ImageList>;
export declare const validateImagePushed: Validator<ImagePushed>;
export declare const validateLedgerList: Validator<LedgerList>;
export declare const validateLedgerQuery: Validator<LedgerQuery>;
export declare const validateListImages: Validator<ListImages>;
export declare const validateMarketInfo: Validator<MarketInfo>;
export declare const validateMarketQuery: Validator<MarketQuery>;
export declare const validateMeter: Validator<Meter>;
export declare const validateOffer: Validator<Offer>;
export declare const validatePublish: Validator<Publish>;
export declare const validatePublished: Validator<Published>;
export declare const validatePushImage: Validator<PushImage>;
export declare const validateRelease: Validator<Release>;
export declare const validateRemoveImage: Validator<RemoveImage>;
export declare const validateRent: Validator<Rent>;
export declare const validateRentProgress: Validator<RentProgress>;
export declare const validateRented: Validator<Rented>;
export declare const validateShareImage: Validator<ShareImage>;
export declare const validateTaskReport: Validator<TaskReport>;
export declare const validateUnpublish: Validator<Unpublish>;
export declare const validateUpload: Validator<Upload>;
export declare const validateUsage: Validator<Usage>;
export declare const validateVerdictReport: Validator<VerdictReport>;
export declare const validateWant: Validator<Want>;
export declare const validateWelcome: Validator<Welcome>;
