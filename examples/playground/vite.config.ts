// The playground's own Vite config (`npm run playground` serves this folder; the e2e test builds it).
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "./",
  // The page imports examples/ and the compiler from the repository root.
  server: { host: "127.0.0.1", fs: { allow: [fileURLToPath(new URL("../..", import.meta.url))] } },
  build: { target: "es2022", outDir: "../../out/playground", emptyOutDir: true, chunkSizeWarningLimit: 2000 },
});
