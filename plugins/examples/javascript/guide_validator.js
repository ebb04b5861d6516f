// The guide's validation rules as a floe plugin, in JavaScript (componentize-js).
//
// transaction_id present and unique in the batch, user_id a positive integer, amount a valid
// number when present, status present and one of the allowed values. Its twin is floe's Rust
// validator with the same rules as config (config/local.toml): both must reach the same
// decisions with the same reasons, and floe's tests check that they do.
//
// Build: scripts/build-plugins.sh (or: npx jco componentize guide_validator.js
//   --wit ../../../wit/floe-plugin@0.3.0 --world-name plugin -o guide_validator.wasm)
//
// WIT values arrive as { tag, val } objects; 64-bit integers are BigInts. Keys and row images
// are arrays of values in the order of table.key and table.columns (undefined where an image
// lacks a column).

import { log } from "floe:plugin/log@0.3.0";

const ALLOWED_STATUSES = ["pending", "completed", "failed", "refunded", "cancelled"];

const absent = (v) => v === undefined || v === null || v.tag === "null";

const unchanged = (v) => v.tag === "unchanged";

function number(v) {
  switch (v.tag) {
    case "integer":
    case "float":
      return Number(v.val);
    case "decimal":
    case "text": {
      const s = v.val.trim();
      // Accept what Rust's f64 parser accepts for plain numbers; reject the rest.
      if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s) && !/^[+-]?(inf|infinity)$/i.test(s)) {
        return undefined;
      }
      return /inf/i.test(s) ? (s.startsWith("-") ? -Infinity : Infinity) : Number(s);
    }
    default:
      return undefined;
  }
}

function isIntegerText(s) {
  let digits = s.startsWith("+") || s.startsWith("-") ? s.slice(1) : s;
  const dot = digits.indexOf(".");
  if (dot >= 0) {
    const frac = digits.slice(dot + 1);
    digits = /^0*$/.test(frac) ? digits.slice(0, dot) : "";
  }
  return digits !== "" && /^[0-9]+$/.test(digits);
}

function text(v) {
  switch (v.tag) {
    case "null":
    case "unchanged":
      return "";
    case "boolean":
      return v.val ? "true" : "false";
    default:
      return String(v.val);
  }
}

export const transform = {
  init(_config) {
    log("info", "guide validator (JavaScript) ready");
    // The columns the rules read: floe sends only these (and `before`, for deletes).
    return { columns: ["transaction_id", "user_id", "amount", "status"], before: true };
  },

  process(table, changes) {
    // Where each column is in this call's row images, once per call (-1: no image has it).
    const [tidAt, userAt, amountAt, statusAt] = ["transaction_id", "user_id", "amount", "status"]
      .map((c) => table.columns.indexOf(c));
    const tidKeyAt = table.key.indexOf("transaction_id");
    const at = (row, i) => (i < 0 ? undefined : row[i]);
    const seen = new Set();
    return changes.map((change) => {
      if (change.op === "delete" || change.after === undefined || change.after === null) {
        // A deleted row frees its id for a later insert in the batch.
        const before = change.before;
        const v = before === undefined || before === null
          ? at(change.key, tidKeyAt)
          : at(before, tidAt);
        if (!absent(v) && !unchanged(v)) seen.delete(text(v));
        return { tag: "keep", val: [] };
      }
      const failures = [];
      const after = change.after;

      const tid = at(after, tidAt);
      if (absent(tid)) {
        failures.push("transaction_id: is required");
      } else if (!unchanged(tid) && (change.op === "create" || change.op === "read")) {
        if (seen.has(text(tid))) failures.push(`transaction_id: duplicate value ${text(tid)} in the batch`);
        seen.add(text(tid));
      }

      const user = at(after, userAt);
      if (absent(user)) {
        failures.push("user_id: is required");
      } else if (!unchanged(user)) {
        const integer = user.tag === "integer" ||
          ((user.tag === "decimal" || user.tag === "text") && isIntegerText(user.val));
        if (!integer) failures.push("user_id: must be an integer");
        const n = number(user);
        if (n === undefined || !(n > 0)) failures.push("user_id: must be positive");
      }

      const amount = at(after, amountAt);
      if (!absent(amount) && !unchanged(amount)) {
        const n = number(amount);
        if (n === undefined || !Number.isFinite(n)) failures.push("amount: must be a number");
      }

      const status = at(after, statusAt);
      if (absent(status)) {
        failures.push("status: is required");
      } else if (!unchanged(status) && !ALLOWED_STATUSES.includes(text(status))) {
        failures.push(`status: must be one of ${ALLOWED_STATUSES.join(", ")}`);
      }

      return failures.length ? { tag: "reject", val: failures.join("; ") } : { tag: "keep", val: [] };
    });
  },
};
