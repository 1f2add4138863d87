/**
 * The nbdapi.v1 messages as this client sees them.
 *
 * Why this module exists: the contract is loaded at run time from the .proto files (no generated
 * code), so these interfaces give the rest of the extension names and types for what arrives.
 * They mirror what @grpc/proto-loader produces with the options in proto.ts: camelCase field
 * names, enums as their names (strings), 64-bit integers as numbers, defaults filled in, and each
 * oneof's name set to the name of the field that is present.
 */

export interface Timestamp {
  seconds: number;
  nanos: number;
}

export type Phase =
  | "PHASE_UNSPECIFIED"
  | "PHASE_PACKAGING"
  | "PHASE_UPLOADING"
  | "PHASE_BUILDING"
  | "PHASE_STARTING"
  | "PHASE_READY"
  | "PHASE_FAILED"
  | "PHASE_STOPPED"
  | "PHASE_STOPPING"
  | "PHASE_GONE"
  | "PHASE_SUSPENDED";

export type NotebookState =
  | "NOTEBOOK_STATE_UNSPECIFIED"
  | "NOTEBOOK_STATE_FOLLOWING"
  | "NOTEBOOK_STATE_CHANGED"
  | "NOTEBOOK_STATE_SUSPENDED"
  | "NOTEBOOK_STATE_DELETED"
  | "NOTEBOOK_STATE_ERROR";

export type ForwardState =
  | "FORWARD_STATE_UNSPECIFIED"
  | "FORWARD_STATE_ACTIVE"
  | "FORWARD_STATE_WAITING_FOR_POD"
  | "FORWARD_STATE_ERROR"
  | "FORWARD_STATE_STOPPED";

export type SyncState =
  | "SYNC_STATE_UNSPECIFIED"
  | "SYNC_STATE_DISABLED"
  | "SYNC_STATE_CONNECTING"
  | "SYNC_STATE_SCANNING"
  | "SYNC_STATE_SYNCING"
  | "SYNC_STATE_WATCHING"
  | "SYNC_STATE_PAUSED"
  | "SYNC_STATE_HALTED"
  | "SYNC_STATE_ERROR";

export type SessionEventKind =
  | "SESSION_EVENT_KIND_UNSPECIFIED"
  | "SESSION_EVENT_KIND_SNAPSHOT"
  | "SESSION_EVENT_KIND_ADDED"
  | "SESSION_EVENT_KIND_UPDATED"
  | "SESSION_EVENT_KIND_REMOVED"
  | "SESSION_EVENT_KIND_SYNC_CHANGE"
  | "SESSION_EVENT_KIND_CONFLICT"
  | "SESSION_EVENT_KIND_PROBLEM";

export type LogSource = "LOG_SOURCE_UNSPECIFIED" | "LOG_SOURCE_NOTEBOOK" | "LOG_SOURCE_BUILD";

export type SyncAction = "ACTION_UNSPECIFIED" | "ACTION_STATUS" | "ACTION_PAUSE" | "ACTION_RESUME" | "ACTION_FLUSH";

export interface NotebookSpec {
  image: string;
  gpuCount?: number;
  gpuType: string;
  cpu: string;
  memory: string;
  env: Record<string, string>;
  command: string[];
  workdir: string;
  port?: number;
  idleStopAfter?: string;
  workspaceSize?: string;
  workspaceStorageClass?: string;
  shm?: string;
}

export interface ForwardStatus {
  state: ForwardState;
  localPort: number;
  remotePort: number;
  pod: string;
  message: string;
  openConnections: number;
  lastProbe: Timestamp | null;
}

export interface Conflict {
  path: string;
  copyPath: string;
  message: string;
  time: Timestamp | null;
}

export interface Problem {
  path: string;
  message: string;
  time: Timestamp | null;
}

/** A file the sync leaves on its side by rule (larger than sync.maxFileSize). */
export interface NotSynced {
  path: string;
  size: number;
  /** For a person: "too large (1.2 GiB > 100 MiB)". */
  reason: string;
  /** "remote" (the pod) or "local". */
  side: string;
}

export interface SyncStatus {
  state: SyncState;
  message: string;
  files: number;
  cycles: number;
  bytesToRemote: number;
  bytesToLocal: number;
  filesToRemote: number;
  filesToLocal: number;
  lastCycle: Timestamp | null;
  conflicts: Conflict[];
  /** The last conflicts the user resolved, oldest first (not counted as open). */
  resolvedConflicts: Conflict[];
  problems: Problem[];
  /** Files left on one side for being larger than sync.maxFileSize: neither conflicts nor problems. */
  notSynced: NotSynced[];
  localRoot: string;
  remoteRoot: string;
}

/** What the daemon last saw of the session's Notebook in the cluster. */
export interface NotebookStatus {
  state: NotebookState;
  message: string;
  changedBy: string;
  generation: number;
  observed: Timestamp | null;
}

export interface Session {
  name: string;
  namespace: string;
  context: string;
  kubeconfig: string;
  directory: string;
  phase: Phase;
  message: string;
  url: string;
  spec: NotebookSpec | null;
  contextMd5: string;
  image: string;
  pod: string;
  forward: ForwardStatus | null;
  sync: SyncStatus | null;
  created: Timestamp | null;
  updated: Timestamp | null;
  ref: string;
  notebook: NotebookStatus | null;
  /** When the controller suspends the notebook if it stays idle (null: no auto-stop, or busy). */
  idleStopAt: Timestamp | null;
  /** The idle stop in effect ("2h"; "" when off). */
  idleStopAfter: string;
  idleMessage: string;
}

export interface LaunchRequest {
  directory: string;
  name?: string;
  namespace?: string;
  context?: string;
  kubeconfig?: string;
  notebookFile?: string;
  spec?: Partial<NotebookSpec>;
  localPort?: number;
  noSync?: boolean;
  attach?: boolean;
  rebuild?: boolean;
  // How long the notebook may take to start once its image is ready; 0 or absent: 15 minutes.
  timeoutSeconds?: number;
}

export interface PhaseChanged {
  phase: Phase;
  message: string;
}

export interface Progress {
  phase: Phase;
  doneBytes: number;
  totalBytes: number;
  doneFiles: number;
  totalFiles: number;
  bytesPerSecond: number;
  etaSeconds: number;
}

export type CachedStep = "STEP_UNSPECIFIED" | "STEP_PACKAGE" | "STEP_UPLOAD" | "STEP_BUILD";

export interface Cached {
  step: CachedStep;
  reason: string;
  md5: string;
}

export interface LogLine {
  container: string;
  text: string;
  time: Timestamp | null;
}

export interface PodStatus {
  pod: string;
  phase: string;
  reason: string;
  message: string;
  ready: boolean;
}

export interface Ready {
  url: string;
  localPort: number;
  session: Session | null;
}

export interface Failure {
  reason: string;
  message: string;
  logTail: string[];
}

export type NoticeLevel = "LEVEL_UNSPECIFIED" | "LEVEL_INFO" | "LEVEL_WARNING";

export interface Notice {
  level: NoticeLevel;
  message: string;
}

export type LaunchEventName = "phase" | "progress" | "cached" | "buildLog" | "pod" | "ready" | "failed" | "notice";

export interface LaunchEvent {
  time: Timestamp | null;
  session: string;
  /** The name of the field of the `event` oneof that is present. */
  event?: LaunchEventName;
  phase?: PhaseChanged | null;
  progress?: Progress | null;
  cached?: Cached | null;
  buildLog?: LogLine | null;
  pod?: PodStatus | null;
  ready?: Ready | null;
  failed?: Failure | null;
  notice?: Notice | null;
}

export type SyncDirection = "DIRECTION_UNSPECIFIED" | "DIRECTION_TO_LOCAL" | "DIRECTION_TO_REMOTE";

export interface SyncChange {
  direction: SyncDirection;
  path: string;
  action: string;
  bytes: number;
}

export interface SessionEvent {
  time: Timestamp | null;
  kind: SessionEventKind;
  session: Session | null;
  /** The name of the field of the `detail` oneof that is present. */
  detail?: "syncChange" | "conflict" | "problem";
  syncChange?: SyncChange | null;
  conflict?: Conflict | null;
  problem?: Problem | null;
}

export interface LogsRequest {
  session: string;
  source?: LogSource;
  follow?: boolean;
  tailLines?: number;
  container?: string;
}

export interface VersionResponse {
  version: string;
  apiVersion: string;
  pid: number;
  socket: string;
  stateDir: string;
  logFile: string;
  started: Timestamp | null;
}

// --- nbdapi.v1.Runs ---------------------------------------------------------------------------

export type RunPhase =
  | "RUN_PHASE_UNSPECIFIED"
  | "RUN_PHASE_PACKAGING"
  | "RUN_PHASE_UPLOADING"
  | "RUN_PHASE_BUILDING"
  | "RUN_PHASE_PENDING"
  | "RUN_PHASE_STARTING"
  | "RUN_PHASE_RUNNING"
  | "RUN_PHASE_SUCCEEDED"
  | "RUN_PHASE_FAILED"
  | "RUN_PHASE_STOPPED";

export interface ClusterTarget {
  context: string;
  namespace: string;
  kubeconfig: string;
}

export interface RunRequest {
  directory: string;
  name?: string;
  target?: ClusterTarget;
  notebookFile?: string;
  command: string[];
  nodes?: number;
  detach?: boolean;
  rebuild?: boolean;
}

export interface RankStatus {
  index: number;
  pod: string;
  phase: string;
  /** Set once the rank's container ended (proto3 optional: absent until then). */
  exitCode?: number;
}

export interface RunInfo {
  name: string;
  namespace: string;
  context: string;
  phase: RunPhase;
  reason: string;
  message: string;
  command: string[];
  nodes: number;
  gpusPerNode: number;
  gpuType: string;
  image: string;
  contextMd5: string;
  created: Timestamp | null;
  started: Timestamp | null;
  finished: Timestamp | null;
  exitCode?: number;
  failedRank?: number;
  ranks: RankStatus[];
  outputsPath: string;
  directory: string;
  job: string;
}

export interface RunLog {
  rank: number;
  text: string;
  pod: string;
  time: Timestamp | null;
}

export type RunEventName = "phase" | "progress" | "cached" | "buildLog" | "notice" | "failed" | "status" | "log" | "finished";

export interface RunEvent {
  time: Timestamp | null;
  run: string;
  /** The name of the field of the `event` oneof that is present. */
  event?: RunEventName;
  phase?: PhaseChanged | null;
  progress?: Progress | null;
  cached?: Cached | null;
  buildLog?: LogLine | null;
  notice?: Notice | null;
  failed?: Failure | null;
  status?: RunInfo | null;
  log?: RunLog | null;
  finished?: RunInfo | null;
}
