// Appends a row to bench/results/gpu-tests.json from one device run of the GPU test files and
// compute-sanitizer: the commit tested, date, device, test counts per file, sanitizer verdicts.
//   npx tsx bench/gpu-tests.ts COMMIT DEVICE VITEST.json MEMCHECK.log RACECHECK.log [OUT.json]
import { existsSync, readFileSync, writeFileSync } from "node:fs";

const [commit, device, vitestFile, memcheck, racecheck, outFile = "bench/results/gpu-tests.json"] =
  process.argv.slice(2);
if (!commit || !device || !vitestFile)
  throw new Error("usage: gpu-tests.ts COMMIT DEVICE VITEST.json MEMCHECK.log RACECHECK.log [OUT]");
interface VitestJson {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  testResults: { name: string; assertionResults: { status: string }[] }[];
}
const v = JSON.parse(readFileSync(vitestFile, "utf8")) as VitestJson;
const files = v.testResults.map((f) => {
  const count = (s: string) => f.assertionResults.filter((a) => a.status === s).length;
  return {
    file: f.name.replace(/^.*?(test\/)/, "$1"),
    passed: count("passed"),
    failed: count("failed"),
    skipped: count("skipped") + count("pending") + count("todo"),
  };
});
// compute-sanitizer's summary line: "ERROR SUMMARY: N errors" (memcheck) / "RACECHECK SUMMARY: N hazards displayed".
const summary = (file?: string) => {
  if (!file || !existsSync(file)) return null;
  const text = readFileSync(file, "utf8");
  const m = /(ERROR|RACECHECK) SUMMARY: (\d+) (errors|hazards)/.exec(text);
  const cases = (text.match(/^(ok  |FAIL)/gm) ?? []).length;
  return { issues: m ? Number(m[2]) : null, cases, failedCases: (text.match(/^FAIL/gm) ?? []).length };
};
const row = {
  commit,
  date: new Date().toISOString().slice(0, 10),
  device,
  passed: v.numPassedTests,
  failed: v.numFailedTests,
  skipped: v.numPendingTests,
  files,
  memcheck: summary(memcheck),
  racecheck: summary(racecheck),
};
const old = existsSync(outFile)
  ? (JSON.parse(readFileSync(outFile, "utf8")) as { rows: unknown[] })
  : { rows: [] };
writeFileSync(outFile, JSON.stringify({ rows: [...old.rows, row] }, null, 2) + "\n");
console.log(JSON.stringify(row, null, 2));
