// A rank without CUDA for the launcher tests: shares an id through the launcher like initWorld
// does (random bytes instead of an NCCL id), then behaves as argv[2] says.
import { randomBytes } from "node:crypto";
import { rankInfo, runRank, shareId } from "../../../runtime/parallel/world.ts";

const mode = process.argv[2] ?? "ok";
const failing = Number(process.argv[3] ?? 1);

runRank(async (info) => {
  const id = await shareId(info, () => new Uint8Array(randomBytes(128)));
  console.log(`rank ${info.rank} has the id`);
  if (info.rank === failing) {
    if (mode === "throw") throw new Error(`rank ${info.rank} gave up on purpose`);
    if (mode === "exit") {
      console.error("about to exit with code 3");
      process.exit(3);
    }
    if (mode === "sigkill") process.kill(process.pid, "SIGKILL");
  }
  // The others wait as if blocked on a collective with the failed rank.
  if (mode !== "ok") await new Promise(() => setInterval(() => {}, 1000));
  return {
    rank: info.rank,
    size: info.size,
    env: rankInfo(),
    id: Buffer.from(id).toString("hex"),
    cuda: process.env.CUDA_VISIBLE_DEVICES,
    nvls: process.env.NCCL_NVLS_ENABLE,
  };
});
