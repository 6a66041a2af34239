// Strict JSON (docs/format.md 5.3): duplicate keys, lone surrogates and nesting
// beyond `maxDepth` containers are format errors; integers are BigInt so that 2^63 - 1 is
// exact, and a number with a fraction or exponent is a JsonFloat, never an integer.

import { formatError } from "./util.js";

export class JsonFloat {
  constructor(text) {
    this.text = text;
  }
}

export function parseStrict(text, maxDepth = 16) {
  let i = 0;
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i++;
  };
  const fail = (m) => {
    throw formatError(`invalid JSON: ${m} at ${i}`);
  };
  function value(depth) {
    ws();
    const c = text[i];
    if ((c === "{" || c === "[") && depth > maxDepth) fail("nested too deeply");
    if (c === "{") {
      i++;
      const obj = Object.create(null);
      ws();
      if (text[i] === "}") {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("expected a key");
        const k = string();
        if (k in obj) fail(`duplicate key ${JSON.stringify(k)}`);
        ws();
        if (text[i++] !== ":") fail("expected ':'");
        obj[k] = value(depth + 1);
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i++] !== "}") fail("expected '}'");
        return obj;
      }
    }
    if (c === "[") {
      i++;
      const arr = [];
      ws();
      if (text[i] === "]") {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i++] !== "]") fail("expected ']'");
        return arr;
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [["true", true], ["false", false], ["null", null]]) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return v;
      }
    }
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400));
    if (!m || !m[0]) fail("unexpected character");
    i += m[0].length;
    return m[2] || m[3] ? new JsonFloat(m[0]) : BigInt(m[0]);
  }
  function string() {
    i++; // opening quote
    let out = "";
    for (;;) {
      const j = i;
      while (i < text.length && text[i] !== '"' && text[i] !== "\\" && text.charCodeAt(i) >= 0x20) i++;
      out += text.slice(j, i);
      if (i >= text.length) fail("unterminated string");
      const c = text[i++];
      if (c === '"') break;
      if (c !== "\\") fail("control character in string");
      const e = text[i++];
      const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" }[e];
      if (simple !== undefined) {
        out += simple;
        continue;
      }
      if (e !== "u" || !/^[0-9a-fA-F]{4}$/.test(text.slice(i, i + 4))) fail("bad escape");
      out += String.fromCharCode(parseInt(text.slice(i, i + 4), 16));
      i += 4;
    }
    // 5.3: well-formed UTF-8 only; an escaped lone surrogate is not a scalar value.
    if (!out.isWellFormed()) fail("lone surrogate in a string");
    return out;
  }
  const v = value(1);
  ws();
  if (i !== text.length) fail("trailing data");
  return v;
}

export function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof JsonFloat);
}

// An integer in [low, high] (BigInt bounds) -> BigInt; anything else is a format error.
export function int(v, low, high, what) {
  if (typeof v !== "bigint" || v < low || v > high) throw formatError(`${what} is not an integer in range`);
  return v;
}
