// A representative set of generated kernels for `compute-sanitizer --tool memcheck` (and racecheck):
// ragged sequence ends, partial and empty blocks, fully masked rows, GQA, both tensor layouts, the
// mma (bf16/fp16) and SIMT (fp32) templates, and on an sm_90 device the wgmma template (the default
// there) as well as the mma one (asked for with arch sm_80); the last case's keys grow 12x and 200x
// by thirds of the sequence, so the wgmma template's fast softmax falls back (a warp recomputes its
// rows of S from shared memory). Exits non-zero if any result is wrong.
//   compute-sanitizer --tool memcheck --error-exitcode 1 node node_modules/tsx/dist/cli.mjs bench/sanitize.ts
import { seqLen } from "../compiler/layout.ts";
import { compileSpec } from "../compiler/pipeline.ts";
import { compile } from "../runtime/attention.ts";
import { checkKernel, jumpingKeys } from "../test/support/attentionCheck.ts";
import { checkBackward } from "../test/support/backwardCheck.ts";

const cases = [
  ["bf16", 96, "attention_tile(2) or q.text", "128 x 128", "bshd"],
  ["bf16", 64, "q.video and q.frame != 1 and k.video", "64 x 64", "bhsd"],
  ["fp16", 128, "causal_frames or k.text", "128 x 64", "bshd"],
  ["fp32", 64, "temporal_band(1) or q.text", "64 x 32", "bshd"],
  ["bf16", 96, "full", "128 x 128", "bshd", "jump"],
] as const;
let bad = 0;
for (const arch of [undefined, "sm_80"] as const)
  for (const [dtype, d, mask, block, layout, jump] of cases) {
    const src = `layout L { video 3 x 7 x 11 text 17 after batch 2 heads 4 kv_heads 2 head_dim ${d} dtype ${dtype} }
kernel k { layout L mask ${mask} block ${block} }`;
    const spec = compileSpec(src, "sanitize.tile").spec!;
    const k = spec.kernels.get("k")!;
    const attn = await compile(spec, { target: "cuda", kernel: "k", arch });
    const keyGain = jump ? jumpingKeys(seqLen(k.layout)) : undefined;
    const r = checkKernel(attn, k, { seed: 3, layout, keyGain });
    const ok =
      r.unwritten === 0 &&
      r.nonFinite === 0 &&
      r.maskedRowsOk &&
      r.relError < (dtype === "fp32" ? 1e-4 : 1e-2);
    if (!ok) bad++;
    console.log(
      `${ok ? "ok  " : "FAIL"} ${attn.compiled.template} ${dtype} d=${d} ${block} ${layout} ${mask}${jump ? " (jumping scores)" : ""}: rel err ${r.relError.toExponential(2)}`,
    );
    attn.free();
  }
// The backward: both dK/dV templates (wgmma on an sm_90 device, mma.sync asked for with sm_80), both
// dQ variants (fp32 atomics, the deterministic pass), GQA, a ragged end, partial blocks, both layouts.
const backwardCases = [
  ["bf16", 96, "attention_tile(2) or q.text", "bshd", false],
  ["fp16", 64, "abs(q.frame - k.frame) <= 1 and abs(q.row - k.row) <= 2 or k.text", "bhsd", true],
] as const;
for (const arch of [undefined, "sm_80"] as const)
  for (const [dtype, d, mask, layout, deterministic] of backwardCases) {
    const src = `layout L { video 3 x 7 x 11 text 17 after batch 2 heads 4 kv_heads 2 head_dim ${d} dtype ${dtype} }
kernel k { layout L mask ${mask} block 128 x 128 }`;
    const spec = compileSpec(src, "sanitize.tile").spec!;
    const k = spec.kernels.get("k")!;
    const attn = await compile(spec, { target: "cuda", kernel: "k", arch, backward: true, tuned: false });
    const [r] = checkBackward(attn, k, { seed: 5, layout, deterministic });
    const ok =
      r!.unwritten === 0 && r!.nonFinite === 0 && r!.maskedRowsZero && Math.max(r!.dq, r!.dk, r!.dv) < 2e-2;
    if (!ok) bad++;
    console.log(
      `${ok ? "ok  " : "FAIL"} backward ${attn.backwardCompiled!.source.template} ${deterministic ? "deterministic" : "atomic"} ${dtype} d=${d} ${layout} ${mask}: rel err dq ${r!.dq.toExponential(2)} dk ${r!.dk.toExponential(2)} dv ${r!.dv.toExponential(2)}`,
    );
    attn.free();
  }
process.exitCode = bad ? 1 : 0;
