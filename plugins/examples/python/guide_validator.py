"""The guide's validation rules as a floe plugin, in Python (componentize-py).

transaction_id present and unique in the batch, user_id a positive integer, amount a valid
number when present, status present and one of the allowed values. Its twin is floe's Rust
validator with the same rules as config (config/local.toml): both must reach the same decisions
with the same reasons, and floe's tests check that they do.

Build: scripts/build-plugins.sh (or: componentize-py -d ../../../wit/floe-plugin@0.3.0 -w plugin
componentize guide_validator -o guide_validator.wasm)
"""

import math

from wit_world import exports
from wit_world.imports import types as t
from wit_world.imports.log import Level, log

ALLOWED_STATUSES = ["pending", "completed", "failed", "refunded", "cancelled"]
# The columns the rules read: floe sends only these (and `before`, for deletes).
READS = ["transaction_id", "user_id", "amount", "status"]


def position(names, name):
    """Where `name` is in a call's column list (None: no image of the call has it)."""
    return names.index(name) if name in names else None


def at(row, i):
    """Value `i` of a row image (None: the image does not have that column)."""
    return None if i is None else row[i]


def number(value):
    """The value as a float, if it is one (NaN is not)."""
    if isinstance(value, (t.Value_Integer, t.Value_Float)):
        return float(value.value)
    if isinstance(value, (t.Value_Decimal, t.Value_Text)):
        try:
            n = float(value.value.strip())
        except ValueError:
            return None
        return None if math.isnan(n) else n
    return None


def is_integer_text(s):
    digits = s[1:] if s[:1] in ("+", "-") else s
    if "." in digits:
        whole, frac = digits.split(".", 1)
        digits = whole if all(c == "0" for c in frac) else ""
    return digits != "" and all(c in "0123456789" for c in digits)


def text(value):
    if isinstance(value, (t.Value_Null, t.Value_Unchanged)):
        return ""
    if isinstance(value, t.Value_Boolean):
        return "true" if value.value else "false"
    return str(value.value)


def absent(value):
    return value is None or isinstance(value, t.Value_Null)


class Transform(exports.Transform):
    def init(self, config: str) -> t.Reads:
        log(Level.INFO, "guide validator (Python) ready")
        return t.Reads(columns=READS, before=True)

    def process(self, table: t.Table, changes):
        # Keys and row images are lists of values in the order of table.key and table.columns:
        # positions once per call.
        tid_at, user_at, amount_at, status_at = (position(table.columns, c) for c in READS)
        tid_key_at = position(table.key, "transaction_id")
        seen = set()
        decisions = []
        for change in changes:
            if change.op == t.Op.DELETE or change.after is None:
                # A deleted row frees its id for a later insert in the batch.
                if change.before is not None:
                    v = at(change.before, tid_at)
                else:
                    v = at(change.key, tid_key_at)
                if not absent(v) and not isinstance(v, t.Value_Unchanged):
                    seen.discard(text(v))
                decisions.append(t.Decision_Keep([]))
                continue
            failures = []
            after = change.after

            tid = at(after, tid_at)
            if absent(tid):
                failures.append("transaction_id: is required")
            elif not isinstance(tid, t.Value_Unchanged) and change.op in (t.Op.CREATE, t.Op.READ):
                if text(tid) in seen:
                    failures.append(f"transaction_id: duplicate value {text(tid)} in the batch")
                seen.add(text(tid))

            user = at(after, user_at)
            if absent(user):
                failures.append("user_id: is required")
            elif not isinstance(user, t.Value_Unchanged):
                integer = isinstance(user, t.Value_Integer) or (
                    isinstance(user, (t.Value_Decimal, t.Value_Text)) and is_integer_text(user.value))
                if not integer:
                    failures.append("user_id: must be an integer")
                n = number(user)
                if n is None or not n > 0:
                    failures.append("user_id: must be positive")

            amount = at(after, amount_at)
            if not absent(amount) and not isinstance(amount, t.Value_Unchanged):
                n = number(amount)
                if n is None or not math.isfinite(n):
                    failures.append("amount: must be a number")

            status = at(after, status_at)
            if absent(status):
                failures.append("status: is required")
            elif not isinstance(status, t.Value_Unchanged):
                if text(status) not in ALLOWED_STATUSES:
                    failures.append(f"status: must be one of {', '.join(ALLOWED_STATUSES)}")

            decisions.append(t.Decision_Reject("; ".join(failures)) if failures else t.Decision_Keep([]))
        return decisions
