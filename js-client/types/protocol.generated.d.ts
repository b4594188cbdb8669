// Generated from protocol/v1/schema.json by js-client/scripts/generate.mjs: do not edit.
// Run `make schema` after changing the models in python/kiln/protocol/.

export type Message =
  | Hello
  | Welcome
  | Error
  | Done
  | Offer
  | Rent
  | Rented
  | Release
  | MarketQuery
  | MarketInfo
  | Create
  | Destroy
  | ActivityLost
  | Exec
  | ExecResult
  | Connect
  | Publish
  | Published
  | Unpublish
  | Upload
  | Download
  | DownloadInfo
  | Credit
  | Cancel
  | RentProgress
  | Want
  | PushImage
  | ImagePushed
  | ListImages
  | ImageList
  | RemoveImage
  | ShareImage
  | ActivitiesQuery
  | ActivityList
  | Meter
  | Cost
  | BalanceQuery
  | BalanceInfo
  | LedgerQuery
  | LedgerList
  | VerdictReport
  | TaskReport
  | Usage;

/**
 * First message on every connection, from the peer that dialled the hub.
 */
export interface Hello {
  activities: string[] | null;
  name: string;
  resume: string | null;
  role: "requestor" | "provider";
  software: string;
  token: string | null;
  type: "hello";
  version: string;
}
/**
 * The hub's answer to ``hello``: the version both sides now speak, and the limits.
 */
export interface Welcome {
  grace: number | null;
  limits: Limits;
  resume: string | null;
  resumed: string[] | null;
  session: string;
  software: string;
  type: "welcome";
  version: string;
}
/**
 * The hub's limits, announced in ``welcome``; a peer must stay within them.
 */
export interface Limits {
  chunk_bytes: number;
  max_frame_bytes: number;
  max_message_bytes: number;
  max_output_bytes: number;
  max_pending: number;
  max_streams: number;
  max_window: number;
}
/**
 * A request failed (``re`` names it), or a message could not be taken at all.
 *
 * ``provider`` names the provider a failed ``rent`` was tried on, when it got that far.
 */
export interface Error {
  /**
   * A stable error code. Known codes: bad_json, bad_message, unknown_type, message_too_large, bad_frame, unsupported_version, unauthorized, name_taken, out_of_order, duplicate_id, too_many, flow_control, bad_path, unknown_activity, unknown_stream, no_match, image_not_found, bad_image, image_corrupt, store_full, image_too_large, insufficient_funds, budget_exceeded, expired, provider_lost, file_not_found, not_a_file, transfer_failed, container_failed, cancelled, connection_refused, not_published, timeout, connection_closed, command_failed, download_too_large, task_failed, internal. A later minor version may add codes; treat an unknown one like 'internal'.
   */
  code: string;
  message: string;
  provider: string | null;
  re: number | null;
  type: "error";
}
/**
 * A request succeeded: ``bytes`` moved by a stream; ``cpu_seconds`` a released container used.
 */
export interface Done {
  bytes: number | null;
  cpu_seconds: number | null;
  re: number;
  type: "done";
}
/**
 * Provider -> hub: the capacity it shares and the images it holds. Sent again on change.
 *
 * ``images`` are those its operator allows anyone to run (by tag and by id); ``cached`` (1.4)
 * the ids of images it loaded from the hub's store, which the hub lets only a requestor that
 * may rent the stored image run.
 */
export interface Offer {
  arch: string;
  cached: string[] | null;
  id: number;
  /**
   * @maxItems 4096
   */
  images: string[];
  labels: {
    [k: string]: string;
  };
  outbound: "any" | string[] | null;
  price: Price | null;
  resources: Resources;
  root: boolean | null;
  type: "offer";
}
/**
 * (1.5) A provider's linear price, in micro-credits: ``start`` once per activity, ``cpu_hour`` per
 * hour of CPU time its container used, ``env_hour`` per hour the container is held (wall time).
 *
 * In Python the rates are written in credits, ``Price(start=0.01, cpu_hour=0.2)``, and read back
 * in micro-credits (``price.start == 10000``); :meth:`micro` builds one from micro-credits.
 */
export interface Price {
  cpu_hour: number;
  env_hour: number;
  start: number;
}
/**
 * An amount of capacity: CPUs (fractions allowed), memory and storage in bytes.
 */
export interface Resources {
  cpus: number;
  memory: number;
  storage: number;
}
/**
 * Requestor -> hub: find a provider that meets ``demand`` and start ``image`` there.
 *
 * Providers named in ``exclude`` are passed over. Activities of one ``group`` (a name the
 * requestor chooses, e.g. one per job) are kept on distinct providers: the hub never
 * picks a provider where this requestor holds a live activity of the same group.
 */
export interface Rent {
  allow: string[] | null;
  budget: number | null;
  demand: Demand;
  /**
   * @maxItems 1024
   */
  exclude: string[];
  group: string | null;
  id: number;
  image: string;
  max_duration: number | null;
  min_reputation: number | null;
  strategy: ("least_loaded" | "cheapest" | "reputation") | null;
  type: "rent";
  user: "root" | null;
}
/**
 * What a requestor asks for: at least these resources, and these labels exactly; with
 * ``max_price`` (1.5), only from a provider whose every rate is at most the cap's.
 */
export interface Demand {
  cpus: number;
  labels: {
    [k: string]: string;
  };
  max_price: Price | null;
  memory: number;
  outbound: string[] | null;
  storage: number;
}
/**
 * A rent succeeded; ``pulled`` (1.1) counts the image bytes the provider fetched for it.
 *
 * ``price`` (1.5) is the provider's; ``hold`` (1.5) what the hub holds of the requestor's credits
 * for the activity (its worst case for ``max_duration``, or what the group's budget had left).
 */
export interface Rented {
  activity: string;
  cached: boolean;
  hold: number | null;
  price: Price | null;
  provider: string;
  pulled: number | null;
  re: number;
  resources: Resources;
  type: "rented";
}
/**
 * Requestor -> hub: destroy the activity's container and free its capacity.
 */
export interface Release {
  activity: string;
  id: number;
  type: "release";
}
/**
 * Requestor -> hub: describe the providers that hold ``image``, carry ``labels`` and have ``free``
 * capacity left, at most ``limit`` of them (by name).
 */
export interface MarketQuery {
  free: Resources1;
  id: number;
  image: string | null;
  labels: {
    [k: string]: string;
  };
  limit: number;
  type: "market";
}
/**
 * An amount of capacity: CPUs (fractions allowed), memory and storage in bytes.
 */
export interface Resources1 {
  cpus: number;
  memory: number;
  storage: number;
}
/**
 * The providers a ``market`` asked for; ``matched`` counts all that match, listed or not.
 */
export interface MarketInfo {
  activities: number;
  matched: number;
  providers: ProviderInfo[];
  re: number;
  type: "market_info";
}
export interface ProviderInfo {
  activities: number;
  arch: string;
  free: Resources;
  images: string[];
  labels: {
    [k: string]: string;
  };
  name: string;
  offered: Resources;
  outbound: "any" | string[] | null;
  price: Price | null;
  reputation: number | null;
}
/**
 * Hub -> provider: start a container for a new activity with these resources.
 *
 * ``manifest`` (1.1) comes when the hub stores the image (``image`` is then its digest): a
 * provider that lacks some of its blobs answers ``want`` and receives them on this request's stream.
 */
export interface Create {
  activity: string;
  id: number;
  image: string;
  manifest: Manifest | null;
  outbound: string[] | null;
  resources: Resources;
  type: "create";
  user: "root" | null;
}
/**
 * An image as Docker keeps it: its config (whose digest is Docker's image id) and its
 * layers, uncompressed tars whose digests are the config's ``rootfs.diff_ids``, base first.
 */
export interface Manifest {
  config: Blob;
  /**
   * @maxItems 256
   */
  layers: Blob[];
}
/**
 * A piece of an image, named by the sha256 of its bytes.
 */
export interface Blob {
  digest: string;
  expanded: number | null;
  size: number;
}
/**
 * Hub -> provider: remove the activity's container (answered with ``done``).
 */
export interface Destroy {
  activity: string;
  id: number;
  type: "destroy";
}
/**
 * Hub -> requestor: the activity is gone (provider lost, container died).
 */
export interface ActivityLost {
  activity: string;
  /**
   * A stable error code. Known codes: bad_json, bad_message, unknown_type, message_too_large, bad_frame, unsupported_version, unauthorized, name_taken, out_of_order, duplicate_id, too_many, flow_control, bad_path, unknown_activity, unknown_stream, no_match, image_not_found, bad_image, image_corrupt, store_full, image_too_large, insufficient_funds, budget_exceeded, expired, provider_lost, file_not_found, not_a_file, transfer_failed, container_failed, cancelled, connection_refused, not_published, timeout, connection_closed, command_failed, download_too_large, task_failed, internal. A later minor version may add codes; treat an unknown one like 'internal'.
   */
  code: string;
  reason: string;
  type: "activity_lost";
}
/**
 * Run ``argv`` exactly as given (no shell) in the activity's container.
 */
export interface Exec {
  activity: string;
  /**
   * @minItems 1
   * @maxItems 4096
   */
  argv: string[];
  env: {
    [k: string]: string;
  };
  id: number;
  stdin: boolean | null;
  stream: boolean | null;
  timeout: number | null;
  type: "exec";
  window: number | null;
  workdir: string | null;
}
/**
 * The end of an ``exec``: exit code, and stdout/stderr base64-encoded (capped).
 */
export interface ExecResult {
  duration: number;
  exit_code: number;
  re: number;
  stderr: string;
  stderr_truncated: boolean;
  stdout: string;
  stdout_truncated: boolean;
  timed_out: boolean;
  type: "exec_result";
}
/**
 * (1.7) Open a TCP connection to ``127.0.0.1:port`` inside the activity's container.
 *
 * The bytes flow on one stream each way under the request's id: the provider grants the first
 * credit toward the container once the connection is open; ``window`` is the first credit of
 * the stream out of it (default 16). END is a half-close; the reply (``done`` with ``bytes``
 * received from the container) comes once both ways have ended.
 */
export interface Connect {
  activity: string;
  id: number;
  port: number;
  type: "connect";
  window: number | null;
}
/**
 * (1.7) Requestor -> hub: serve the activity's ``port`` as HTTP at an unguessable URL of the hub's.
 */
export interface Publish {
  activity: string;
  id: number;
  port: number;
  type: "publish";
}
/**
 * (1.7) The answer to ``publish``: ``url`` (``.../s/<token>/``) serves the port until ``unpublish``
 * or the activity's end; ``token`` names it in ``unpublish``.
 */
export interface Published {
  re: number;
  token: string;
  type: "published";
  url: string;
}
/**
 * (1.7) Requestor -> hub: the published URL of ``token`` serves nothing from now on (``done``).
 */
export interface Unpublish {
  id: number;
  token: string;
  type: "unpublish";
}
/**
 * Open a stream of ``size`` bytes into the file ``path``; the receiver grants credit.
 */
export interface Upload {
  activity: string;
  id: number;
  /**
   * permission bits; no setuid, setgid or sticky
   */
  mode: number;
  /**
   * An absolute, normalized container path of at most 4096 characters.
   */
  path: string;
  size: number;
  type: "upload";
}
/**
 * Open a stream out of ``path``; ``window`` is the first credit, in chunks.
 */
export interface Download {
  activity: string;
  id: number;
  /**
   * An absolute, normalized container path of at most 4096 characters.
   */
  path: string;
  type: "download";
  window: number;
}
/**
 * Sent before the data of a download: a file's bytes, or a directory as a tar stream.
 */
export interface DownloadInfo {
  kind: "file" | "dir";
  mode: number;
  re: number;
  size: number | null;
  type: "download_info";
}
/**
 * The receiver of stream ``stream`` may take ``chunks`` more data frames.
 */
export interface Credit {
  chunks: number;
  stream: number;
  type: "credit";
}
/**
 * Stop request ``target``; it ends with an error ``cancelled`` unless already done.
 */
export interface Cancel {
  target: number;
  type: "cancel";
}
/**
 * Hub -> requestor (1.1), interim reply to ``rent``: the provider loads the image, ``done`` of
 * ``total`` bytes sent so far.
 */
export interface RentProgress {
  done: number;
  image: string;
  provider: string;
  re: number;
  total: number;
  type: "rent_progress";
}
/**
 * Interim reply (1.1) to ``push_image`` (from the hub) or ``create`` (from a provider): send
 * these blobs, whole and in this order, one after another, on the request's stream.
 */
export interface Want {
  /**
   * @maxItems 257
   */
  blobs: string[];
  re: number;
  type: "want";
}
/**
 * Requestor -> hub: store this image under ``tags``; the hub answers ``want`` for the blobs it lacks.
 */
export interface PushImage {
  id: number;
  manifest: Manifest;
  /**
   * @maxItems 16
   */
  tags: string[];
  type: "push_image";
}
/**
 * The image is stored: ``sent`` bytes moved, ``skipped`` bytes the hub held already.
 */
export interface ImagePushed {
  image: ImageInfo;
  re: number;
  sent: number;
  skipped: number;
  type: "image_pushed";
}
/**
 * An image in the hub's store, as the requestor asking may see it: ``size`` counts its config
 * and layers; times are Unix seconds; ``tags`` are the requestor's own (1.4: tags live in their
 * owner's namespace).
 */
export interface ImageInfo {
  arch: string;
  digest: string;
  in_use: number;
  last_used: number | null;
  layers: number;
  os: string;
  owners: string[] | null;
  /**
   * @maxItems 1000
   */
  providers: string[];
  public: boolean | null;
  pushed: number;
  shared: string[] | null;
  size: number;
  tags: string[];
}
/**
 * Requestor -> hub: the images in the store.
 */
export interface ListImages {
  id: number;
  type: "list_images";
}
/**
 * The store's images, most recently used first, and the bytes it holds of its ``limit`` (1.4: each
 * layer counted at the larger of its size and its expanded size).
 */
export interface ImageList {
  images: ImageInfo[];
  limit: number;
  re: number;
  type: "image_list";
  used: number;
}
/**
 * Requestor -> hub: remove an image (by digest or tag) from the store; answered with ``done``.
 */
export interface RemoveImage {
  id: number;
  image: string;
  type: "remove_image";
}
/**
 * Requestor -> hub (1.4): share an image it pushed (by digest or tag) with the tenants ``to``,
 * and with ``public`` with every tenant; with ``revoke``, take those shares back. Answered with
 * ``done``.
 */
export interface ShareImage {
  id: number;
  image: string;
  public: boolean;
  revoke: boolean;
  /**
   * @maxItems 64
   */
  to: string[];
  type: "share_image";
}
/**
 * Requestor -> hub (1.3): the activities this requestor holds, or with ``all`` every activity at
 * the hub (only for a requestor that joined with an admin credential), at most ``limit`` of them (by id).
 */
export interface ActivitiesQuery {
  all: boolean;
  id: number;
  limit: number;
  type: "activities";
}
/**
 * (1.3) The activities an ``activities`` asked for, by id; ``matched`` counts all that match, listed or not.
 */
export interface ActivityList {
  /**
   * @maxItems 1000
   */
  activities: ActivityInfo[];
  matched: number;
  re: number;
  type: "activity_list";
}
/**
 * (1.3) An activity as the hub holds it: whose it is (the requestor's name), where it runs, what it
 * reserves. ``started`` is the hub's clock (Unix seconds) when it became ready (absent while creating);
 * ``image`` the stored image's digest it runs, else the name its rent gave (absent after a restart of
 * the hub). ``credential`` is the id of the credential its requestor joined with (``kiln token ls``):
 * the name is the requestor's own word, the credential the hub's (absent: the shared token or an open
 * hub).
 */
export interface ActivityInfo {
  credential: number | null;
  group: string | null;
  id: string;
  image: string | null;
  provider: string;
  requestor: string;
  resources: Resources;
  started: number | null;
  state: "creating" | "ready" | "destroying" | "absent";
}
/**
 * Hub -> provider (1.5): how much CPU time the activity's container has used so far; answered
 * with ``done`` carrying ``cpu_seconds``.
 */
export interface Meter {
  activity: string;
  id: number;
  type: "meter";
}
/**
 * Hub -> requestor and provider (1.5): what a priced activity owes so far, as the hub captured
 * it: ``due`` in micro-credits, cumulative (the ``seq``-th capture; ``final`` at its end), for
 * ``seconds`` held and ``cpu_seconds`` billed.
 */
export interface Cost {
  activity: string;
  cpu_seconds: number;
  due: number;
  final: boolean;
  seconds: number;
  seq: number;
  type: "cost";
}
/**
 * Requestor -> hub (1.5): this credential's account.
 */
export interface BalanceQuery {
  id: number;
  type: "balance";
}
/**
 * The account of the asking credential: ``available`` to hold, ``held`` for its activities,
 * ``spent`` in all (micro-credits).
 */
export interface BalanceInfo {
  account: string;
  available: number;
  held: number;
  re: number;
  spent: number;
  type: "balance_info";
}
/**
 * Requestor -> hub (1.5): the latest transactions touching the asker's account (an admin's:
 * ``account``'s, or all), newest first, at most ``limit``.
 */
export interface LedgerQuery {
  account: string | null;
  id: number;
  limit: number;
  type: "ledger";
}
export interface LedgerList {
  matched: number;
  re: number;
  transactions: Transaction[];
  type: "ledger_list";
}
/**
 * A movement of credits: its entries sum to zero. ``key`` is its idempotency key.
 */
export interface Transaction {
  activity: string | null;
  /**
   * @maxItems 16
   */
  entries: Entry[];
  id: number;
  key: string;
  kind: string;
  time: number;
}
/**
 * One side of a transaction: ``amount`` micro-credits into ``account`` (out of it when negative).
 */
export interface Entry {
  account: string;
  amount: number;
}
/**
 * Requestor -> hub (1.5): the result of activity ``lost`` disagreed with those of the activities
 * ``agreed`` (on other providers, agreeing among themselves). The hub counts it against ``lost``'s
 * provider and reverses what the requestor paid for ``lost``. Answered with ``done``.
 */
export interface VerdictReport {
  /**
   * @minItems 2
   * @maxItems 16
   */
  agreed: string[];
  id: number;
  lost: string;
  type: "verdict";
}
/**
 * Requestor -> hub (1.6), no reply: an attempt of task ``task`` of the job whose rents name
 * ``group`` started on ``activity`` (one of the requestor's), or ended, and why (``reason``), having
 * moved ``bytes`` in all. The hub keeps a bounded record of each group's attempts for its
 * dashboard, timed by its own clock; what it cannot place (an activity not the requestor's) it drops.
 */
export interface TaskReport {
  activity: string | null;
  attempt: number;
  bytes: number;
  group: string;
  reason: string | null;
  state: "started" | "done" | "retried" | "failed";
  task: number;
  type: "task";
}
/**
 * Provider -> hub (1.6), no reply: what each of its containers used, from their cgroups, sent
 * every few seconds while it holds any (and once, empty, after its last one ended).
 */
export interface Usage {
  /**
   * @maxItems 1024
   */
  activities: ActivityUsage[];
  type: "usage";
}
/**
 * What one container used: ``cpu_seconds`` in all since it started, ``memory`` bytes now.
 */
export interface ActivityUsage {
  activity: string;
  cpu_seconds: number;
  memory: number;
}
