.PHONY: help install test test-rust test-python lint bench

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

install:  ## build the extension in place (editable)
	python3 -m pip install -e '.[test]' --no-build-isolation

test: test-rust test-python  ## all tests

test-rust:  ## core tests, no Python
	cargo test --release --no-default-features

test-python:  ## public API tests, doctests, README examples
	python3 -m pytest

lint:  ## formatting and lints (the core's are also run by .ci/run)
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	cargo clippy --release --no-default-features --all-targets -- -D warnings

bench:  ## token counting vs tokenizers and fastokens (needs ../shared)
	python3 benches/bench_tokenize.py
