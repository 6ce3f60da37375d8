# A minimal WSGI app for gunicorn: the worker's pid and the master's
# socket-activation variables (gunicorn reads and then unsets them).
import json
import os

ACTIVATION = {k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}


def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "master": os.getppid(), "runtime": "gunicorn"}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Connection", "close")])
    return [body]
