/** The suite's one timing knob: a slow machine sets STALWART_TEST_TIME_SCALE=3. */
export const TIME_SCALE = Number(process.env.STALWART_TEST_TIME_SCALE ?? "1") || 1;
