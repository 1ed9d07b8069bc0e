"""The smallest WSGI application, for gunicorn in test_notify_ready.py."""


def app(environ, start_response):
    body = b"hello from gunicorn\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
