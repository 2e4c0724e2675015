// `tilec launch --gpus N script.ts [args...]`: the command-line face of launcher.ts. Prints the
// ranks' reported values as JSON (when any rank reported one) and sets the exit code: 0 when every
// rank succeeded, 1 when one failed (after stopping the others), 2 for usage errors.
import { LaunchError, launch } from "./launcher.ts";

export interface LaunchCommandOptions {
  gpus: string;
  devices?: string;
  deviceMode: "visible" | "ordinal";
  timeout?: string;
}

function positiveInt(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1)
    throw new LaunchError(`${what} must be a positive integer, got '${text}'`);
  return n;
}

export async function launchCommand(
  script: string,
  args: string[],
  o: LaunchCommandOptions,
): Promise<number> {
  let size: number;
  let timeoutMs: number | undefined;
  try {
    size = positiveInt(o.gpus, "--gpus");
    timeoutMs = o.timeout === undefined ? undefined : positiveInt(o.timeout, "--timeout") * 1000;
  } catch (e) {
    process.stderr.write(`tilec: ${(e as Error).message}\n`);
    return 2;
  }
  const devices = o.devices?.split(",").map((d) => d.trim());
  try {
    const results = await launch({ script, args, size, devices, deviceMode: o.deviceMode, timeoutMs });
    if (results.some((r) => r !== undefined)) process.stdout.write(JSON.stringify(results, null, 2) + "\n");
    process.stderr.write(`tilec: all ${size} rank(s) finished\n`);
    return 0;
  } catch (e) {
    if (!(e instanceof LaunchError)) throw e;
    process.stderr.write(`tilec launch: ${e.message}\n`);
    return 1;
  }
}
