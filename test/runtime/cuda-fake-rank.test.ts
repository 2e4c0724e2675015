// A rank of `tilec launch` opens its own GPU (device 1 here, on a fake driver with two), then the
// compiler, the DiT and the tuner open "the" device without an ordinal (CudaDevice.open()): they must get the rank's,
// not device 0 (on two H200s that was "CUDA already initialized on device 1"). Needs a C compiler.
import { describe, expect, it } from "vitest";
import { CudaDevice } from "../../runtime/cuda/index.ts";
import { useFakeCuda } from "./fake-cuda.ts";

const skipReason = useFakeCuda({ deviceCount: 2 });

describe.skipIf(skipReason !== undefined)(
  `a process driving device 1 of 2 (fake driver)${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    it("open() without an ordinal returns the device the process drives; another ordinal is refused", () => {
      const rankDevice = CudaDevice.open(1);
      expect(rankDevice.ordinal).toBe(1);
      expect(CudaDevice.open()).toBe(rankDevice);
      expect(() => CudaDevice.open(0)).toThrow(/already initialized on device 1; tilec drives one device/);
      expect(() => CudaDevice.open(2)).toThrow();
    });
  },
);
