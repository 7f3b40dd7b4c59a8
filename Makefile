# Developer shortcuts. The two commands that matter need no make:
#   cargo run --release      (run the service)
#   bash scripts/test.sh     (install test dependencies, lint, run every test)

.PHONY: install dev run up db-up stop clean lint format check test bench

install: ## fetch and build dependencies
	cargo fetch
	cargo build

dev: ## run in development mode (SQLite, outbox mail, generated secrets)
	cargo run

run: ## run the optimised build
	cargo run --release

up: ## the whole stack in Docker: clinic-auth (built from the Dockerfile), MongoDB, mongo-express
	docker compose up -d --build

db-up: ## start MongoDB and mongo-express (Docker)
	docker compose up -d mongodb mongo-express

stop: ## stop the Docker services
	docker compose stop

clean: ## remove Docker containers and volumes, build output and local data
	-docker compose down -v
	cargo clean
	rm -rf data

lint: ## clippy with warnings as errors
	cargo clippy --all-targets -- -D warnings

format: ## format the code
	cargo fmt --all

check: ## what CI runs: format check, clippy, every test
	bash scripts/test.sh

test: ## every test (installs what the tests need first)
	bash scripts/test.sh

bench: ## benchmark suite (release build, wrk over loopback, budget check); BENCH_ARGS="--duration 2 --warmup 1" etc.
	python3 scripts/bench.py $(BENCH_ARGS)
