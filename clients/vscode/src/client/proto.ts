/**
 * Loads the nbdapi.v1 contract and the gRPC health protocol from the .proto files in this package.
 *
 * Why this module exists: the extension has no generated code; the build copies the repository's
 * proto/nbdapi/v1/*.proto into `<package>/proto/`, and this module turns them into gRPC client
 * constructors once per process. The loader options fix the shape that types.ts describes.
 */

import * as fs from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** The package root: out/src/client/ (compiled) or src/client/ (sources) is two or three levels below. */
function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    if (fs.existsSync(path.join(dir, "package.json"))) {
      return dir;
    }
    dir = path.dirname(dir);
  }
  throw new Error(`nbd: cannot find the extension's package.json above ${__dirname}`);
}

export interface ProtoPaths {
  /** The folder holding nbdapi/v1/*.proto. */
  apiRoot: string;
  /** The folder holding grpc/health/v1/health.proto. */
  healthRoot: string;
}

export function protoPaths(root: string = packageRoot()): ProtoPaths {
  return { apiRoot: path.join(root, "proto"), healthRoot: path.join(root, "health") };
}

export type ClientConstructor = grpc.ServiceClientConstructor;

export interface Services {
  Notebooks: ClientConstructor;
  Daemon: ClientConstructor;
  Runs: ClientConstructor;
  Health: ClientConstructor;
}

let cached: Services | undefined;

/** The client constructors, loaded on first use. */
export function services(): Services {
  if (cached !== undefined) {
    return cached;
  }
  const { apiRoot, healthRoot } = protoPaths();
  const apiFiles = ["nbdapi/v1/notebooks.proto", "nbdapi/v1/daemon.proto", "nbdapi/v1/runs.proto"];
  for (const file of apiFiles) {
    if (!fs.existsSync(path.join(apiRoot, file))) {
      throw new Error(`nbd: ${path.join(apiRoot, file)} is missing; build the extension with \`npm run build\`.`);
    }
  }
  const api = grpc.loadPackageDefinition(protoLoader.loadSync(apiFiles, { ...LOADER_OPTIONS, includeDirs: [apiRoot] }));
  const health = grpc.loadPackageDefinition(
    protoLoader.loadSync("grpc/health/v1/health.proto", { ...LOADER_OPTIONS, includeDirs: [healthRoot] }),
  );
  const v1 = (api.nbdapi as grpc.GrpcObject).v1 as grpc.GrpcObject;
  const healthV1 = ((health.grpc as grpc.GrpcObject).health as grpc.GrpcObject).v1 as grpc.GrpcObject;
  cached = {
    Notebooks: v1.Notebooks as ClientConstructor,
    Daemon: v1.Daemon as ClientConstructor,
    Runs: v1.Runs as ClientConstructor,
    Health: healthV1.Health as ClientConstructor,
  };
  return cached;
}
