/**
 * The public surface of the nbd client: discovery, connection (with auto-start), the typed client,
 * its error type and the message types. Nothing here imports the editor.
 */

export { NbdClient, CHANNEL_OPTIONS, type CallOptions, type HealthStatus } from "./client";
export { connect, probe, waitForHealth, type ConnectOptions, type Connection } from "./connect";
export { socketLocation, socketProblem, stateDir, grpcTarget, MAX_SOCKET_PATH, type Env, type SocketLocation, type SocketSource } from "./discovery";
export { NbdError, codeName, toNbdError } from "./errors";
export { launchRequest, absoluteKubeconfig, commandForFile, runFileRequest, type LaunchSettings } from "./request";
export { SessionWatcher, type WatchHandlers, type WatchOptions } from "./watch";
export * from "./types";
