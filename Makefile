# The two commands of README.md.
.PHONY: demo test bench

demo:
	scripts/setup demo
	.venv/bin/activator --units units

test:
	scripts/setup test
	.venv/bin/python -m pytest -m "" tests

bench:
	scripts/setup test
	.venv/bin/python bench/run.py
