/**
 * Launch events rendered as lines for the output channel.
 *
 * Why this module exists: a Launch stream mixes phases, byte progress, build log lines, pod status
 * and the final ready or failure; the output channel shows them as plain lines a user can read and
 * copy. Progress arrives many times a second, so the renderer keeps a little state and prints a
 * progress line only when it moved by a step (or finished). Pure: events in, lines out.
 */

import type { LaunchEvent, LogLine, Progress } from "../client/types";
import { formatBytes, formatSeconds, phaseWord, redactUrl } from "./format";

const CACHED_WORDS: Record<string, string> = {
  STEP_PACKAGE: "packaging",
  STEP_UPLOAD: "upload",
  STEP_BUILD: "build",
};

/** Renders a log line from the build or the notebook: "[container] text", or the text alone. */
export function renderLogLine(line: LogLine): string {
  return line.container !== "" ? `[${line.container}] ${line.text}` : line.text;
}

function progressLine(progress: Progress): string {
  const parts: string[] = [phaseWord(progress.phase)];
  if (progress.totalBytes > 0) {
    const percent = Math.floor((100 * progress.doneBytes) / progress.totalBytes);
    parts.push(`${formatBytes(progress.doneBytes)} / ${formatBytes(progress.totalBytes)} (${percent}%)`);
  } else if (progress.doneBytes > 0) {
    parts.push(formatBytes(progress.doneBytes));
  }
  if (progress.totalFiles > 0) {
    parts.push(`${progress.doneFiles}/${progress.totalFiles} files`);
  } else if (progress.doneFiles > 0) {
    parts.push(`${progress.doneFiles} files`);
  }
  if (progress.bytesPerSecond > 0) {
    parts.push(`${formatBytes(progress.bytesPerSecond)}/s`);
  }
  const done = progress.totalBytes > 0 && progress.doneBytes >= progress.totalBytes;
  if (!done && progress.etaSeconds >= 0 && progress.bytesPerSecond > 0) {
    parts.push(`${formatSeconds(progress.etaSeconds)} left`);
  }
  return parts.join(", ");
}

/** The fraction done of a progress event in [0, 1], or undefined when there is no total. */
function fraction(progress: Progress): number | undefined {
  if (progress.totalBytes > 0) {
    return Math.min(1, progress.doneBytes / progress.totalBytes);
  }
  if (progress.totalFiles > 0) {
    return Math.min(1, progress.doneFiles / progress.totalFiles);
  }
  return undefined;
}

export class LaunchRenderer {
  /** The step of the progress line last printed per phase, in tenths (0..10). */
  private readonly lastStep = new Map<string, number>();

  /** @param progressStep print progress each time it moves by this fraction (default 10%). */
  constructor(private readonly progressStep = 0.1) {}

  /** The last progress not printed: printed before the next other event, so a phase's end shows. */
  private pending: Progress | undefined;
  /** The last progress line printed, so a pending one equal to it is not printed twice. */
  private lastPrinted: string | undefined;

  /**
   * The lines for one event; none for a progress event that did not move enough (it is printed
   * before the next event of another kind instead, so the final count of a phase is never lost).
   */
  render(event: LaunchEvent): string[] {
    if (event.event === "progress") {
      return this.renderEvent(event);
    }
    const pending = this.pending !== undefined ? `  ${progressLine(this.pending)}` : undefined;
    const lines = pending !== undefined && pending !== this.lastPrinted ? [pending] : [];
    this.pending = undefined;
    return [...lines, ...this.renderEvent(event)];
  }

  private renderEvent(event: LaunchEvent): string[] {
    switch (event.event) {
      case "phase": {
        const phase = event.phase;
        if (!phase) return [];
        const message = phase.message !== "" ? `: ${phase.message}` : "";
        return [`${phaseWord(phase.phase)}${message}`];
      }
      case "progress": {
        const progress = event.progress;
        if (!progress) return [];
        const done = fraction(progress);
        const step = done === undefined ? undefined : Math.floor(done / this.progressStep + 1e-9);
        const last = this.lastStep.get(progress.phase);
        if (step === undefined || (last !== undefined && step <= last)) {
          // A progress that counts nothing yet has nothing to say later either.
          const counts = progress.doneBytes > 0 || progress.doneFiles > 0 || progress.totalBytes > 0 || progress.totalFiles > 0;
          if (counts) this.pending = progress;
          return [];
        }
        this.lastStep.set(progress.phase, step);
        this.pending = undefined;
        this.lastPrinted = `  ${progressLine(progress)}`;
        return [this.lastPrinted];
      }
      case "cached": {
        const cached = event.cached;
        if (!cached) return [];
        const step = CACHED_WORDS[cached.step] ?? cached.step.replace(/^STEP_/, "").toLowerCase();
        const reason = cached.reason !== "" ? `: ${cached.reason}` : "";
        const md5 = cached.md5 !== "" ? ` (md5 ${cached.md5})` : "";
        return [`Skipped ${step}${reason}${md5}`];
      }
      case "buildLog":
        return event.buildLog ? [`  | ${renderLogLine(event.buildLog)}`] : [];
      case "pod": {
        const pod = event.pod;
        if (!pod) return [];
        const reason = pod.reason !== "" ? ` (${pod.reason})` : "";
        const message = pod.message !== "" ? `: ${pod.message}` : "";
        const ready = pod.ready ? ", ready" : "";
        return [`Pod ${pod.pod}: ${pod.phase}${reason}${ready}${message}`];
      }
      case "ready": {
        const ready = event.ready;
        if (!ready) return [];
        return [`Ready: ${redactUrl(ready.url)} (local port ${ready.localPort}); open it with “nbd: Open notebook in browser”.`];
      }
      case "failed": {
        const failed = event.failed;
        if (!failed) return [];
        const reason = failed.reason !== "" ? ` (${failed.reason})` : "";
        const lines = [`Failed${reason}: ${failed.message}`];
        for (const tail of failed.logTail) {
          lines.push(`  | ${tail}`);
        }
        return lines;
      }
      case "notice": {
        const notice = event.notice;
        if (!notice) return [];
        return [`${notice.level === "LEVEL_WARNING" ? "Warning" : "Note"}: ${notice.message}`];
      }
      default:
        return [];
    }
  }
}
