// Samplers for flow-matching video DiTs: Euler, Euler-ancestral/DDIM(η), multi-step consistency.
export * from "./samplers.ts";
export { hostOps, deviceOps, type VectorOps, type Term } from "./ops.ts";
export { ditVelocityModel, type DitModel } from "./dit.ts";
