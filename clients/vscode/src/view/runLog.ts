/**
 * Run events rendered as lines for a run's output channel.
 *
 * Why this module exists: a Run stream starts like a launch (packaging, upload, build) and goes on
 * with the run's status and every rank's log; the ranks' lines are prefixed `[rank i]` when the
 * run has several nodes, as nbctl prints them. Pure: events in, lines out.
 */

import type { LaunchEvent, RunEvent, RunInfo, RunPhase } from "../client/types";
import { LaunchRenderer } from "./launchLog";

export const RUN_PHASE_WORDS: Record<RunPhase, string> = {
  RUN_PHASE_UNSPECIFIED: "unknown",
  RUN_PHASE_PACKAGING: "packaging",
  RUN_PHASE_UPLOADING: "uploading",
  RUN_PHASE_BUILDING: "building",
  RUN_PHASE_PENDING: "pending",
  RUN_PHASE_STARTING: "starting",
  RUN_PHASE_RUNNING: "running",
  RUN_PHASE_SUCCEEDED: "succeeded",
  RUN_PHASE_FAILED: "failed",
  RUN_PHASE_STOPPED: "stopped",
};

export function runPhaseWord(phase: RunPhase | string): string {
  return (RUN_PHASE_WORDS as Record<string, string>)[phase] ?? phase.replace(/^RUN_PHASE_/, "").toLowerCase();
}

/** One line that says how a run ended: phase, exit code, the failed rank and the reason. */
export function runOutcome(info: RunInfo): string {
  const code = info.exitCode !== undefined && info.exitCode !== null ? `, exit code ${info.exitCode}` : "";
  const rank = info.failedRank !== undefined && info.failedRank !== null && info.nodes > 1 ? ` (rank ${info.failedRank})` : "";
  const why = info.message !== "" ? `: ${info.message}` : "";
  return `Run ${info.name} ${runPhaseWord(info.phase)}${code}${rank}${why}`;
}

export class RunRenderer {
  private readonly steps = new LaunchRenderer();
  private nodes = 1;
  private lastStatus = "";
  /** The run once it ended (the stream's last event). */
  finished: RunInfo | undefined;

  render(event: RunEvent): string[] {
    switch (event.event) {
      case "status": {
        const info = event.status;
        if (!info) return [];
        this.nodes = info.nodes > 0 ? info.nodes : 1;
        const ranks = info.ranks.filter((r) => r.phase !== "").map((r) => `rank ${r.index} ${r.phase.toLowerCase()}`);
        const line =
          `Run ${info.name} ${runPhaseWord(info.phase)}` +
          (info.message !== "" ? `: ${info.message}` : "") +
          (ranks.length > 0 ? ` (${ranks.join(", ")})` : "");
        if (line === this.lastStatus) return [];
        this.lastStatus = line;
        return [line];
      }
      case "log": {
        const log = event.log;
        if (!log) return [];
        const prefix = this.nodes > 1 ? `[rank ${log.rank}] ` : "";
        return [prefix + log.text.replace(/\n$/, "")];
      }
      case "finished": {
        const info = event.finished;
        if (!info) return [];
        this.finished = info;
        return [runOutcome(info)];
      }
      default:
        // Packaging, upload, build, notices and failures read as in a launch.
        return this.steps.render({ ...event, session: event.run } as unknown as LaunchEvent);
    }
  }
}
