/**
 * The client's one error type.
 *
 * Why this module exists: every failure a caller sees (a status from the daemon, a daemon that does
 * not answer, an nbctl that cannot start it) is an `NbdError` carrying the gRPC status code and a
 * message. A daemon's message is kept verbatim, because the daemon already wrote it as one sentence
 * naming what to do; the editor shows it as it is.
 */

import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";

/** The names of the gRPC status codes, by number. */
const CODE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Status)
    .filter(([, value]) => typeof value === "number")
    .map(([name, value]) => [value as number, name]),
);

/** The name of a gRPC status code ("UNIMPLEMENTED" for 12). */
export function codeName(code: number): string {
  return CODE_NAMES.get(code) ?? `CODE_${code}`;
}

export class NbdError extends Error {
  /** The gRPC status code (`status.UNAVAILABLE`, ...). */
  readonly code: number;
  /** The status code's name ("UNAVAILABLE", ...). */
  readonly codeName: string;
  /** A stable machine-readable reason when the daemon sent one (trailing metadata `nbd-reason`). */
  readonly reason: string;
  /** True when the daemon wrote the message (it sent `nbd-reason`), false for the client's or gRPC's own. */
  readonly fromDaemon: boolean;

  constructor(code: number, message: string, options: { reason?: string; fromDaemon?: boolean; cause?: unknown } = {}) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = "NbdError";
    this.code = code;
    this.codeName = codeName(code);
    this.reason = options.reason ?? "";
    this.fromDaemon = options.fromDaemon ?? false;
  }
}

function isServiceError(err: unknown): err is ServiceError {
  return (
    typeof err === "object" &&
    err !== null &&
    typeof (err as { code?: unknown }).code === "number" &&
    "details" in err
  );
}

function firstString(metadata: Metadata | undefined, key: string): string | undefined {
  const values = metadata?.get(key) ?? [];
  const first = values[0];
  return typeof first === "string" ? first : undefined;
}

/**
 * An `NbdError` for anything a gRPC call threw.
 *
 * A status from the daemon keeps its details verbatim. An unreachable socket (UNAVAILABLE with no
 * daemon-written details) gets a message naming the socket and how to start the daemon.
 */
export function toNbdError(err: unknown, socketPath?: string): NbdError {
  if (err instanceof NbdError) {
    return err;
  }
  if (isServiceError(err)) {
    const reason = firstString(err.metadata, "nbd-reason");
    const connectFailure =
      err.code === Status.UNAVAILABLE &&
      /(No connection established|connect ECONNREFUSED|connect ENOENT|Connection dropped|Failed to connect)/i.test(err.details);
    if (connectFailure && socketPath !== undefined) {
      return new NbdError(
        Status.UNAVAILABLE,
        `The nbd daemon does not answer on ${socketPath}; start it with \`nbctl daemon start\`.`,
        { cause: err },
      );
    }
    // The daemon's error interceptor tags every status it writes with `nbd-reason`; a status
    // without it came from the gRPC library (a deadline, a cancel, a dropped connection).
    return new NbdError(err.code, err.details, { reason, fromDaemon: reason !== undefined, cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new NbdError(Status.INTERNAL, message, { cause: err });
}
