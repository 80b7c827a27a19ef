# The README's two commands: `make run` (ternd, embedded) and `make test`.
.PHONY: run test lint

run:
	cargo run --release --bin ternd

# Installs and starts whatever the tests need, then runs every test.
test:
	bash infra/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
