#!/usr/bin/env node
// Runs the TypeScript CLI through tsx's loader, so the package needs no build step.
import { register } from "tsx/esm/api";
register();
const { mainAsync } = await import("../cli/main.ts");
process.exitCode = await mainAsync(process.argv.slice(2));
