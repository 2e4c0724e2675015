#!/usr/bin/env node
// Builds tilec's CUDA addon (runtime/cuda/native → runtime/cuda/build/Release/tilec_cuda.node)
// with the node-gyp in node_modules. Works offline and without CUDA: the addon
// dlopens the driver and NVRTC at run time, so only a C++ compiler is needed.
//
// Usage: node scripts/build-addon.mjs [--clean] [--debug] [--verbose]
//   --clean    reconfigure and rebuild everything (default: incremental make)
//   --debug    build the Debug configuration instead of Release
//   --verbose  show node-gyp's and the compiler's full output
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const addonDir = join(root, "runtime", "cuda");
const nodeGyp = join(root, "node_modules", "node-gyp", "bin", "node-gyp.js");
const args = new Set(process.argv.slice(2));
const verbose = args.has("--verbose");
const config = args.has("--debug") ? "Debug" : "Release";
const output = join(addonDir, "build", config, "tilec_cuda.node");

function fail(message, detail) {
  if (detail) process.stderr.write(detail.endsWith("\n") ? detail : detail + "\n");
  console.error(`build-addon: FAILED: ${message}`);
  process.exit(1);
}

// Node headers: prefer a local install (offline); node-gyp would otherwise
// try to download them.
function findNodeDir() {
  const candidates = [process.env.npm_config_nodedir, process.env.TILEC_NODEDIR, "/usr", "/usr/local"];
  candidates.push(join(dirname(process.execPath), ".."));
  for (const dir of candidates) {
    if (dir && existsSync(join(dir, "include", "node", "node_api.h"))) return dir;
  }
  return undefined;
}

function runGyp(command, extra) {
  const nodedir = findNodeDir();
  const argv = [nodeGyp, command, "--directory", addonDir, ...extra];
  if (nodedir) argv.push(`--nodedir=${nodedir}`);
  if (config === "Debug") argv.push("--debug");
  if (!verbose) argv.push("--loglevel=warn");
  const r = spawnSync(process.execPath, argv, {
    cwd: root,
    encoding: "utf8",
    stdio: verbose ? "inherit" : "pipe",
  });
  if (r.error) fail(`could not run node-gyp: ${r.error.message}`);
  if (r.status !== 0) {
    const hint = nodedir
      ? ""
      : " (no local Node headers found: set TILEC_NODEDIR to a dir with include/node)";
    fail(`node-gyp ${command} exited with ${r.status}${hint}`, verbose ? "" : `${r.stdout}${r.stderr}`);
  }
}

// Reconfigure only when needed: `configure` re-runs gyp (~1 s); plain
// `build` lets make recompile just the changed sources.
function needsConfigure() {
  const makefile = join(addonDir, "build", "Makefile");
  const configGypi = join(addonDir, "build", "config.gypi");
  if (!existsSync(makefile) || !existsSync(configGypi)) return true;
  return statSync(join(addonDir, "binding.gyp")).mtimeMs > statSync(makefile).mtimeMs;
}

if (!existsSync(nodeGyp)) fail(`node-gyp not found at ${relative(root, nodeGyp)}: run npm install`);
const t0 = performance.now();
const jobs = ["--jobs", String(availableParallelism())];
if (args.has("--clean")) runGyp("rebuild", jobs);
else {
  if (needsConfigure()) runGyp("configure", []);
  runGyp("build", jobs);
}
if (!existsSync(output)) fail(`node-gyp succeeded but ${relative(root, output)} is missing`);

// Load it once so a broken binary fails here rather than in the first test;
// loading must succeed even on machines without CUDA.
let status;
try {
  const addon = createRequire(import.meta.url)(output);
  const a = addon.available();
  status = a.ok
    ? `CUDA available (${a.deviceCount} device(s), driver ${a.driverVersion})`
    : `CUDA unavailable: ${a.reason}`;
} catch (e) {
  fail(`built ${relative(root, output)} but it does not load: ${e instanceof Error ? e.message : e}`);
}
const secs = ((performance.now() - t0) / 1000).toFixed(1);
console.log(`build-addon: OK: ${relative(root, output)} built in ${secs}s; ${status}`);
