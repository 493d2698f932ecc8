/** The master writes a diverging loss as bare NaN / Infinity JSON tokens (Python reads them back);
 * the browser's JSON.parse refuses those, so every metric answer is read through here. */
const SENTINEL = "\u0000";
const TOKENS = ["-Infinity", "Infinity", "NaN"] as const;

/** JSON.parse that also accepts the bare NaN, Infinity and -Infinity the master writes for a
 * diverging loss; tokens inside strings are left alone. */
export function parseLooseJson(text: string): unknown {
  if (!text.includes("NaN") && !text.includes("Infinity")) return JSON.parse(text);
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (inString) {
      out += char;
      if (char === "\\") {
        out += text[i + 1] ?? "";
        i += 1;
      } else if (char === '"') {
        inString = false;
      }
      continue;
    }
    if (char === '"') {
      inString = true;
      out += char;
      continue;
    }
    const token = TOKENS.find((t) => text.startsWith(t, i));
    if (token) {
      out += `"\\u0000${token}"`;
      i += token.length - 1;
      continue;
    }
    out += char;
  }
  return JSON.parse(out, (_key, value: unknown) =>
    typeof value === "string" && value.startsWith(SENTINEL) ? Number(value.slice(1)) : value,
  );
}
