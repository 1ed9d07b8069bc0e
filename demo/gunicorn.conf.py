# gunicorn settings for the demo (units/web.yaml passes --config gunicorn.conf.py).
# A config file rather than flags because the same units run two gunicorns: PyPI's (≥ 25
# from a checkout) and Debian bookworm's 20.1 (in the image). 20.1 rejects the unknown flag
# --no-control-socket, but ignores unknown names in a config file.

workers = 1                    # one process per activator instance: `instances` scales
control_socket_disable = True  # gunicorn ≥ 25.1 would create a control socket under $HOME
graceful_timeout = 5           # within the unit's timeout_stop_sec
accesslog = "-"                # each request on stdout: activator prefixes it "web.N |"
