"""Plugins in other languages run through the real host (`floe plugin test`) and reach the same
decisions, with the same reasons, as their Rust twin on a shared set of events
(tests/plugins/guide-events.jsonl: valid rows, every rule broken alone and together, odd types,
duplicates, deletes, snapshot reads)."""

import json
import subprocess

import pytest

from harness import FLOE_BIN, ROOT

EVENTS = ROOT / "tests" / "plugins" / "guide-events.jsonl"
GOLDEN = ROOT / "tests" / "plugins" / "guide-decisions.jsonl"
DIST = ROOT / "plugins" / "dist"


def decisions(plugin, *args: str) -> list[dict]:
    out = subprocess.run(
        [str(FLOE_BIN), "plugin", "test", "--plugin", str(plugin), "--events", str(EVENTS), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture(scope="module")
def rust():
    got = decisions(DIST / "validator.wasm", "--config", str(ROOT / "tests" / "plugins" / "guide-validator.toml"))
    return got


def test_the_rust_validator_matches_the_recorded_decisions(rust):
    golden = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    assert rust == golden
    kinds = [d["decision"] for d in rust]
    assert kinds.count("keep") == 17 and kinds.count("reject") == 23


@pytest.mark.parametrize("example", ["guide_validator_py.wasm", "guide_validator_js.wasm"])
def test_example_plugins_decide_like_their_rust_twin(rust, example):
    got = decisions(DIST / "examples" / example)
    assert len(got) == len(rust)
    for mine, theirs in zip(got, rust):
        assert mine == theirs, f"{example} differs on event {theirs['event']}"


@pytest.mark.parametrize("example", ["guide_validator_py.wasm", "guide_validator_js.wasm"])
def test_example_plugins_are_sandboxed_like_any_other(example):
    """A 1 MiB memory limit is far below what a Python or JavaScript runtime needs: the host
    refuses the plugin with a clear error instead of crashing."""
    out = subprocess.run(
        [str(FLOE_BIN), "plugin", "test", "--plugin", str(DIST / "examples" / example),
         "--events", str(EVENTS), "--memory-mb", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode != 0
    assert "memory limit" in out.stderr and example.removesuffix(".wasm") in out.stderr, out.stderr[-2000:]
