// Starts one Node process per GPU for a sequence-parallel run, relays rank 0's NCCL unique id to
// the others, forwards their output prefixed with the rank, and collects one result per rank.
// When a rank fails (non-zero exit, signal, reported error) the others are stopped at once, since
// they would otherwise block forever in NCCL waiting for it, and launch() rejects naming the rank
// and its error.
import { fork, type ChildProcess } from "node:child_process";
import { resolve as resolvePath } from "node:path";
import { createInterface } from "node:readline";
import { RANK_ENV, type RankMessage } from "./world.ts";

export interface LaunchOptions {
  /** The rank script (TypeScript runs through tsx's loader). */
  readonly script: string;
  readonly args?: readonly string[];
  /** Number of ranks. */
  readonly size: number;
  /**
   * How ranks get their GPU. "ordinal" (default, as torchrun does) leaves every GPU visible to
   * every rank and rank r opens ordinal devices[r] (default r), so NCCL sees its peers' GPUs in
   * each process. "visible" gives rank r CUDA_VISIBLE_DEVICES=devices[r] (default: the r-th entry
   * of the caller's $CUDA_VISIBLE_DEVICES, else r) and it opens ordinal 0. "none" sets no device
   * (ranks without CUDA, e.g. tests).
   */
  readonly deviceMode?: "visible" | "ordinal" | "none";
  readonly devices?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** Stops every rank and rejects after this long (default: no limit). */
  readonly timeoutMs?: number;
  /** Between SIGTERM and SIGKILL when stopping ranks (default 3 s). */
  readonly graceMs?: number;
  /** Where rank output goes (default: this process's stdout/stderr, prefixed "[rank r] "). */
  readonly onOutput?: (rank: number, stream: "stdout" | "stderr", line: string) => void;
  readonly onSpawn?: (rank: number, pid: number) => void;
}

export class LaunchError extends Error {
  override name = "LaunchError";
  constructor(
    message: string,
    /** The first rank that failed (undefined for a timeout). */
    readonly rank?: number,
  ) {
    super(message);
  }
}

const STDERR_TAIL = 20;

function defaultDevices(size: number, env: NodeJS.ProcessEnv, mode: "visible" | "ordinal"): string[] {
  const visible = env.CUDA_VISIBLE_DEVICES?.split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (visible?.length && visible.length < size)
    throw new LaunchError(
      `${size} ranks need ${size} GPUs, but CUDA_VISIBLE_DEVICES lists ${visible.length} (${visible.join(",")})`,
    );
  // Ordinals count the visible GPUs from 0; "visible" names them as the caller's list does.
  if (visible?.length && mode === "visible") return visible.slice(0, size);
  return Array.from({ length: size }, (_, r) => String(r));
}

function rankEnv(o: LaunchOptions, rank: number, devices: readonly string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    // NVLink multicast (NVLS) stays off unless asked for: tilec's transfers are point-to-point, and
    // on shared hosts a program using multicast can take the GPUs out of service.
    NCCL_NVLS_ENABLE: "0",
    ...process.env,
    ...o.env,
    [RANK_ENV.rank]: String(rank),
    [RANK_ENV.size]: String(o.size),
    [RANK_ENV.launched]: "1",
  };
  const mode = o.deviceMode ?? "ordinal";
  if (mode === "visible") {
    env.CUDA_VISIBLE_DEVICES = devices[rank];
    env[RANK_ENV.device] = "0";
  } else if (mode === "ordinal") env[RANK_ENV.device] = devices[rank];
  return env;
}

/** Runs `size` ranks of `script`; resolves with each rank's reported value, by rank. */
export function launch(o: LaunchOptions): Promise<unknown[]> {
  if (!Number.isInteger(o.size) || o.size < 1) throw new LaunchError(`--gpus must be a positive integer`);
  const env = { ...process.env, ...o.env };
  const mode = o.deviceMode ?? "ordinal";
  const devices = mode === "none" ? [] : (o.devices ?? defaultDevices(o.size, env, mode));
  if (mode !== "none" && devices.length < o.size)
    throw new LaunchError(`${o.size} ranks need ${o.size} devices, ${devices.length} given`);
  const tsx = import.meta.resolve("tsx");
  const output =
    o.onOutput ??
    ((rank, stream, line) =>
      (stream === "stdout" ? process.stdout : process.stderr).write(`[rank ${rank}] ${line}\n`));

  return new Promise((resolve, reject) => {
    const children: ChildProcess[] = [];
    const results: unknown[] = new Array(o.size).fill(undefined);
    const errors: (RankMessage & { type: "tilec:error" })[] = [];
    const stderrTail: string[][] = Array.from({ length: o.size }, () => []);
    const exited = new Set<number>();
    const waitingForId = new Set<number>();
    let ncclId: RankMessage | undefined;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;

    const stopAll = () => {
      for (const [r, c] of children.entries()) {
        if (exited.has(r) || c.exitCode !== null || c.signalCode !== null) continue;
        c.kill("SIGTERM");
        setTimeout(() => {
          if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
        }, o.graceMs ?? 3000).unref();
      }
    };
    const fail = (err: LaunchError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      process.off("exit", killOnExit);
      stopAll();
      reject(err);
    };
    const killOnExit = () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    };
    process.on("exit", killOnExit);

    const describeFailure = (rank: number, code: number | null, signal: NodeJS.Signals | null) => {
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const reported = errors[rank];
      const detail = reported
        ? (reported.stack ?? reported.message)
        : stderrTail[rank]!.length
          ? `last stderr lines:\n${stderrTail[rank]!.join("\n")}`
          : "(no error output)";
      const others = children.map((_, r) => r).filter((r) => r !== rank && !exited.has(r));
      const stopped = others.length ? `; stopped rank(s) ${others.join(", ")}` : "";
      return new LaunchError(`rank ${rank} of ${o.size} ${how}${stopped}\n${indent(detail)}`, rank);
    };

    for (let rank = 0; rank < o.size; rank++) {
      const child = fork(resolvePath(o.script), [...(o.args ?? [])], {
        execArgv: ["--import", tsx],
        env: rankEnv(o, rank, devices),
        stdio: ["ignore", "pipe", "pipe", "ipc"],
      });
      children.push(child);
      if (child.pid !== undefined) o.onSpawn?.(rank, child.pid);
      for (const stream of ["stdout", "stderr"] as const) {
        createInterface({ input: child[stream]! }).on("line", (line) => {
          if (stream === "stderr") {
            const tail = stderrTail[rank]!;
            tail.push(line);
            if (tail.length > STDERR_TAIL) tail.shift();
          }
          output(rank, stream, line);
        });
      }
      child.on("message", (m: RankMessage) => {
        if (m?.type === "tilec:nccl-id") {
          if (rank !== 0)
            return fail(new LaunchError(`rank ${rank} sent an NCCL id; only rank 0 creates it`, rank));
          ncclId = m;
          for (const r of waitingForId) children[r]!.send(m);
          waitingForId.clear();
        } else if (m?.type === "tilec:want-id") {
          // A rank asks once its listener is in place: a message sent before would be lost.
          if (ncclId) child.send(ncclId);
          else waitingForId.add(rank);
        } else if (m?.type === "tilec:result") results[rank] = m.value;
        else if (m?.type === "tilec:error") errors[rank] = m;
      });
      child.on("error", (e) => fail(new LaunchError(`rank ${rank}: ${e.message}`, rank)));
      child.on("exit", (code, signal) => {
        exited.add(rank);
        if (settled) return;
        if (code !== 0 || errors[rank]) return fail(describeFailure(rank, code, signal));
        if (exited.size === o.size) {
          settled = true;
          clearTimeout(timer);
          process.off("exit", killOnExit);
          resolve(results);
        }
      });
    }
    if (o.timeoutMs !== undefined)
      timer = setTimeout(() => {
        const running = children.map((_, r) => r).filter((r) => !exited.has(r));
        fail(new LaunchError(`timed out after ${o.timeoutMs} ms; stopped rank(s) ${running.join(", ")}`));
      }, o.timeoutMs);
  });
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `  ${l}`)
    .join("\n");
}
