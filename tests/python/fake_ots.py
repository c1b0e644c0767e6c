#!/usr/bin/env python3
"""A stand-in for OpenTAK Server's Flask process (127.0.0.1:8081), configured
the way OTS configures itself where it matters to a proxy in front of it:

* ``gevent`` monkey-patching first, then ``SocketIO(async_mode="gevent")`` with
  NO ``cors_allowed_origins`` (so engine.io only accepts
  ``Origin == <scheme>://<Host>`` or the X-Forwarded-Proto/-Host variant) and
  ``ping_timeout=1`` as OTS's ``init_app`` call sets it;
* namespace ``/socket.io`` on the default path ``/socket.io``;
* ``app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_host=1)`` applied AFTER
  ``socketio.init_app`` so it wraps the Socket.IO middleware too;
* gevent's pywsgi server without gevent-websocket (OTS does not install it):
  WebSockets come from simple-websocket, exactly as in OTS.

Differences from OTS, on purpose: no RabbitMQ message queue, no auth, no DB.

Endpoints:
  GET  /api/health              {"status": "healthy"}
  *    /api/echo[/...]          JSON description of the request as received
  GET  /api/cookies             200 with two Set-Cookie headers
  GET  /api/status/<code>       empty response with that status
  GET  /api/bytes/<n>           n bytes of payload
  *    /<anything else>         same as /api/echo (covers /Marti, /files, /oauth)
  GET  /__fake_ots/requests     the (method, raw path) of every request so far
Socket.IO, namespace /socket.io:
  connect -> emits "welcome" {sid, host, scheme, remote_addr}
  "echo"  -> emits "echo" with the same data, and acks with it

The server binds 127.0.0.1:0 itself and writes "PORT\\n" atomically to
--port-file once it is listening. SIGTERM/SIGINT stop it.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from flask import Flask, Response, jsonify, request  # noqa: E402
from flask_socketio import SocketIO, emit  # noqa: E402
from gevent import pywsgi  # noqa: E402
from werkzeug.middleware.proxy_fix import ProxyFix  # noqa: E402

NAMESPACE = "/socket.io"


class RecordingHandler(pywsgi.WSGIHandler):
    """gevent's default handler, plus two read-only environ keys: the header
    lines exactly as received (name case, order and duplicates kept) and the
    raw request target. Nothing the application sees changes."""

    def get_environ(self):
        env = super().get_environ()
        env["fake_ots.raw_headers"] = [[k, v] for k, v in self.headers.items()]
        env["fake_ots.raw_target"] = self.path
        return env


def create_app(ping_timeout=1, ping_interval=None):
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "fake-ots"
    seen = []

    socketio = SocketIO(async_mode="gevent")
    kwargs = {"ping_timeout": ping_timeout}
    if ping_interval is not None:
        kwargs["ping_interval"] = ping_interval
    socketio.init_app(app, logger=False, engineio_logger=False, **kwargs)

    @app.before_request
    def _record():
        seen.append([request.method, request.environ.get("fake_ots.raw_target", request.full_path)])

    def describe():
        env = request.environ
        orig = env.get("werkzeug.proxy_fix.orig", {})
        body = request.get_data(cache=False)
        return jsonify(
            method=request.method,
            path=request.path,
            raw_target=env.get("fake_ots.raw_target"),
            query=env.get("QUERY_STRING", ""),
            headers=env.get("fake_ots.raw_headers", []),
            body_length=len(body),
            # after ProxyFix(x_for=1, x_host=1, x_proto=1):
            remote_addr=request.remote_addr,
            host=request.host,
            scheme=request.scheme,
            # before ProxyFix (what the TCP peer / Host header really were):
            peer_addr=orig.get("REMOTE_ADDR", env.get("REMOTE_ADDR")),
            raw_host=orig.get("HTTP_HOST", env.get("HTTP_HOST")),
            http_version=env.get("SERVER_PROTOCOL"),
        )

    @app.route("/api/health")
    def health():
        return jsonify(status="healthy")

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    @app.route("/api/echo", methods=methods)
    @app.route("/api/echo/<path:_rest>", methods=methods)
    def echo(_rest=None):
        return describe()

    @app.route("/api/cookies")
    def cookies():
        resp = Response("cookies\n", mimetype="text/plain")
        resp.headers.add("Set-Cookie", "session=s3ss10n; HttpOnly; Path=/; SameSite=Strict")
        resp.headers.add("Set-Cookie", "XSRF-TOKEN=x5rf; Path=/; SameSite=Strict")
        return resp

    @app.route("/api/status/<int:code>", methods=methods)
    def status(code):
        return Response(b"", status=code)

    @app.route("/api/bytes/<int:n>")
    def nbytes(n):
        return Response(b"x" * n, mimetype="application/octet-stream")

    @app.route("/__fake_ots/requests")
    def requests_seen():
        return jsonify(requests=seen)

    @app.route("/", defaults={"_rest": ""}, methods=methods)
    @app.route("/<path:_rest>", methods=methods)
    def catch_all(_rest):
        return describe()

    @socketio.on("connect", namespace=NAMESPACE)
    def on_connect(auth=None):
        emit(
            "welcome",
            {
                "sid": request.sid,
                "host": request.host,
                "scheme": request.scheme,
                "remote_addr": request.remote_addr,
            },
        )

    @socketio.on("echo", namespace=NAMESPACE)
    def on_echo(data):
        emit("echo", data)
        return data

    # As OTS's create_app does, after socketio.init_app: wraps Socket.IO too.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_host=1)
    return app, socketio


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-file", required=True, help="written atomically once listening")
    ap.add_argument("--ping-timeout", type=float, default=1, help="OTS uses 1")
    ap.add_argument("--ping-interval", type=float, default=None, help="engine.io default (25) if unset")
    args = ap.parse_args(argv)

    app, _socketio = create_app(args.ping_timeout, args.ping_interval)

    # Bind and listen ourselves, then hand the socket to gevent (no fixed port).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]

    # What flask_socketio.SocketIO.run() builds for gevent without gevent-websocket.
    server = pywsgi.WSGIServer(sock, app, handler_class=RecordingHandler, log=None)
    server.start()

    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, args.port_file)
    print(f"fake_ots listening on 127.0.0.1:{port}", flush=True)

    def stop():
        server.stop(timeout=2)

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
