"""Shared plumbing for the fake KMS servers (tests only).

HTTPS on 127.0.0.1 with the stdlib ssl module, ThreadingHTTPServer, HTTP/1.1 keep-alive, and with
--h2 HTTP/2 (python3-h2) for clients whose ALPN offers h2 (HTTP/1.1 for the others);
a plain-HTTP control server on 127.0.0.1 (counters, request log, fault injection, vendor ops);
port files written atomically once every listener is up.

Run with /usr/bin/python3 (Debian packages).
"""

import collections
import http.client
import itertools
import json
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOOPBACK = "127.0.0.1"


def write_atomic(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Stats:
    """Thread-safe counters and a bounded request log."""

    def __init__(self, log_size=2000, record_path=None):
        self.lock = threading.Lock()
        self.log_size = log_size
        self.record_path = record_path
        self.reset()

    def reset(self):
        with getattr(self, "lock", threading.Lock()):
            self.counters = collections.Counter()
            self.by_action = collections.Counter()
            self.by_status = collections.Counter()
            self.log = collections.deque(maxlen=self.log_size)
            self.seq = itertools.count(1)
            # requests being handled right now, and the most at once since the last reset
            self.in_flight = getattr(self, "in_flight", 0)
            self.in_flight_max = self.in_flight

    def enter(self):
        with self.lock:
            self.in_flight += 1
            self.in_flight_max = max(self.in_flight_max, self.in_flight)

    def leave(self):
        with self.lock:
            self.in_flight -= 1

    def inc(self, name, n=1):
        with self.lock:
            self.counters[name] += n

    def record(self, entry):
        with self.lock:
            entry["seq"] = next(self.seq)
            self.by_action[entry.get("action") or "-"] += 1
            self.by_status[str(entry.get("status"))] += 1
            self.counters["requests"] += 1
            self.log.append(entry)
            if self.record_path:
                with open(self.record_path, "a") as f:
                    f.write(json.dumps(entry, default=str) + "\n")

    def snapshot(self):
        with self.lock:
            d = dict(self.counters)
            for k in ("tcp_connections", "tls_handshakes", "tls_handshake_failures",
                      "tls_resumed", "requests", "dropped_connections", "h2_connections"):
                d.setdefault(k, 0)
            d["in_flight_max"] = self.in_flight_max
            d["requests_by_action"] = dict(self.by_action)
            d["responses_by_status"] = dict(self.by_status)
            return d

    def requests(self, since=0):
        with self.lock:
            return [e for e in self.log if e["seq"] > since]


class Faults:
    """One-shot and persistent fault injection, optionally limited to one action/path.

    throttle N  -> the vendor's throttling reply for the next N requests
    error5xx N  -> the vendor's internal-error reply (status configurable) for the next N
    malformed N -> HTTP 200 with a broken body for the next N (mode: truncated|garbage|empty|html)
    drop N      -> close the TCP connection without replying, for the next N
    close N     -> reply normally with "Connection: close", then close the connection, for the next N
    latency_ms  -> sleep before every reply
    rate_limit_rps R (burst B) -> token bucket: requests over the rate get the throttling reply
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.counts = {"throttle": 0, "error5xx": 0, "malformed": 0, "drop": 0, "close": 0}
            self.match = {k: None for k in self.counts}
            self.status5xx = 500
            self.malformed_mode = "truncated"
            self.latency_ms = 0
            self.latency_match = None
            self.rate_rps = 0.0      # token bucket: more than rate_rps requests/s (burst rate_burst) throttled
            self.rate_burst = 0.0
            self.rate_tokens = 0.0
            self.rate_last = time.monotonic()
            self.rate_match = None

    def configure(self, d):
        with self.lock:
            for k in self.counts:
                if k in d:
                    self.counts[k] = int(d[k])
                    self.match[k] = d.get("action") or d.get("match")
            if "status" in d:
                self.status5xx = int(d["status"])
            if "mode" in d:
                self.malformed_mode = d["mode"]
            if "rate_limit_rps" in d:
                self.rate_rps = float(d["rate_limit_rps"])
                self.rate_burst = float(d.get("burst", max(1.0, self.rate_rps)))
                self.rate_tokens = self.rate_burst
                self.rate_last = time.monotonic()
                self.rate_match = d.get("action") or d.get("match")
            if "latency_ms" in d:
                self.latency_ms = int(d["latency_ms"])
                self.latency_match = d.get("action") or d.get("match")
            return self.describe()

    def describe(self):
        return {"counts": dict(self.counts), "match": dict(self.match), "status": self.status5xx,
                "mode": self.malformed_mode, "latency_ms": self.latency_ms, "rate_limit_rps": self.rate_rps,
                "burst": self.rate_burst}

    def take(self, action):
        """Return the fault to apply to this request (or None); consume one shot."""
        with self.lock:
            for k in ("drop", "throttle", "error5xx", "malformed", "close"):
                m = self.match[k]
                if self.counts[k] > 0 and (m is None or m == action):
                    self.counts[k] -= 1
                    return k
            if self.rate_rps > 0 and (self.rate_match is None or self.rate_match == action):
                now = time.monotonic()
                self.rate_tokens = min(self.rate_burst, self.rate_tokens + (now - self.rate_last) * self.rate_rps)
                self.rate_last = now
                if self.rate_tokens < 1.0:
                    return "throttle"
                self.rate_tokens -= 1.0
            return None

    def latency(self, action):
        with self.lock:
            if self.latency_ms and (self.latency_match is None or self.latency_match == action):
                return self.latency_ms / 1000.0
            return 0


class Quota:
    """A request quota like a cloud KMS's (bench/storm.sh): a token bucket of @rate requests per
    second holding at most @burst, full at start.  Unlike Faults' rate_limit_rps it is set on the
    command line (--quota-rate/--quota-burst), survives /faults/reset, and counts every request it
    sees: accepted, throttled, total, and the first and last time of each.  @stats_path (optional)
    gets one JSON line per request, {"t": unix time, "action": ..., "outcome": "accepted" |
    "throttled"}, appended and flushed as it happens (the fake exits without a flush)."""

    def __init__(self, rate, burst=None, stats_path=None):
        self.lock = threading.Lock()
        self.rate = float(rate)
        self.burst = float(burst) if burst else max(1.0, self.rate)
        self.tokens = self.burst
        self.last = time.monotonic()
        self.counts = collections.Counter()
        self.first = self.last_t = None
        self.stats_file = open(stats_path, "a", buffering=1) if stats_path else None

    def admit(self, action):
        """True: within the quota (one token taken); False: the caller sends the throttling reply."""
        with self.lock:
            now, t = time.monotonic(), time.time()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            ok = self.tokens >= 1.0
            if ok:
                self.tokens -= 1.0
            outcome = "accepted" if ok else "throttled"
            self.counts[outcome] += 1
            self.counts["total"] += 1
            self.first = self.first or t
            self.last_t = t
            if self.stats_file:
                self.stats_file.write(json.dumps({"t": round(t, 6), "action": action, "outcome": outcome}) + "\n")
            return ok

    def snapshot(self):
        with self.lock:
            return {"rate": self.rate, "burst": self.burst, "accepted": self.counts["accepted"],
                    "throttled": self.counts["throttled"], "total": self.counts["total"],
                    "first": self.first, "last": self.last_t}


def add_quota_args(p):
    p.add_argument("--quota-rate", type=float, default=0,
                   help="request quota: at most this many requests/s (token bucket); over it, the "
                        "vendor's throttling reply (0 = no quota, the default)")
    p.add_argument("--quota-burst", type=float, default=0,
                   help="token bucket size (default: one second of --quota-rate, at least 1)")
    p.add_argument("--quota-stats", help="append one JSON line per request seen by the quota")


def make_quota(args):
    if not getattr(args, "quota_rate", 0):
        return None
    if args.quota_rate < 0 or args.quota_burst < 0:
        raise SystemExit("--quota-rate and --quota-burst must not be negative")
    return Quota(args.quota_rate, args.quota_burst, args.quota_stats)


def make_server_context(certs_dir, tls_max=None, tls_min=None, client_ca=None, h2=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if h2:
        ctx.set_alpn_protocols(["h2", "http/1.1"])
    ctx.load_cert_chain(os.path.join(certs_dir, "server.pem"), os.path.join(certs_dir, "server.key"))
    versions = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
    ctx.minimum_version = versions[tls_min] if tls_min else ssl.TLSVersion.TLSv1_2
    if tls_max:
        ctx.maximum_version = versions[tls_max]
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


class TLSServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that counts TCP accepts and does the TLS handshake per connection thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, ssl_ctx, stats, app):
        self.ssl_ctx = ssl_ctx
        self.stats = stats
        self.app = app
        self.conn_ids = itertools.count(1)
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats.inc("tcp_connections")
        return sock, addr

    def finish_request(self, request, client_address):
        conn_id = next(self.conn_ids)
        if self.ssl_ctx is None:
            request.settimeout(self.app.idle_timeout)
            self.RequestHandlerClass(request, client_address, self, conn_id=conn_id)
            return
        try:
            request.settimeout(10)
            ssock = self.ssl_ctx.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
            ssock.do_handshake()
        except (ssl.SSLError, OSError) as e:
            self.stats.inc("tls_handshake_failures")
            self.app.last_tls_error = "%s: %s" % (type(e).__name__, e)
            try:
                request.close()
            except OSError:
                pass
            return
        self.stats.inc("tls_handshakes")
        if ssock.session_reused:
            self.stats.inc("tls_resumed")
        try:
            ssock.settimeout(self.app.idle_timeout)
            if ssock.selected_alpn_protocol() == "h2":
                H2Connection(self, ssock, client_address, conn_id, self.RequestHandlerClass).serve()
                return
            self.RequestHandlerClass(ssock, client_address, self, conn_id=conn_id)
        finally:
            try:
                ssock.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        # Client resets and timeouts are normal for a test server; keep stderr quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


class BaseHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler base: reads bodies (Content-Length or chunked), writes replies with Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "fake"

    def __init__(self, *a, conn_id=0, **kw):
        self.conn_id = conn_id
        super().__init__(*a, **kw)

    def version_string(self):
        return self.server_version

    # counted in flight from a parsed request line to the reply written (Stats.in_flight_max)
    def parse_request(self):
        ok = super().parse_request()
        stats = getattr(self.server, "stats", None)
        if ok and stats is not None:
            stats.enter()
            self._in_flight = stats
        return ok

    def handle_one_request(self):
        self._in_flight = None
        try:
            super().handle_one_request()
        finally:
            if self._in_flight is not None:
                self._in_flight.leave()

    def log_message(self, fmt, *args):
        if os.environ.get("FAKE_VERBOSE"):
            sys.stderr.write("%s [%s] %s\n" % (type(self).__name__, self.log_date_time_string(), fmt % args))

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(1024).strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send_raw(self, status, body, headers=(), close=False):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")  # also sets close_connection
        self.send_header("Content-Length", str(len(body)))
        # headers and body in one write: no Nagle/delayed-ACK stall between two small segments
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()

    def drop_connection(self):
        self.server.stats.inc("dropped_connections")
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class H2Request:
    """One HTTP/2 request as a vendor handler sees it: the BaseHandler surface the fakes use
    (command, path, headers, conn_id, server, read_body, send_raw, drop_connection)."""

    request_version = "HTTP/2.0"

    def __init__(self, conn, stream_id, headers, body):
        self.conn = conn
        self.stream_id = stream_id
        self.server = conn.server
        self.conn_id = conn.conn_id
        self.client_address = conn.client_address
        self.close_connection = False
        msg = http.client.HTTPMessage()
        pseudo = {}
        for k, v in headers:
            if k.startswith(":"):
                pseudo[k] = v
            else:
                msg[k] = v
        # HTTP/2 carries the Host header as :authority (RFC 9113 8.3.1); signatures cover "host"
        if msg.get("Host") is None and ":authority" in pseudo:
            msg["Host"] = pseudo[":authority"]
        self.headers = msg
        self.command = pseudo.get(":method", "")
        self.path = pseudo.get(":path", "")
        self._body = body

    def read_body(self):
        return self._body

    def send_raw(self, status, body, headers=(), close=False):
        if isinstance(body, str):
            body = body.encode()
        self.conn.respond(self.stream_id, status, body, headers, close)

    def drop_connection(self):
        self.server.stats.inc("dropped_connections")
        self.conn.drop()


class H2Connection:
    """Server side of one HTTP/2 connection (python3-h2): one I/O thread owns the h2 state machine
    and the TLS socket (OpenSSL objects are not for concurrent reads and writes); each request runs
    in its own thread (so injected latency overlaps, as on a real server) and hands its reply back
    through a queue and a wake-up pipe."""

    def __init__(self, server, ssock, client_address, conn_id, handler_cls):
        import h2.config
        import h2.connection

        self.server = server
        self.sock = ssock
        self.client_address = client_address
        self.conn_id = conn_id
        self.handler_cls = handler_cls
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                        header_encoding="utf-8"))
        self.queue = collections.deque()
        self.wake_r, self.wake_w = os.pipe()
        self.streams = {}
        self.closing = False
        self.qlock = threading.Lock()  # the pipe is closed once the connection ends
        self.closed = False

    def _post(self, item):
        with self.qlock:
            if self.closed:
                return
            self.queue.append(item)
            os.write(self.wake_w, b"x")

    def respond(self, stream_id, status, body, headers, close):
        hdrs = [(":status", str(status))] + [(k.lower(), str(v)) for k, v in headers]
        hdrs += [("server", "fake"), ("content-length", str(len(body)))]
        self._post(("reply", stream_id, hdrs, body, close))

    def drop(self):
        self._post(("drop",))

    def _run_request(self, stream_id, headers, body):
        req = H2Request(self, stream_id, headers, body)
        stats = getattr(self.server, "stats", None)
        if stats:
            stats.enter()
        try:
            fn = getattr(self.handler_cls, "do_" + req.command, None)
            if fn is None:
                req.send_raw(501, b"", [])
            else:
                fn(req)
        except Exception:  # a bug in the fake: say so, and answer like a server would
            import traceback
            traceback.print_exc()
            req.send_raw(500, b"fake bug", [])
        finally:
            if stats:
                stats.leave()

    def _send_body(self, stream_id, body):
        # replies are small (a few KiB): within the initial 64 KiB flow-control window
        step = self.h2.max_outbound_frame_size
        for i in range(0, len(body), step):
            chunk = body[i:i + step]
            self.h2.send_data(stream_id, chunk, end_stream=i + step >= len(body))

    def _flush(self):
        out = self.h2.data_to_send()
        if out:
            self.sock.sendall(out)

    def serve(self):
        import h2.events
        import h2.exceptions

        self.server.stats.inc("h2_connections")
        try:
            self.h2.initiate_connection()
            self._flush()
            while not self.closing:
                if not self.sock.pending():
                    ready, _, _ = select.select([self.sock, self.wake_r], [], [], self.server.app.idle_timeout)
                    if not ready:
                        break  # idle
                    if self.wake_r in ready:
                        os.read(self.wake_r, 4096)
                while self.queue:
                    item = self.queue.popleft()
                    if item[0] == "drop":
                        self.closing = True
                        break
                    _, sid, hdrs, body, close = item
                    try:
                        self.h2.send_headers(sid, hdrs, end_stream=not body)
                        if body:
                            self._send_body(sid, body)
                    except h2.exceptions.StreamClosedError:
                        pass
                    if close:
                        self.h2.close_connection()
                        self.closing = True
                    self._flush()
                if self.closing:
                    break
                if not (self.sock.pending() or select.select([self.sock], [], [], 0)[0]):
                    continue
                data = self.sock.recv(65536)
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self._flush()
                    break
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        self.streams[ev.stream_id] = (ev.headers, bytearray())
                    elif isinstance(ev, h2.events.DataReceived):
                        if ev.stream_id in self.streams:
                            self.streams[ev.stream_id][1].extend(ev.data)
                        self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        st = self.streams.pop(ev.stream_id, None)
                        if st:
                            threading.Thread(target=self._run_request, args=(ev.stream_id, st[0], bytes(st[1])),
                                             daemon=True).start()
                    elif isinstance(ev, h2.events.StreamReset):
                        self.streams.pop(ev.stream_id, None)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        self.closing = True
                self._flush()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self.qlock:
                self.closed = True
                os.close(self.wake_r)
                os.close(self.wake_w)


def malformed_body(mode, good_body):
    if mode == "garbage":
        return b"\x00\xffnot json at all<<>>", "application/octet-stream"
    if mode == "empty":
        return b"", None
    if mode == "html":
        return b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"
    if mode == "wrongjson":
        return b'{"unexpected": [1, 2, 3]}', None
    # truncated
    return good_body[: max(1, len(good_body) // 2)], None


class ControlHandler(BaseHandler):
    """Plain-HTTP control API (127.0.0.1 only).

    GET  /health                 -> {"ok": true}
    GET  /counters               -> counters (tcp_connections, tls_handshakes, requests_by_action, ...)
    POST /counters/reset
    GET  /requests?since=N       -> recorded requests (method, path, action, headers, body, status, conn)
    POST /faults {...}           -> configure fault injection (see Faults)
    POST /faults/reset
    GET  /state                  -> vendor state (keys, tokens, ...)
    POST /control {"op": ...}    -> vendor-specific operation
    """

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        app = self.server.app
        path, _, query = self.path.partition("?")
        try:
            body = self.read_body()
            if app.control_secret and self.headers.get("X-Fake-Control-Secret") != app.control_secret:
                return self._json(403, {"error": "bad control secret"})
            args = json.loads(body) if body.strip() else {}
            if path == "/health":
                return self._json(200, {"ok": True})
            q = dict(p.partition("=")[::2] for p in query.split("&") if p)
            server = q.get("server") or args.pop("server", None)
            if path == "/counters":
                return self._json(200, app.counters())
            if path == "/counters/reset":
                for st in app.all_stats():
                    st.reset()
                return self._json(200, {"ok": True})
            if path == "/requests":
                since = int(q.get("since", 0))
                return self._json(200, {"requests": app.stats_for(server).requests(since)})
            if path == "/faults":
                return self._json(200, app.faults_for(server).configure(args))
            if path == "/faults/reset":
                for f in app.all_faults():
                    f.reset()
                return self._json(200, app.faults.describe())
            if path == "/state":
                return self._json(200, app.dump_state())
            if path == "/control":
                op = args.pop("op", None)
                fn = getattr(app, "op_" + str(op), None)
                if fn is None:
                    return self._json(400, {"error": "unknown op %r" % op})
                return self._json(200, fn(**args) or {"ok": True})
            return self._json(404, {"error": "no such control path"})
        except Exception as e:  # control errors go back to the test
            return self._json(400, {"error": "%s: %s" % (type(e).__name__, e)})

    def _json(self, status, obj):
        self.send_raw(status, json.dumps(obj, indent=1, default=str) + "\n",
                      [("Content-Type", "application/json")])


class FakeApp:
    """Base for a fake vendor server: owns the HTTPS server, control server, stats, faults, state file."""

    name = "fake"

    def __init__(self, args):
        self.args = args
        self.stats = Stats(record_path=args.record)
        self.faults = Faults()
        self.lock = threading.RLock()
        self.idle_timeout = args.idle_timeout
        self.control_secret = args.control_secret
        self.last_tls_error = None
        self.clock_offset = 0.0
        self.servers = []
        self.quota = make_quota(args)  # None unless --quota-rate (add_quota_args)

    # time as the server sees it (controls can skew it)
    def now(self):
        return time.time() + self.clock_offset

    # stats/faults per listener: the API listener, and optionally a second one (instance metadata)
    # with its own, named for the control API ("server": NAME) and the counters
    second = None

    def second_listener(self, name, record_path=None):
        self.second = name
        self.second_stats = Stats(record_path=record_path)
        self.second_faults = Faults()
        return self.second_stats, self.second_faults

    def counters(self):
        d = self.stats.snapshot()
        if self.second:
            d[self.second] = self.second_stats.snapshot()
        if self.quota:
            d["quota"] = self.quota.snapshot()
        return d

    def all_stats(self):
        return [self.stats] + ([self.second_stats] if self.second else [])

    def all_faults(self):
        return [self.faults] + ([self.second_faults] if self.second else [])

    def stats_for(self, server):
        return self.second_stats if self.second and server == self.second else self.stats

    def faults_for(self, server):
        return self.second_faults if self.second and server == self.second else self.faults

    def op_clock(self, offset_s=0):
        self.clock_offset = float(offset_s)
        return {"offset_s": self.clock_offset}

    def op_tls_error(self):
        return {"last_tls_error": self.last_tls_error}

    def save_state(self):
        if self.args.state:
            write_atomic(self.args.state, json.dumps(self.dump_state(secret=True), indent=1, sort_keys=True))

    def load_state_file(self):
        if self.args.state and os.path.exists(self.args.state) and os.path.getsize(self.args.state) > 0:
            with open(self.args.state) as f:
                return json.load(f)
        return None

    def start_server(self, handler, port=0, tls=True, stats=None):
        ctx = None
        if tls:
            ctx = make_server_context(self.args.certs, self.args.tls_max, self.args.tls_min,
                                      self.args.client_ca, getattr(self.args, "h2", False))
        srv = TLSServer((LOOPBACK, port), handler, ctx, stats or self.stats, self)
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        t.start()
        self.servers.append(srv)
        return srv

    def start_control(self):
        srv = ThreadingHTTPServer((LOOPBACK, self.args.control_port), ControlHandler)
        srv.daemon_threads = True
        srv.app = self
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        self.servers.append(srv)
        return srv

    def run(self, ports):
        """ports: dict name -> port, written to port files; blocks until SIGTERM/SIGINT."""
        info = dict(ports, pid=os.getpid())
        if self.args.info:
            write_atomic(self.args.info, json.dumps(info, indent=1) + "\n")
        if self.args.control_portfile:
            write_atomic(self.args.control_portfile, "%d\n" % ports["control"])
        if self.args.portfile:
            write_atomic(self.args.portfile, "%d\n" % ports["port"])
        sys.stdout.write("READY %s\n" % json.dumps(info))
        sys.stdout.flush()
        # The handler only sets a flag: a handler that calls threading.Event.set() can deadlock
        # when the signal lands while this thread holds the Event's own (non-reentrant) lock
        # inside Event.wait(), and then the fake never exits (seen once in CI as a test timeout).
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        signal.signal(signal.SIGINT, lambda *a: stop.append(1))
        while not stop:
            time.sleep(0.1)
        # State is saved on every change and the request log is written per request: nothing to flush.
        # Exit at once instead of waiting for keep-alive connections and serve_forever polls.
        sys.stdout.flush()
        os._exit(0)


def add_common_args(p):
    p.add_argument("--port", type=int, default=0, help="HTTPS port (0 = ephemeral)")
    p.add_argument("--portfile", help="write the HTTPS port here once listening")
    p.add_argument("--control-port", type=int, default=0)
    p.add_argument("--control-portfile", help="write the plain-HTTP control port here")
    p.add_argument("--info", help="write a JSON file with every port and the pid")
    p.add_argument("--certs", required=True, help="directory made by mkcerts.sh")
    p.add_argument("--state", help="JSON state file (loaded at start if present, saved on change)")
    p.add_argument("--record", help="append every request (JSON, one per line) to this file")
    p.add_argument("--control-secret", help="require header X-Fake-Control-Secret on the control port")
    p.add_argument("--idle-timeout", type=float, default=30.0, help="keep-alive idle timeout (s)")
    p.add_argument("--tls-max", choices=["1.2", "1.3"])
    p.add_argument("--tls-min", choices=["1.2", "1.3"])
    p.add_argument("--client-ca", help="require client certificates signed by this CA (mTLS)")
    p.add_argument("--h2", action="store_true",
                   help="offer HTTP/2 by ALPN (h2, then http/1.1): clients that offer h2 get it, "
                        "the others HTTP/1.1")
