// The launcher with fake ranks (no CUDA): id passing from rank 0 to the others, results by rank,
// device assignment, and failure propagation (a rank that throws, exits or is killed stops the
// others, which would otherwise wait forever).
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { launch, LaunchError, type LaunchOptions } from "../../runtime/parallel/launcher.ts";

const script = fileURLToPath(new URL("./parallel-fixtures/fake-rank.ts", import.meta.url));

interface FakeResult {
  rank: number;
  size: number;
  id: string;
  cuda?: string;
  nvls?: string;
  env: { rank: number; size: number; device: number; launched: boolean };
}

function run(args: string[], extra: Partial<LaunchOptions> = {}) {
  const lines: string[] = [];
  const pids: number[] = [];
  const result = launch({
    script,
    args,
    size: 3,
    deviceMode: "none",
    graceMs: 500,
    timeoutMs: 40_000,
    onOutput: (rank, stream, line) => lines.push(`${rank} ${stream} ${line}`),
    onSpawn: (_, pid) => pids.push(pid),
    ...extra,
  });
  return { result, lines, pids };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function allGone(pids: number[]): Promise<boolean> {
  for (let i = 0; i < 50 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 100));
  return !pids.some(alive);
}

describe("launcher", () => {
  it("runs N ranks, relays rank 0's id to all of them and collects results by rank", async () => {
    const { result, lines } = run(["ok"], {
      deviceMode: "visible",
      devices: ["4", "5", "6"],
    });
    const results = (await result) as FakeResult[];
    expect(results.map((r) => r.rank)).toEqual([0, 1, 2]);
    expect(results.every((r) => r.size === 3 && r.env.launched)).toBe(true);
    expect(new Set(results.map((r) => r.id)).size).toBe(1);
    expect(results[0]!.id).toMatch(/^[0-9a-f]{256}$/);
    // One GPU per rank through CUDA_VISIBLE_DEVICES; each opens its ordinal 0.
    expect(results.map((r) => r.cuda)).toEqual(["4", "5", "6"]);
    expect(results.map((r) => r.env.device)).toEqual([0, 0, 0]);
    // NVLink multicast stays off in every rank unless the caller's environment says otherwise.
    expect(results.map((r) => r.nvls)).toEqual(
      process.env.NCCL_NVLS_ENABLE ? Array(3).fill(process.env.NCCL_NVLS_ENABLE) : ["0", "0", "0"],
    );
    expect(lines).toContain("2 stdout rank 2 has the id");
  });

  it("a rank that throws stops the others and the error names the rank and its message", async () => {
    const { result, pids } = run(["throw", "1"]);
    const err = await result.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LaunchError);
    expect((err as LaunchError).rank).toBe(1);
    expect((err as Error).message).toMatch(/^rank 1 of 3 exited with code 1; stopped rank\(s\) 0, 2\n/);
    expect((err as Error).message).toContain("rank 1 gave up on purpose");
    expect(await allGone(pids)).toBe(true);
  });

  it("a rank that exits or is killed shows its exit code or signal and its last stderr lines", async () => {
    const exit = run(["exit", "2"]);
    const e1 = (await exit.result.catch((e: unknown) => e)) as LaunchError;
    expect(e1.message).toMatch(/rank 2 of 3 exited with code 3; stopped rank\(s\) 0, 1/);
    expect(e1.message).toContain("about to exit with code 3");
    expect(await allGone(exit.pids)).toBe(true);

    const killed = run(["sigkill", "0"]);
    const e2 = (await killed.result.catch((e: unknown) => e)) as LaunchError;
    expect(e2.message).toMatch(/rank 0 of 3 was killed by SIGKILL; stopped rank\(s\) 1, 2/);
    expect(await allGone(killed.pids)).toBe(true);
  });

  it("a run past its time limit is stopped", async () => {
    const { result, pids } = run(["hang", "-1"], { size: 2, timeoutMs: 3000 });
    await expect(result).rejects.toThrow(/timed out after 3000 ms; stopped rank\(s\) 0, 1/);
    expect(await allGone(pids)).toBe(true);
  });

  it("tilec launch: exit 0 when every rank succeeds, 1 when one fails, 2 for usage errors", async () => {
    const { mainAsync } = await import("../../cli/main.ts");
    const stderr = process.stderr.write;
    const stdout = process.stdout.write;
    let printed = "";
    process.stderr.write = process.stdout.write = ((s: string) => ((printed += s), true)) as typeof stdout;
    try {
      expect(
        await mainAsync([
          "launch",
          "--gpus",
          "2",
          "--device-mode",
          "visible",
          "--devices",
          "7,8",
          script,
          "ok",
        ]),
      ).toBe(0);
      expect(printed).toMatch(/"cuda": "8"/);
      expect(printed).toContain("all 2 rank(s) finished");
      expect(await mainAsync(["launch", "-g", "2", script, "throw", "0"])).toBe(1);
      expect(printed).toMatch(/tilec launch: rank 0 of 2 exited with code 1; stopped rank\(s\) 1/);
      expect(await mainAsync(["launch", "--gpus", "0", script])).toBe(2);
      expect(printed).toContain("--gpus must be a positive integer, got '0'");
    } finally {
      process.stderr.write = stderr;
      process.stdout.write = stdout;
    }
  });

  it("refuses more ranks than CUDA_VISIBLE_DEVICES lists", () => {
    for (const deviceMode of ["ordinal", "visible"] as const)
      expect(() => launch({ script, size: 4, deviceMode, env: { CUDA_VISIBLE_DEVICES: "0,1" } })).toThrow(
        /4 ranks need 4 GPUs, but CUDA_VISIBLE_DEVICES lists 2 \(0,1\)/,
      );
  });

  it("by default every rank sees all GPUs and opens its own ordinal", async () => {
    const results = (await run(["ok"], { deviceMode: undefined, env: { CUDA_VISIBLE_DEVICES: "3,5,6" } })
      .result) as FakeResult[];
    expect(results.map((r) => [r.cuda, r.env.device])).toEqual([
      ["3,5,6", 0],
      ["3,5,6", 1],
      ["3,5,6", 2],
    ]);
  });
});
