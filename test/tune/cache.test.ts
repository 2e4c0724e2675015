// The winner cache: keyed by device, driver, compiler and spec hash; survives other runs' writes;
// a damaged or older-format file reads as empty; emit/build look winners up without a device.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { defaultTuneCachePath, TuneCache, tuneCacheKey, type TuneEntry } from "../../tune/cache.ts";

const id = {
  target: "cuda" as const,
  device: "NVIDIA H100 80GB HBM3",
  driver: "13000",
  compiler: "nvrtc 13.0",
};
const entry = (over: Partial<TuneEntry> = {}): TuneEntry => ({
  ...id,
  specHash: "abc",
  kernel: "tile_2_6",
  specFile: "osp29.tile",
  choice: {
    target: "cuda",
    arch: "sm_90",
    template: "sm80",
    blockQ: 128,
    config: { warps: 4, stages: 3, kvTile: 64 },
  },
  ms: 12,
  defaultMs: 13,
  timed: 5,
  considered: 63,
  tunedAt: "2026-11-23T00:00:00.000Z",
  ...over,
});
const fresh = () => new TuneCache(join(mkdtempSync(join(tmpdir(), "tilec-tune-")), "sub", "tune.json"));

describe("tuning cache", () => {
  it("keys on every part of the identity and on the spec hash", () => {
    const k = tuneCacheKey(id, "abc");
    for (const change of [
      { device: "NVIDIA H200" },
      { driver: "13010" },
      { compiler: "nvrtc 12.8" },
      { target: "wgsl" as const },
    ])
      expect(tuneCacheKey({ ...id, ...change }, "abc")).not.toBe(k);
    expect(tuneCacheKey(id, "abd")).not.toBe(k);
    expect(tuneCacheKey({ ...id }, "abc")).toBe(k);
  });

  it("stores, looks up by identity and finds by hash for builds", () => {
    const c = fresh();
    expect(c.lookup(id, "abc")).toBeUndefined();
    c.store(entry(), entry({ specHash: "xyz", kernel: "full" }));
    c.store(entry({ device: "NVIDIA H200", tunedAt: "2026-11-24T00:00:00.000Z", ms: 9 }));
    expect(c.lookup(id, "abc")?.ms).toBe(12);
    expect(c.lookup({ ...id, compiler: "nvrtc 12.8" }, "abc")).toBeUndefined();
    expect(c.find("abc", "cuda").map((e) => e.device)).toEqual(["NVIDIA H200", "NVIDIA H100 80GB HBM3"]);
    expect(c.find("abc", "cuda", "h100").map((e) => e.ms)).toEqual([12]);
    expect(c.find("abc", "wgsl")).toEqual([]);
    // a second process's cache object sees the first's entries, and replacing one keeps the rest
    const again = new TuneCache(c.path);
    again.store(entry({ ms: 11 }));
    expect(new TuneCache(c.path).entries().length).toBe(3);
    expect(new TuneCache(c.path).lookup(id, "abc")?.ms).toBe(11);
  });

  it("reads a damaged or older-format file as empty", () => {
    const c = fresh();
    c.store(entry());
    writeFileSync(c.path, "{ not json");
    expect(c.entries()).toEqual([]);
    writeFileSync(c.path, JSON.stringify({ format: 0, entries: { x: entry() } }));
    expect(c.entries()).toEqual([]);
    c.store(entry()); // and writing over it works
    expect(c.entries().length).toBe(1);
  });

  it("lives under TILEC_CACHE_DIR, else XDG_CACHE_HOME/tilec, else ~/.cache/tilec", () => {
    expect(defaultTuneCachePath({ TILEC_CACHE_DIR: "/x" })).toBe("/x/tune.json");
    expect(defaultTuneCachePath({ XDG_CACHE_HOME: "/y" })).toBe("/y/tilec/tune.json");
    expect(defaultTuneCachePath({})).toMatch(/\.cache\/tilec\/tune\.json$/);
  });
});
