/**
 * A typed client of the nbd daemon over its Unix socket.
 *
 * Why this module exists: it is the one place where the extension touches gRPC. Every RPC of
 * nbdapi.v1.Notebooks and nbdapi.v1.Daemon has a method here; streaming RPCs are async iterators
 * that cancel their call when the consumer stops early; every failure is an `NbdError`. It imports
 * nothing from the editor, so it runs and is tested in plain Node.
 */

import * as grpc from "@grpc/grpc-js";
import { NbdError, toNbdError } from "./errors";
import { grpcTarget } from "./discovery";
import { services } from "./proto";
import type {
  LaunchEvent,
  LaunchRequest,
  LogLine,
  LogsRequest,
  RunEvent,
  RunInfo,
  RunRequest,
  Session,
  SessionEvent,
  SyncAction,
  SyncStatus,
  VersionResponse,
} from "./types";

/** The health status of the daemon's server ("SERVING" when it answers calls). */
export type HealthStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

export interface CallOptions {
  /** Milliseconds the call may take; none by default (streams and flushes can be long). */
  deadlineMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
}

/** The channel options every client uses: quick reconnects, since the socket is local. */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 2000,
  // Streams (Events, Logs --follow) stay open for hours; a keepalive is pointless on a local socket.
  "grpc.keepalive_permit_without_calls": 0,
};

type Unary = (
  request: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, response?: unknown) => void,
) => grpc.ClientUnaryCall;

type ServerStream = (request: unknown, metadata: grpc.Metadata, options: grpc.CallOptions) => grpc.ClientReadableStream<unknown>;

function callOptions(options: CallOptions): grpc.CallOptions {
  return options.deadlineMs !== undefined ? { deadline: new Date(Date.now() + options.deadlineMs) } : {};
}

export class NbdClient {
  readonly socketPath: string;
  private readonly channel: grpc.Channel;
  private readonly notebooks: grpc.Client;
  private readonly daemon: grpc.Client;
  private readonly runs: grpc.Client;
  private readonly health: grpc.Client;
  private closed = false;

  /**
   * A client of the daemon on `socketPath`. Nothing is dialed until the first call.
   *
   * @param extraChannelOptions merged over CHANNEL_OPTIONS (a probe uses a private subchannel pool).
   */
  constructor(socketPath: string, extraChannelOptions: grpc.ChannelOptions = {}) {
    this.socketPath = socketPath;
    const { Notebooks, Daemon, Runs, Health } = services();
    const credentials = grpc.credentials.createInsecure();
    this.channel = new grpc.Channel(grpcTarget(socketPath), credentials, { ...CHANNEL_OPTIONS, ...extraChannelOptions });
    const shared = { channelOverride: this.channel };
    this.notebooks = new Notebooks(grpcTarget(socketPath), credentials, shared);
    this.daemon = new Daemon(grpcTarget(socketPath), credentials, shared);
    this.runs = new Runs(grpcTarget(socketPath), credentials, shared);
    this.health = new Health(grpcTarget(socketPath), credentials, shared);
  }

  /** Closes the channel; calls in flight are cancelled. */
  close(): void {
    if (!this.closed) {
      this.closed = true;
      this.channel.close();
    }
  }

  private unary<T>(client: grpc.Client, method: string, request: unknown, options: CallOptions = {}): Promise<T> {
    const fn = (client as unknown as Record<string, Unary>)[method];
    if (typeof fn !== "function") {
      return Promise.reject(new NbdError(grpc.status.INTERNAL, `nbd: the contract has no method ${method}`));
    }
    return new Promise<T>((resolve, reject) => {
      if (options.signal?.aborted === true) {
        reject(new NbdError(grpc.status.CANCELLED, "Cancelled before the call started."));
        return;
      }
      const call = fn.call(client, request, new grpc.Metadata(), callOptions(options), (err, response) => {
        options.signal?.removeEventListener("abort", onAbort);
        if (err !== null) {
          reject(toNbdError(err, this.socketPath));
        } else {
          resolve(response as T);
        }
      });
      const onAbort = (): void => call.cancel();
      options.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private async *stream<T>(client: grpc.Client, method: string, request: unknown, options: CallOptions = {}): AsyncGenerator<T> {
    const fn = (client as unknown as Record<string, ServerStream>)[method];
    if (typeof fn !== "function") {
      throw new NbdError(grpc.status.INTERNAL, `nbd: the contract has no method ${method}`);
    }
    if (options.signal?.aborted === true) {
      throw new NbdError(grpc.status.CANCELLED, "Cancelled before the call started.");
    }
    const call = fn.call(client, request, new grpc.Metadata(), callOptions(options));
    const onAbort = (): void => call.cancel();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    // Invariant: the call is cancelled whenever this generator ends for any reason other than the
    // server closing the stream, so an early `break` by the consumer never leaks a call.
    let finished = false;
    try {
      for await (const message of call) {
        yield message as T;
      }
      finished = true;
    } catch (err) {
      throw toNbdError(err, this.socketPath);
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      if (!finished) {
        call.cancel();
      }
    }
  }

  // --- grpc.health.v1 -------------------------------------------------------------------------

  /** The server's health; throws NbdError (UNAVAILABLE) when nothing answers on the socket. */
  async healthCheck(options: CallOptions = { deadlineMs: 2000 }): Promise<HealthStatus> {
    const response = await this.unary<{ status: HealthStatus }>(this.health, "Check", { service: "" }, options);
    return response.status;
  }

  // --- nbdapi.v1.Daemon -----------------------------------------------------------------------

  version(clientVersion = "", options: CallOptions = { deadlineMs: 10_000 }): Promise<VersionResponse> {
    return this.unary<VersionResponse>(this.daemon, "Version", { clientVersion }, options);
  }

  async shutdown(graceSeconds = 0, options: CallOptions = { deadlineMs: 30_000 }): Promise<void> {
    await this.unary<object>(this.daemon, "Shutdown", { graceSeconds }, options);
  }

  // --- nbdapi.v1.Notebooks --------------------------------------------------------------------

  /** Launch streams progress until the notebook is ready or failed. */
  launch(request: LaunchRequest, options: CallOptions = {}): AsyncGenerator<LaunchEvent> {
    return this.stream<LaunchEvent>(this.notebooks, "Launch", request, options);
  }

  /** Stop (suspend) a session; `del` deletes its Notebook, and `deleteWorkspace` its workspace claim
   *  with it (without it, the daemon refuses to delete a notebook that has one). */
  async stop(session: string, del = false, options: CallOptions = {}, deleteWorkspace = false): Promise<Session | null> {
    const response = await this.unary<{ session: Session | null }>(
      this.notebooks,
      "Stop",
      { session, delete: del, deleteWorkspace },
      options,
    );
    return response.session;
  }

  get(session: string, options: CallOptions = { deadlineMs: 10_000 }): Promise<Session> {
    return this.unary<Session>(this.notebooks, "Get", { session }, options);
  }

  async list(options: CallOptions = { deadlineMs: 10_000 }): Promise<Session[]> {
    const response = await this.unary<{ sessions: Session[] }>(this.notebooks, "List", {}, options);
    return response.sessions;
  }

  logs(request: LogsRequest, options: CallOptions = {}): AsyncGenerator<LogLine> {
    return this.stream<LogLine>(this.notebooks, "Logs", request, options);
  }

  /**
   * Sync pauses, resumes, flushes or reports a session's sync. `force` (with ACTION_RESUME) lets
   * the next cycle pass the delete guard that halted the sync.
   */
  async sync(session: string, action: SyncAction, options: CallOptions & { force?: boolean } = {}): Promise<SyncStatus | null> {
    const { force, ...call } = options;
    const response = await this.unary<{ status: SyncStatus | null }>(
      this.notebooks,
      "Sync",
      { session, action, force: force ?? false },
      call,
    );
    return response.status;
  }

  /** Events streams session changes; with `initial`, first one SNAPSHOT per existing session. */
  events(request: { sessions?: string[]; initial?: boolean } = {}, options: CallOptions = {}): AsyncGenerator<SessionEvent> {
    return this.stream<SessionEvent>(
      this.notebooks,
      "Events",
      { sessions: request.sessions ?? [], initial: request.initial ?? true },
      options,
    );
  }

  // --- nbdapi.v1.Runs -------------------------------------------------------------------------

  /** Run streams the run's creation, status and every rank's log until it ends (or runs, detached). */
  run(request: RunRequest, options: CallOptions = {}): AsyncGenerator<RunEvent> {
    return this.stream<RunEvent>(this.runs, "Run", request, options);
  }

  /** A run's log (every rank), following it until it ends when asked. */
  runLogs(run: string, follow: boolean, options: CallOptions = {}): AsyncGenerator<RunEvent> {
    return this.stream<RunEvent>(this.runs, "Logs", { run, follow }, options);
  }

  getRun(run: string, options: CallOptions = { deadlineMs: 30_000 }): Promise<RunInfo> {
    return this.unary<RunInfo>(this.runs, "GetRun", { run }, options);
  }

  stopRun(run: string, options: CallOptions = { deadlineMs: 180_000 }): Promise<RunInfo> {
    return this.unary<RunInfo>(this.runs, "StopRun", { run }, options);
  }
}
