/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import { TIME_SCALE } from "./src/test/timeScale";

// `npm run dev` proxies the API to a master on :8080 (`make demo` starts one there).
const master = process.env.STALWART_MASTER ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 800 },
  server: { proxy: { "/api": master } },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
    css: false,
    testTimeout: 20_000 * TIME_SCALE,
  },
});
