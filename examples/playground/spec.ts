// The spec the playground opens with: Open-Sora-Plan 29 frames (examples/efficient-vdit/osp29.tile,
// 28,800 tokens: fine to plan, heavy to run in a browser) and a small layout that runs in well under
// a second, even on a CPU WebGPU adapter such as SwiftShader.
import osp29 from "../efficient-vdit/osp29.tile?raw";

export const SMALL_SPEC = `# A small layout for running in the browser: 4 frames of 8 × 16 tokens = 512 tokens.
layout small { video 4 x 8 x 16  heads 2  head_dim 64  dtype fp32 }

kernel small_tile_2_2 { layout small  mask attention_tile(2)  block 64 x 64  targets wgsl, cpu }
kernel small_tile_b48 { layout small  mask attention_tile(2)  block 48 x 48  targets wgsl, cpu }
kernel small_band     { layout small  mask temporal_band(1) and abs(q.row - k.row) <= 2  block 64 x 64  targets wgsl, cpu }
kernel small_sta      { layout small  mask sliding_tile(1, 4, 8, 3, 1, 1)  block 64 x 64  targets wgsl, cpu }
`;

export const DEFAULT_SPEC = `${SMALL_SPEC}\n${osp29}`;
