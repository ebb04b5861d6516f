# floe — the two commands of the quick start are `make demo` and `make test`.
# Both install what is missing (scripts/stack.sh install), so they work on a fresh machine.

CARGO ?= cargo
FLOE := target/release/floe

.PHONY: demo test up down status reset install build lint bench clean-cache

## Install what is missing, start the local stack, generate a workload, run floe until it has
## caught up, then print its stats and a few rows of ACTIVE_TRANSACTIONS.
demo:
	bash scripts/demo.sh

## Install what is missing, start a fresh local stack, and run every test.
test:
	bash scripts/test.sh

install:
	bash scripts/stack.sh install

build:
	$(CARGO) build --release --locked

up: install
	bash scripts/stack.sh up

down:
	bash scripts/stack.sh down

status:
	bash scripts/stack.sh status

## Stop the stack and delete its data (downloads stay cached).
reset:
	bash scripts/stack.sh reset

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

## Benchmarks: print decode and end-to-end throughput figures.
bench:
	bash scripts/bench.sh
