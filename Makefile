# The two commands of README.md.
.PHONY: demo test bench

# The demo stack (units/, demo/): `curl 127.0.0.1:8000`; in another shell
# `ACTIVATOR_RUNTIME_DIR=/tmp/activator-demo .venv/bin/activator status`; Ctrl-C stops it.
# The units find gunicorn on PATH and put redis's socket in the runtime directory.
demo:
	scripts/setup demo
	PATH="$(CURDIR)/.venv/bin:$$PATH" ACTIVATOR_RUNTIME_DIR=/tmp/activator-demo .venv/bin/activator --units units

test:
	scripts/setup test
	.venv/bin/python -m pytest -m "" tests

bench:
	scripts/setup test
	.venv/bin/python bench/run.py
