import "@testing-library/jest-dom/vitest";
import { cleanup, configure } from "@testing-library/react";
import { afterEach } from "vitest";
import { TIME_SCALE } from "./timeScale";

// Testing Library's 1 s wait for an element holds only on a quiet machine; every wait scales with
// the one setting the browser tests use too (STALWART_TEST_TIME_SCALE).
configure({ asyncUtilTimeout: 5000 * TIME_SCALE });

afterEach(() => cleanup());
