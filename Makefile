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
	@# Licenses and duplicate crates (deny.toml); advisories need GitHub, so not here.
	@if cargo deny --version >/dev/null 2>&1; then \
		cargo deny --offline check --hide-inclusion-graph licenses bans; \
	else \
		echo "cargo-deny not installed: skipping license and duplicate checks (cargo install cargo-deny --locked)"; \
	fi
