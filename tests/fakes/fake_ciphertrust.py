#!/usr/bin/python3
"""Fake Thales CipherTrust Manager (HTTPS): /api/v1/auth/tokens (password and refresh_token grants,
short-lived JWTs), /api/v1/vault/keys2 (list by name, create, get, versions) and /api/v1/crypto/
encrypt|decrypt (real AES-GCM with aad), plus a plain-HTTP control API.  Tests only; 127.0.0.1.

  /usr/bin/python3 tests/fakes/fake_ciphertrust.py --certs DIR --portfile F --control-portfile F \
      [--state F] [--user NAME:PASSWORD[:DOMAIN]] [--jwt-duration S]

See tests/fakes/README.md for the API surface and the control operations.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakecommon  # noqa: E402
from fakecommon import BaseHandler, FakeApp, malformed_body  # noqa: E402

from cryptography.exceptions import InvalidTag  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

USAGE_ENCRYPT, USAGE_DECRYPT = 4, 8
SIZES = {"aes": (128, 192, 256)}
# KMIP 1.4 section 3.22 (Cryptographic Usage Mask / State): a Deactivated key may still decrypt,
# never encrypt; Compromised, Destroyed and Pre-Active keys do neither.  Fake's choice, after KMIP:
# not confirmed against a CipherTrust appliance.
ENCRYPT_STATES = ("Active",)
DECRYPT_STATES = ("Active", "Deactivated")


class CTError(Exception):
    """CipherTrust error body: {"code": N, "codeDesc": "NCERR...: text", "message": "..."}."""

    def __init__(self, status, code, desc, message, headers=()):
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "codeDesc": desc, "message": message}
        self.headers = list(headers)


def unauthorized(msg="Token is expired or invalid"):
    return CTError(401, 2, "NCERRUnauthorized: Unauthorized", msg)


def bad_request(msg):
    return CTError(400, 4, "NCERRInvalidParamValue: Invalid parameter value", msg)


def not_found(msg="Resource not found"):
    return CTError(404, 5, "NCERRResourceNotFound: Resource not found", msg)


def forbidden(msg):
    return CTError(403, 3, "NCERRForbidden: Operation not permitted", msg)


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64field(req, name, required=True):
    v = req.get(name)
    if v is None or v == "":
        if required:
            raise bad_request("%s is required" % name)
        return None
    if not isinstance(v, str):
        raise bad_request("%s must be a base64 string" % name)
    try:
        return base64.b64decode(v, validate=True)
    except (ValueError, TypeError):
        raise bad_request("%s is not valid base64" % name)


def parse_version(v):
    """Version in a request: integer or string of digits (both seen in clients)."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise bad_request("version must be an integer")
    if isinstance(v, int) and v >= 0:
        return v
    if isinstance(v, str) and v.isdigit():
        return int(v)
    raise bad_request("version must be an integer")


class CipherTrustApp(FakeApp):
    name = "ciphertrust"

    def __init__(self, args):
        super().__init__(args)
        self.jwt_duration = args.jwt_duration
        self.secret = secrets.token_bytes(32)       # HS256 key of the JWTs
        self.users = {}                              # name -> {password, domain, disabled}
        self.refresh_tokens = {}                     # token -> {user, revoked, expire}
        self.jwts = {}                               # jwt -> {user, expire}
        self.keys = {}                               # id -> key record
        self.style = {"version": "int", "duration": "int"}
        st = self.load_state_file()
        if st:
            self.users = st.get("users", {})
            self.refresh_tokens = st.get("refresh_tokens", {})
            self.style.update(st.get("style", {}))
            for kid, k in (st.get("keys") or {}).items():
                k = dict(k)
                k["material"] = [base64.b64decode(m) for m in k["material"]]
                self.keys[kid] = k
        for spec in args.user or []:
            parts = spec.split(":")
            self.users.setdefault(parts[0], {"password": parts[1], "domain": parts[2] if len(parts) > 2 else "root",
                                             "disabled": False})
        self.save_state()

    # ------------------------------------------------------------- state
    def dump_state(self, secret=False):
        with self.lock:
            keys = {}
            for kid, k in self.keys.items():
                d = {kk: vv for kk, vv in k.items() if kk != "material"}
                d["versions"] = len(k["material"])
                if secret:
                    d["material"] = [base64.b64encode(m).decode() for m in k["material"]]
                keys[kid] = d
            out = {"keys": keys, "style": self.style, "jwt_duration": self.jwt_duration}
            if secret:
                out["users"] = self.users
                out["refresh_tokens"] = self.refresh_tokens
            else:
                out["users"] = {u: {"domain": r["domain"], "disabled": r["disabled"]} for u, r in self.users.items()}
                out["refresh_tokens"] = len(self.refresh_tokens)
                out["jwts"] = len(self.jwts)
            return out

    def key_json(self, k):
        ver = len(k["material"]) - 1
        d = {"id": k["id"], "uri": "kylo:kylo:vault:keys:%s-v%d" % (k["name"].lower(), ver),
             "account": "kylo:kylo:admin:accounts:kylo", "application": "ncryptify:gemalto:admin:apps:kylo",
             "devAccount": "ncryptify:gemalto:admin:accounts:gemalto", "createdAt": iso(k["created"]),
             "name": k["name"], "updatedAt": iso(k["updated"]), "usageMask": k["usageMask"],
             "meta": {"ownerId": k["owner"]}, "objectType": "Symmetric Key", "algorithm": "AES",
             "size": k["size"], "format": "raw", "unexportable": False, "undeletable": False,
             "state": k["state"], "version": ver if self.style["version"] == "int" else str(ver),
             "activationDate": iso(k["created"]), "links": [], "labels": {}}
        if k["state"] == "Deactivated":
            d["deactivationDate"] = iso(k["updated"])
        return d

    def find_key(self, ident, typ=None):
        with self.lock:
            if typ in (None, "", "id") and ident in self.keys:
                return self.keys[ident]
            if typ in (None, "", "name"):
                for k in self.keys.values():
                    if k["name"] == ident:
                        return k
            return None

    def new_key(self, name, algorithm="aes", size=256, usageMask=USAGE_ENCRYPT | USAGE_DECRYPT, state="Active",
                owner="local|admin"):
        algorithm = str(algorithm).lower()
        if algorithm not in SIZES:
            raise bad_request("unsupported algorithm %s for this fake" % algorithm)
        size = int(size)
        if size not in SIZES[algorithm]:
            raise bad_request("invalid key size %d for %s" % (size, algorithm))
        if self.find_key(name, "name"):
            raise CTError(409, 7, "NCERRConflict: Conflict", "Key with name %s already exists" % name)
        now = self.now()
        kid = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        k = {"id": kid, "name": name, "size": size, "usageMask": int(usageMask), "state": state,
             "created": now, "updated": now, "owner": owner, "material": [secrets.token_bytes(size // 8)]}
        self.keys[kid] = k
        return k

    def issue_jwt(self, user):
        now = self.now()
        dur = self.jwt_duration
        hdr = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64u(json.dumps({"sub": "local|" + user, "iss": "kylo", "iat": int(now), "exp": int(now + dur),
                                "jti": str(uuid.uuid4())}).encode())
        sig = b64u(hmac.new(self.secret, ("%s.%s" % (hdr, body)).encode(), hashlib.sha256).digest())
        tok = "%s.%s.%s" % (hdr, body, sig)
        self.jwts[tok] = {"user": user, "expire": now + dur}
        return tok, dur

    def user_of(self, handler):
        authz = handler.headers.get("Authorization") or ""
        if not authz.lower().startswith("bearer "):
            raise unauthorized("Authorization header is missing")
        rec = self.jwts.get(authz[7:].strip())
        if rec is None:
            raise unauthorized("Token is invalid")
        if rec["expire"] <= self.now():
            raise unauthorized("Token is expired")
        u = self.users.get(rec["user"])
        if u is None or u["disabled"]:
            raise unauthorized("User is disabled")
        return rec["user"]

    # ------------------------------------------------------------- control ops
    def op_create_user(self, username, password, domain="root"):
        with self.lock:
            self.users[username] = {"password": password, "domain": domain, "disabled": False}
            self.save_state()

    def op_issue_refresh_token(self, username, lifetime_s=0):
        with self.lock:
            if username not in self.users:
                raise ValueError("no such user")
            tok = secrets.token_urlsafe(48)
            self.refresh_tokens[tok] = {"user": username, "revoked": False,
                                        "expire": self.now() + lifetime_s if lifetime_s else None,
                                        "id": str(uuid.uuid4())}
            self.save_state()
            return {"refresh_token": tok}

    def op_revoke_refresh_token(self, refresh_token=None, username=None):
        with self.lock:
            n = 0
            for tok, r in self.refresh_tokens.items():
                if tok == refresh_token or (username and r["user"] == username):
                    r["revoked"] = True
                    n += 1
            self.save_state()
            return {"revoked": n}

    def op_disable_user(self, username):
        with self.lock:
            self.users[username]["disabled"] = True
            self.save_state()

    def op_enable_user(self, username):
        with self.lock:
            self.users[username]["disabled"] = False
            self.save_state()

    def op_expire_jwts(self):
        with self.lock:
            for r in self.jwts.values():
                r["expire"] = self.now() - 1
            return {"expired": len(self.jwts)}

    def op_jwt_duration(self, seconds):
        with self.lock:
            self.jwt_duration = int(seconds)
            return {"jwt_duration": self.jwt_duration}

    def op_reply_style(self, **kw):
        with self.lock:
            self.style.update(kw)
            self.save_state()
            return self.style

    def op_create_key(self, name, algorithm="aes", size=256, usageMask=USAGE_ENCRYPT | USAGE_DECRYPT,
                      state="Active"):
        with self.lock:
            k = self.new_key(name, algorithm, size, usageMask, state)
            self.save_state()
            return self.key_json(k)

    def _key(self, name):
        k = self.find_key(name)
        if k is None:
            raise ValueError("no such key %s" % name)
        return k

    def op_set_key_state(self, name, state):
        with self.lock:
            k = self._key(name)
            k["state"], k["updated"] = state, self.now()
            self.save_state()
            return self.key_json(k)

    def op_deactivate_key(self, name):
        return self.op_set_key_state(name, "Deactivated")

    def op_activate_key(self, name):
        return self.op_set_key_state(name, "Active")

    def op_set_usage_mask(self, name, usageMask):
        with self.lock:
            k = self._key(name)
            k["usageMask"], k["updated"] = int(usageMask), self.now()
            self.save_state()
            return self.key_json(k)

    def op_rotate_key(self, name):
        with self.lock:
            k = self._key(name)
            k["material"].append(secrets.token_bytes(k["size"] // 8))
            k["updated"] = self.now()
            self.save_state()
            return self.key_json(k)

    def op_delete_key(self, name):
        with self.lock:
            k = self._key(name)
            del self.keys[k["id"]]
            self.save_state()

    # ------------------------------------------------------------- HTTP
    @staticmethod
    def action_name(method, path):
        p = path.strip("/").split("/")
        if p[:4] == ["api", "v1", "auth", "tokens"]:
            return "auth.tokens"
        if p[:4] == ["api", "v1", "vault", "keys2"]:
            if len(p) == 4:
                return "keys.create" if method == "POST" else "keys.list"
            if len(p) >= 6 and p[5] == "versions":
                return "keys.rotate"
            return "keys.get" if method == "GET" else "keys.update"
        if p[:3] == ["api", "v1", "crypto"] and len(p) == 4:
            return "crypto." + p[3]
        return path

    def handle(self, handler):
        t0 = time.time()
        body = handler.read_body()
        method = handler.command
        path, _, query = handler.path.partition("?")
        action = self.action_name(method, path)
        entry = {"conn": handler.conn_id, "method": method, "path": handler.path, "action": action,
                 "headers": [[k, v] for k, v in handler.headers.items()], "time": t0}
        try:
            entry["body"] = json.loads(body) if body else None
        except ValueError:
            entry["body"] = body.decode("latin-1")
        status, data, extra, fault = 200, None, [], None
        try:
            delay = self.faults.latency(action)
            if delay:
                time.sleep(delay)
            fault = self.faults.take(action)
            if fault == "drop":
                entry["status"] = "dropped"
                self.stats.record(entry)
                handler.drop_connection()
                return
            if fault == "throttle":
                raise CTError(429, 19, "NCERRTooManyRequests: Too many requests", "rate limit exceeded",
                              [("Retry-After", "1")])
            if fault == "error5xx":
                raise CTError(self.faults.status5xx, 1, "NCERRInternalServerError: Internal error",
                              "internal error")
            req = {}
            if body.strip():
                ctype = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if ctype == "application/x-www-form-urlencoded":
                    req = dict(urllib.parse.parse_qsl(body.decode()))
                else:
                    try:
                        req = json.loads(body)
                    except ValueError:
                        raise bad_request("request body is not valid JSON")
                if not isinstance(req, dict):
                    raise bad_request("request body must be a JSON object")
            with self.lock:
                status, data = self.route(method, path, urllib.parse.parse_qs(query), req, handler, entry)
        except CTError as e:
            status, data, extra = e.status, e.body, e.headers
            entry["error"] = e.body
        except Exception as e:  # a bug in the fake
            import traceback
            traceback.print_exc()
            status, data = 500, {"code": 1, "codeDesc": "NCERRInternalServerError", "message": "fake bug: %s" % e}
        resp = b"" if status == 204 else json.dumps(data).encode()
        ctype = "application/json"
        if fault == "malformed" and 200 <= status < 300:
            resp, ct2 = malformed_body(self.faults.malformed_mode, resp or b"{}")
            ctype = ct2 or ctype
            status = 200
            entry["malformed"] = self.faults.malformed_mode
        entry["status"] = status
        self.stats.record(entry)
        hdrs = [] if status == 204 else [("Content-Type", ctype)]
        handler.send_raw(status, resp, hdrs + extra, close=fault == "close")

    def route(self, method, path, q, req, handler, entry):
        p = path.strip("/").split("/")
        if p[:4] == ["api", "v1", "auth", "tokens"] and len(p) == 4 and method == "POST":
            return self.auth_tokens(req)
        user = self.user_of(handler)
        entry["user"] = user
        if p[:4] == ["api", "v1", "vault", "keys2"]:
            if len(p) == 4 and method == "GET":
                return self.keys_list(q)
            if len(p) == 4 and method == "POST":
                return self.keys_create(req, user)
            k = self.find_key(urllib.parse.unquote(p[4]), (q.get("type") or [None])[0])
            if k is None:
                raise not_found("Key not found")
            if len(p) == 5 and method == "GET":
                return 200, self.key_json(k)
            if len(p) == 6 and p[5] == "versions" and method == "POST":
                return 201, self.key_json(self.op_rotate_key(k["id"]) and k)
            if len(p) == 5 and method == "PATCH":
                if "usageMask" in req:
                    k["usageMask"] = int(req["usageMask"])
                k["updated"] = self.now()
                self.save_state()
                return 200, self.key_json(k)
        if p == ["api", "v1", "crypto", "encrypt"] and method == "POST":
            return self.encrypt(req)
        if p == ["api", "v1", "crypto", "decrypt"] and method == "POST":
            return self.decrypt(req)
        raise not_found("No route for %s %s" % (method, path))

    def auth_tokens(self, req):
        grant = req.get("grant_type") or "password"
        if grant == "password":
            u = self.users.get(req.get("username") or "")
            if u is None or not hmac.compare_digest(u["password"].encode(), str(req.get("password") or "").encode()) \
                    or u["disabled"]:
                raise unauthorized("Invalid username or password")
            dom = req.get("domain") or req.get("auth_domain")
            if dom and dom not in ("root", u["domain"]):
                raise unauthorized("Invalid username or password")
            user = req["username"]
            rt = self.op_issue_refresh_token(user)["refresh_token"]
        elif grant == "refresh_token":
            rt = req.get("refresh_token") or ""
            rec = self.refresh_tokens.get(rt)
            if rec is None or rec["revoked"] or (rec["expire"] and rec["expire"] <= self.now()):
                raise unauthorized("Invalid refresh token")
            user = rec["user"]
            u = self.users.get(user)
            if u is None or u["disabled"]:
                raise unauthorized("Invalid refresh token")
        else:
            raise bad_request("unsupported grant_type %s" % grant)
        jwt, dur = self.issue_jwt(user)
        out = {"jwt": jwt, "token_type": "Bearer", "client_id": str(uuid.uuid4()),
               "refresh_token_id": self.refresh_tokens[rt]["id"]}
        if self.style["duration"] == "int":
            out["duration"] = dur
        elif self.style["duration"] == "string":
            out["duration"] = str(dur)
        if grant == "password":
            out["refresh_token"] = rt
        return 200, out

    def keys_list(self, q):
        name = (q.get("name") or [None])[0]
        skip = int((q.get("skip") or ["0"])[0])
        limit = int((q.get("limit") or ["10"])[0])
        ks = [self.key_json(k) for k in self.keys.values() if name is None or k["name"] == name]
        ks.sort(key=lambda d: d["createdAt"])
        page = ks[skip:skip + limit] if limit > 0 else ks[skip:]
        return 200, {"skip": skip, "limit": limit, "total": len(ks), "resources": page}

    def keys_create(self, req, user):
        name = req.get("name")
        if not isinstance(name, str) or not name or any(c in name for c in "<>\\"):
            raise bad_request("name is required and may not hold < > \\")
        k = self.new_key(name, req.get("algorithm") or "aes", req.get("size") or 256,
                         req.get("usageMask", USAGE_ENCRYPT | USAGE_DECRYPT), owner="local|" + user)
        self.save_state()
        return 201, self.key_json(k)

    def crypto_key(self, req, need_bit, states, what):
        ident = req.get("id")
        if not isinstance(ident, str) or not ident:
            raise bad_request("id is required")
        k = self.find_key(ident, req.get("type"))
        if k is None:
            raise not_found("Key not found")
        if k["state"] not in states:
            raise forbidden("Key state %s does not permit %s" % (k["state"], what))
        if not k["usageMask"] & need_bit:
            raise forbidden("Key usage mask does not permit %s" % what)
        mode = (req.get("mode") or "gcm").lower()
        if mode != "gcm":
            raise bad_request("this fake supports mode gcm only")
        return k

    def encrypt(self, req):
        k = self.crypto_key(req, USAGE_ENCRYPT, ENCRYPT_STATES, "encrypt")
        ver = parse_version(req.get("version"))
        if ver is None:
            ver = len(k["material"]) - 1
        if ver >= len(k["material"]):
            raise bad_request("Key version %d does not exist" % ver)
        pt = b64field(req, "plaintext")
        aad = b64field(req, "aad", required=False) or b""
        iv = b64field(req, "iv", required=False) or secrets.token_bytes(12)
        tag_len = int(req.get("tag_len") or 16)
        out = AESGCM(k["material"][ver]).encrypt(iv, pt, aad or None)
        ct, tag = out[:-16], out[-16:][:tag_len]
        res = {"id": k["id"], "version": ver if self.style["version"] == "int" else str(ver), "mode": "gcm",
               "iv": base64.b64encode(iv).decode(), "tag": base64.b64encode(tag).decode(),
               "ciphertext": base64.b64encode(ct).decode()}
        if aad:
            res["aad"] = base64.b64encode(aad).decode()
        return 200, res

    def decrypt(self, req):
        k = self.crypto_key(req, USAGE_DECRYPT, DECRYPT_STATES, "decrypt")
        ver = parse_version(req.get("version"))
        if ver is None:
            ver = len(k["material"]) - 1
        if ver >= len(k["material"]):
            raise bad_request("Key version %d does not exist" % ver)
        ct = b64field(req, "ciphertext")
        tag = b64field(req, "tag")
        iv = b64field(req, "iv")
        aad = b64field(req, "aad", required=False) or b""
        if len(tag) != 16:
            raise bad_request("this fake supports 16-byte tags only")
        try:
            pt = AESGCM(k["material"][ver]).decrypt(iv, ct + tag, aad or None)
        except InvalidTag:
            raise CTError(400, 13, "NCERRCryptoOperationFailed: Cryptographic operation failed",
                          "cipher: message authentication failed")
        return 200, {"plaintext": base64.b64encode(pt).decode(), "id": k["id"],
                     "version": ver if self.style["version"] == "int" else str(ver)}


class CipherTrustHandler(BaseHandler):
    server_version = "nginx"

    def do_GET(self):
        self.server.app.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fakecommon.add_common_args(p)
    p.add_argument("--user", action="append", help="NAME:PASSWORD[:DOMAIN] (repeatable)")
    p.add_argument("--jwt-duration", type=int, default=300, help="JWT lifetime in seconds (300)")
    args = p.parse_args()
    if not args.user:
        args.user = ["kmscrypt:kmscrypt-Fake-Password-1"]
    app = CipherTrustApp(args)
    srv = app.start_server(CipherTrustHandler, args.port)
    ctl = app.start_control()
    app.run({"port": srv.server_address[1], "control": ctl.server_address[1]})


if __name__ == "__main__":
    main()
