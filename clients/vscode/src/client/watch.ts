/**
 * Follows the daemon's Events stream for as long as an editor is open, reconnecting when it ends.
 *
 * Why this module exists: the daemon may be stopped, restarted or not started yet while the editor
 * runs; the status bar must come back by itself. This loop owns that: it opens Events with the
 * initial snapshots, hands each event on, and after a failure waits with a growing backoff (or until
 * `kick()`), then starts over, telling the owner to forget what it knew first.
 */

import { status as Status } from "@grpc/grpc-js";
import type { NbdClient } from "./client";
import { NbdError, toNbdError } from "./errors";
import type { SessionEvent } from "./types";

export interface WatchHandlers {
  /** A new stream is about to replay snapshots: forget every session. The daemon answers again. */
  onReset(): void;
  onEvent(event: SessionEvent): void;
  /** The daemon could not be reached or the stream broke; the loop retries. */
  onDisconnected(error: NbdError): void;
}

export interface WatchOptions {
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export class SessionWatcher {
  private readonly abort = new AbortController();
  private wake: (() => void) | undefined;
  private running: Promise<void> | undefined;
  /** Cancels the current attempt's stream only. */
  private attempt: AbortController | undefined;

  /**
   * @param getClient a client for each attempt, whose daemon answered a health check; throws
   *   NbdError when the daemon does not answer. A stream on a dead daemon ends in onDisconnected.
   */
  constructor(
    private readonly getClient: () => Promise<NbdClient>,
    private readonly handlers: WatchHandlers,
    private readonly options: WatchOptions = {},
  ) {}

  /** Starts the loop (once). */
  start(): void {
    this.running ??= this.loop();
  }

  /** Retries now instead of waiting out the backoff (after a command started the daemon). */
  kick(): void {
    this.wake?.();
  }

  /** Ends the current stream and starts over at once (the daemon's socket changed). */
  restart(): void {
    this.attempt?.abort();
    this.wake?.();
  }

  /** Stops the loop and cancels the stream; resolves when the loop has ended. */
  async stop(): Promise<void> {
    this.abort.abort();
    this.wake?.();
    await this.running;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  private async loop(): Promise<void> {
    const min = this.options.minBackoffMs ?? 500;
    const max = this.options.maxBackoffMs ?? 10_000;
    let backoff = min;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      const attempt = new AbortController();
      this.attempt = attempt;
      const onStop = (): void => attempt.abort();
      signal.addEventListener("abort", onStop, { once: true });
      try {
        const client = await this.getClient();
        const stream = client.events({ initial: true }, { signal: attempt.signal });
        this.handlers.onReset();
        for await (const event of stream) {
          backoff = min;
          this.handlers.onEvent(event);
        }
        if (!attempt.signal.aborted) {
          this.handlers.onDisconnected(new NbdError(Status.UNAVAILABLE, "The nbd daemon closed its event stream; reconnecting."));
        }
      } catch (err) {
        if (!attempt.signal.aborted) {
          this.handlers.onDisconnected(toNbdError(err));
        }
      } finally {
        signal.removeEventListener("abort", onStop);
      }
      if (signal.aborted) {
        break;
      }
      if (attempt.signal.aborted) {
        // restart(): go round at once, without a backoff.
        backoff = min;
        continue;
      }
      await this.sleep(backoff);
      backoff = Math.min(max, backoff * 2);
    }
  }
}
