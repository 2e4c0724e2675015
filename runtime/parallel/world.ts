// The rank side of a multi-process run: which rank this process is (from the launcher's
// environment), the NCCL unique id handed from rank 0 to the others through the launcher's IPC
// channel, and reporting a result or an error back. A script run without the launcher is rank 0
// of a world of size 1 and goes through the same code.
//
//   runRank(async () => {
//     const world = await initWorld();          // CUDA device + NCCL communicator
//     ...
//     return { msPerStep };                     // collected by launch() per rank
//   });
import { CudaDevice } from "../cuda/device.ts";
import { NcclComm, uniqueId, UNIQUE_ID_BYTES } from "./nccl.ts";

/** Environment variables the launcher sets for each rank. */
export const RANK_ENV = {
  rank: "TILEC_RANK",
  size: "TILEC_WORLD_SIZE",
  /** CUDA device ordinal the rank opens (0 when the launcher narrowed CUDA_VISIBLE_DEVICES to one GPU). */
  device: "TILEC_DEVICE",
  /** "1" in processes started by launch(): only then is the IPC channel the launcher's. */
  launched: "TILEC_LAUNCHED",
} as const;

/** IPC messages between a rank and the launcher. */
export type RankMessage =
  | { type: "tilec:nccl-id"; id: string }
  | { type: "tilec:want-id" }
  | { type: "tilec:result"; value: unknown }
  | { type: "tilec:error"; message: string; stack?: string };

export interface RankInfo {
  readonly rank: number;
  readonly size: number;
  readonly device: number;
  /** Started by launch() (an IPC channel to the launcher exists). */
  readonly launched: boolean;
}

function envInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 0) throw new Error(`$${name}=${raw} is not a non-negative integer`);
  return v;
}

export function rankInfo(env: NodeJS.ProcessEnv = process.env): RankInfo {
  const size = envInt(env, RANK_ENV.size, 1);
  const rank = envInt(env, RANK_ENV.rank, 0);
  if (size < 1 || rank >= size) throw new Error(`rank ${rank} outside a world of ${size}`);
  // A process forked by something else (a vitest worker) has an IPC channel that is not ours.
  const launched = env[RANK_ENV.launched] === "1" && typeof process.send === "function";
  if (size > 1 && !launched)
    throw new Error(
      `$${RANK_ENV.size}=${size} but this process has no launcher: start it with \`tilec launch\``,
    );
  return { rank, size, device: envInt(env, RANK_ENV.device, 0), launched };
}

function send(message: RankMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    process.send!(message, undefined, {}, (e) => (e ? reject(e) : resolve()));
  });
}

// A rank whose launcher is gone must not linger (it may be blocked waiting for peers).
let watchingLauncher = false;
function exitWithLauncher(): void {
  if (watchingLauncher) return;
  watchingLauncher = true;
  process.on("disconnect", () => {
    process.stderr.write("tilec: the launcher went away; exiting\n");
    process.exit(1);
  });
}

/**
 * Rank 0 creates the id (`create`) and sends it to the launcher, which relays it to every other
 * rank; those wait for it here. In a world of one, the id is just created.
 */
export async function shareId(info: RankInfo, create: () => Uint8Array): Promise<Uint8Array> {
  if (info.size === 1 && !info.launched) return create();
  exitWithLauncher();
  if (info.rank === 0) {
    const id = create();
    await send({ type: "tilec:nccl-id", id: Buffer.from(id).toString("base64") });
    return id;
  }
  const id = new Promise<Uint8Array>((resolve) => {
    const onMessage = (m: RankMessage) => {
      if (m?.type !== "tilec:nccl-id") return;
      process.off("message", onMessage);
      resolve(new Uint8Array(Buffer.from(m.id, "base64")));
    };
    process.on("message", onMessage);
  });
  await send({ type: "tilec:want-id" });
  return id;
}

export interface World extends RankInfo {
  readonly cuda: CudaDevice;
  readonly comm: NcclComm;
}

/** Opens this rank's GPU and joins the NCCL communicator of all ranks. */
export async function initWorld(info: RankInfo = rankInfo()): Promise<World> {
  const cuda = CudaDevice.open(info.device);
  const id = await shareId(info, uniqueId);
  if (id.byteLength !== UNIQUE_ID_BYTES) throw new Error(`received an NCCL id of ${id.byteLength} bytes`);
  const comm = await NcclComm.init(info.size, id, info.rank);
  return { ...info, cuda, comm };
}

/**
 * Runs a rank's main function: its value goes to the launcher (launch() resolves with one value
 * per rank), an error is reported with its stack and the process exits 1, which makes the
 * launcher stop the other ranks. Without a launcher the value is printed as JSON.
 */
export function runRank<T>(main: (info: RankInfo) => Promise<T>): void {
  let launched = false;
  const finish = async (message: RankMessage, code: number) => {
    if (launched) await send(message).catch(() => {});
    else if (message.type === "tilec:result" && message.value !== undefined)
      process.stdout.write(JSON.stringify(message.value) + "\n");
    else if (message.type === "tilec:error") process.stderr.write(`${message.stack ?? message.message}\n`);
    // The IPC channel would otherwise keep the process alive.
    process.exit(code);
  };
  (async () => {
    const info = rankInfo();
    launched = info.launched;
    if (launched) exitWithLauncher();
    return main(info);
  })().then(
    (value) => finish({ type: "tilec:result", value }, 0),
    (e: unknown) => {
      const err = e instanceof Error ? e : new Error(String(e));
      return finish({ type: "tilec:error", message: err.message, stack: err.stack }, 1);
    },
  );
}
