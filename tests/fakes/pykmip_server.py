#!/usr/bin/python3
"""PyKMIP's real KMIP server (Debian python3-pykmip) for the tests, with two additions:

  --port 0       bind an ephemeral port and write it to --portfile once the socket listens
                 (PyKMIP's own config refuses port 0);
  --record FILE  append every TTLV message as a line "REQ <hex>" / "RSP <hex>" (whole messages,
                 header included; PyKMIP's debug log leaves out the request's 8-byte header), in
                 the order they happen: a running count (+1 per REQ, -1 per RSP) is the number of
                 requests in flight;
  --delay-ms N   wait N ms after receiving each request before processing it (KMIP_SERVER_DELAY_MS
                 in kmip_server.sh): concurrent requests on several connections certainly overlap.

Everything else is PyKMIP's code path: KmipServer, KmipSession, KmipEngine, TLS 1.2 with client
certificates.  Run with /usr/bin/python3.  Stop it with SIGINT (PyKMIP only polls for SIGTERM
between connections).
"""

import argparse
import binascii
import os
import sys
import threading
import time

from kmip.services.server import server as kmip_server
from kmip.services.server import session as kmip_session

LOCK = threading.Lock()


def install_recorder(path):
    recv = kmip_session.KmipSession._receive_request
    send = kmip_session.KmipSession._send_response

    def log(kind, data):
        with LOCK, open(path, "a") as f:
            f.write("%s %s\n" % (kind, binascii.hexlify(bytes(data)).decode()))

    def receive_request(self):
        data = recv(self)
        log("REQ", data.buffer)
        return data

    def send_response(self, data):
        log("RSP", data)
        return send(self, data)

    kmip_session.KmipSession._receive_request = receive_request
    kmip_session.KmipSession._send_response = send_response


def install_delay(ms):
    recv = kmip_session.KmipSession._receive_request

    def receive_request(self):
        data = recv(self)
        time.sleep(ms / 1000.0)
        return data

    kmip_session.KmipSession._receive_request = receive_request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--portfile", required=True)
    ap.add_argument("--record")
    ap.add_argument("--delay-ms", type=int, default=0)
    args = ap.parse_args()

    if args.record:
        install_recorder(args.record)
    if args.delay_ms > 0:
        install_delay(args.delay_ms)
    s = kmip_server.KmipServer(config_path=args.config, log_path=args.log, live_policies=False)
    # The config file names a placeholder port; the real one is set here, 0 included.
    s.config.settings["port"] = args.port
    s.config.settings["hostname"] = "127.0.0.1"
    with s:
        port = s._socket.getsockname()[1]
        s._socket.listen(5)  # serve() listens again; listening first lets us publish the port
        tmp = "%s.tmp" % args.portfile
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.portfile)
        s.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
