#!/usr/bin/python3
"""Fake Azure Key Vault keys API + Microsoft identity platform token endpoint (HTTPS, one port) and
Azure Instance Metadata Service managed-identity endpoint (plain HTTP), plus a plain-HTTP control
API.  Tests only; binds 127.0.0.1 only.

  /usr/bin/python3 tests/fakes/fake_azure_kv.py --certs DIR --portfile F --control-portfile F \
      [--imds-portfile F] [--state F] [--tenant T] [--client ID:SECRET]...

Key Vault (api-version 7.x, https://learn.microsoft.com/rest/api/keyvault/keys):
  GET  /keys/{name}[/{version}]            POST /keys/{name}/create
  POST /keys/{name}/{version}/wrapkey      POST /keys/{name}/{version}/unwrapkey  (RSA-OAEP-256,
       RSA-OAEP, RSA1_5; real RSA with python3-cryptography; base64url values)
  GET  /keys/{name}/rotationpolicy         PUT /keys/{name}/rotationpolicy
  A request without a bearer token gets 401 with the WWW-Authenticate challenge the Azure SDK
  expects; tokens are checked for issue, expiry (server clock), audience and revocation.
Identity platform: POST /{tenant}/oauth2/v2.0/token (client_credentials; client_secret checked in
  constant time), GET /{tenant}/v2.0/.well-known/openid-configuration (for MSAL).
IMDS: GET /metadata/identity/oauth2/token?api-version=...&resource=... with "Metadata: true".

Control operations (POST /control {"op": ...}): see tests/fakes/README.md.
"""

import argparse
import base64
import hmac
import json
import os
import re
import secrets
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakecommon  # noqa: E402
from fakecommon import BaseHandler, FakeApp, malformed_body  # noqa: E402

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

DEFAULT_TENANT = "72f988bf-0000-4000-8000-00000000aaaa"
DEFAULT_CLIENT = ("11111111-2222-4333-8444-555555555555", "fakeAzureClientSecret~0000000001")
VAULT_RESOURCE = "https://vault.azure.net"
API_VERSION_RE = re.compile(r"^7\.\d+(-preview(\.\d+)?)?$")
NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")


class AzureError(Exception):
    """A Key Vault error: {"error":{"code","message","innererror"?}}."""

    def __init__(self, status, code, message, inner=None, headers=()):
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner
        self.headers = list(headers)

    def body(self):
        e = {"code": self.code, "message": self.message}
        if self.inner:
            e["innererror"] = {"code": self.inner}
        return {"error": e}


class OAuthError(Exception):
    """An identity platform / IMDS error: {"error","error_description","error_codes",...}."""

    def __init__(self, status, error, desc, codes=(), headers=()):
        super().__init__(desc)
        self.status, self.error, self.desc, self.codes = status, error, desc, list(codes)
        self.headers = list(headers)

    def body(self):
        d = {"error": self.error, "error_description": self.desc}
        if self.codes:
            d.update({"error_codes": self.codes, "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                      "trace_id": secrets.token_hex(16), "correlation_id": secrets.token_hex(16)})
        return d


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64u(s):
    if not isinstance(s, str) or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", s):
        raise ValueError("not base64url")
    s = s.rstrip("=")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def int_b64u(n):
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class AzureApp(FakeApp):
    name = "azure"

    def __init__(self, args):
        super().__init__(args)
        self.imds_stats, self.imds_faults = self.second_listener("imds", record_path=args.record)
        self.tenant = args.tenant
        self.clients = {}   # client_id -> {"secret", "tenant", "revoked": bool}
        self.tokens = {}    # token -> {"who", "exp", "aud"}
        self.denied = {}    # who -> [ops] (403 on those key operations; [] or None = all)
        self.keys = {}      # name -> {"versions": [ {...} ], "rotation": bool}
        self.token_ttl = args.token_ttl
        self.imds = {"enabled": True, "client_id": "mi-" + DEFAULT_CLIENT[0][3:], "ttl": args.token_ttl}
        for c in args.client or ["%s:%s" % DEFAULT_CLIENT]:
            cid, _, sec = c.partition(":")
            self.clients[cid] = {"secret": sec, "tenant": self.tenant, "revoked": False}
        st = self.load_state_file()
        if st:
            self.load_state(st)

    # ---- state --------------------------------------------------------------------------------
    def load_state(self, st):
        self.tenant = st.get("tenant", self.tenant)
        self.clients = st.get("clients", self.clients)
        self.denied = st.get("denied", {})
        for name, k in st.get("keys", {}).items():
            vs = []
            for v in k["versions"]:
                v = dict(v)
                v["priv"] = serialization.load_pem_private_key(v.pop("pem").encode(), None)
                vs.append(v)
            self.keys[name] = {"versions": vs, "rotation": k.get("rotation", False)}

    def dump_state(self, secret=False):
        keys = {}
        for name, k in self.keys.items():
            vs = []
            for v in k["versions"]:
                d = {x: y for x, y in v.items() if x != "priv"}
                if secret:
                    d["pem"] = v["priv"].private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()).decode()
                vs.append(d)
            keys[name] = {"versions": vs, "rotation": k["rotation"]}
        clients = self.clients if secret else {c: {"tenant": v["tenant"], "revoked": v["revoked"]}
                                                 for c, v in self.clients.items()}
        return {"tenant": self.tenant, "clients": clients, "denied": self.denied, "keys": keys,
                "tokens": len(self.tokens), "imds": self.imds}

    # ---- keys ---------------------------------------------------------------------------------
    def new_version(self, name, kty="RSA", key_size=2048, key_ops=None, enabled=True, nbf=None, exp=None):
        if key_size not in (2048, 3072, 4096):
            raise AzureError(400, "BadParameter", "Invalid key size %r" % key_size)
        priv = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        now = int(self.now())
        v = {"version": secrets.token_hex(16), "kty": kty, "key_size": key_size,
             "key_ops": list(key_ops if key_ops is not None else
                             ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]),
             "enabled": enabled, "nbf": nbf, "exp": exp, "created": now, "updated": now, "priv": priv}
        k = self.keys.setdefault(name, {"versions": [], "rotation": False})
        k["versions"].append(v)
        return v

    def find(self, name, version=None):
        k = self.keys.get(name)
        if k and k["versions"]:
            if not version:
                return k["versions"][-1]
            for v in k["versions"]:
                if v["version"] == version:
                    return v
        raise AzureError(404, "KeyNotFound",
                         "A key with (name/id) %s%s was not found in this key vault. If you recently "
                         "deleted this key you may be able to recover it using the correct recovery "
                         "command. For help resolving this issue, please see "
                         "https://go.microsoft.com/fwlink/?linkid=2125182" %
                         (name, "/" + version if version else ""))

    def bundle(self, base, name, v):
        pub = v["priv"].public_key().public_numbers()
        attrs = {"enabled": v["enabled"], "created": v["created"], "updated": v["updated"],
                 "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}
        if v["nbf"] is not None:
            attrs["nbf"] = v["nbf"]
        if v["exp"] is not None:
            attrs["exp"] = v["exp"]
        return {"key": {"kid": "%s/keys/%s/%s" % (base, name, v["version"]), "kty": v["kty"],
                        "key_ops": v["key_ops"], "n": int_b64u(pub.n), "e": int_b64u(pub.e)},
                "attributes": attrs, "tags": v.get("tags", {})}

    # ---- control operations -------------------------------------------------------------------
    def op_create_key(self, name, kty="RSA", key_size=2048, key_ops=None, enabled=True, nbf=None, exp=None):
        with self.lock:
            v = self.new_version(name, kty, int(key_size), key_ops, enabled, nbf, exp)
            self.save_state()
            return {"name": name, "version": v["version"]}

    def _versions(self, name, version):
        return [self.find(name, version)] if version else self.keys.get(name, {}).get("versions", []) or \
            [self.find(name)]

    def op_disable_key(self, name, version=None):
        with self.lock:
            for v in self._versions(name, version):
                v["enabled"] = False
            self.save_state()

    def op_enable_key(self, name, version=None):
        with self.lock:
            for v in self._versions(name, version):
                v["enabled"] = True
            self.save_state()

    def op_set_attributes(self, name, version=None, **kw):
        """nbf / exp: Unix seconds or null (clears); relative: nbf_in / exp_in seconds from now."""
        with self.lock:
            v = self.find(name, version)
            for f in ("nbf", "exp"):
                if f in kw:
                    v[f] = kw[f]
                if f + "_in" in kw:
                    v[f] = int(self.now()) + int(kw[f + "_in"])
            self.save_state()
            return {f: v[f] for f in ("nbf", "exp")}

    def op_set_key_ops(self, name, key_ops, version=None):
        with self.lock:
            self.find(name, version)["key_ops"] = list(key_ops)
            self.save_state()

    def op_rotate_key(self, name):
        with self.lock:
            old = self.find(name)
            v = self.new_version(name, old["kty"], old["key_size"], old["key_ops"])
            self.save_state()
            return {"name": name, "version": v["version"]}

    def op_set_rotation_policy(self, name, rotate=True):
        with self.lock:
            self.find(name)
            self.keys[name]["rotation"] = bool(rotate)
            self.save_state()

    def op_delete_key(self, name):
        with self.lock:
            self.find(name)
            del self.keys[name]
            self.save_state()

    def op_add_client(self, client_id, secret, tenant=None):
        with self.lock:
            self.clients[client_id] = {"secret": secret, "tenant": tenant or self.tenant, "revoked": False}
            self.save_state()

    def op_revoke_secret(self, client_id):
        """The token endpoint refuses the client's secret (AADSTS7000215); tokens already issued stay."""
        with self.lock:
            self.clients[client_id]["revoked"] = True
            self.save_state()

    def op_restore_secret(self, client_id):
        with self.lock:
            self.clients[client_id]["revoked"] = False
            self.save_state()

    def op_deny(self, who, ops=None):
        """Key Vault answers 403 AccessDenied to this client (or managed identity) for @ops (default all)."""
        with self.lock:
            self.denied[who] = list(ops) if ops else []
            self.save_state()

    def op_allow(self, who):
        with self.lock:
            self.denied.pop(who, None)
            self.save_state()

    def op_expire_tokens(self):
        with self.lock:
            for t in self.tokens.values():
                t["exp"] = 0
            return {"expired": len(self.tokens)}

    def op_revoke_tokens(self):
        with self.lock:
            n = len(self.tokens)
            self.tokens.clear()
            return {"revoked": n}

    def op_token_ttl(self, seconds):
        self.token_ttl = int(seconds)
        self.imds["ttl"] = int(seconds)
        return {"token_ttl": self.token_ttl}

    def op_imds_config(self, enabled=None, client_id=None, ttl=None):
        if enabled is not None:
            self.imds["enabled"] = bool(enabled)
        if client_id is not None:
            self.imds["client_id"] = client_id
        if ttl is not None:
            self.imds["ttl"] = int(ttl)
        return dict(self.imds)

    # ---- tokens -------------------------------------------------------------------------------
    def issue(self, who, aud, ttl):
        tok = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + b64u(json.dumps(
            {"aud": aud, "tid": self.tenant, "appid": who, "exp": int(self.now()) + ttl}).encode()) + \
            "." + b64u(secrets.token_bytes(32))
        self.tokens[tok] = {"who": who, "exp": self.now() + ttl, "aud": aud}
        return tok

    def challenge(self):
        return [("WWW-Authenticate", 'Bearer authorization="https://login.microsoftonline.com/%s", '
                 'resource="%s"' % (self.tenant, VAULT_RESOURCE))]

    def authenticate(self, handler):
        auth = handler.headers.get("Authorization") or ""
        if not auth:
            raise AzureError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
                             headers=self.challenge())
        if not auth.startswith("Bearer "):
            raise AzureError(401, "Unauthorized", "AKV10001: Unsupported authorization scheme.",
                             headers=self.challenge())
        t = self.tokens.get(auth[7:])
        if not t:
            raise AzureError(401, "Unauthorized", "[BearerReadAccessTokenFailed] Error validating token: "
                             "'S2S12005'.", headers=self.challenge())
        if t["exp"] <= self.now():
            raise AzureError(401, "Unauthorized", "[TokenExpired] Error validating token: 'S2S12086'.",
                             headers=self.challenge())
        if t["aud"].rstrip("/") != VAULT_RESOURCE:
            raise AzureError(401, "Unauthorized", "AKV10022: Invalid audience. Expected %s, found: %s." %
                             (VAULT_RESOURCE, t["aud"]), headers=self.challenge())
        return t["who"]

    def authorize(self, who, perm):
        ops = self.denied.get(who)
        if ops is not None and (not ops or perm in ops):
            raise AzureError(403, "Forbidden",
                             "The user, group or application 'appid=%s;oid=%s;iss=https://sts.windows.net/%s/' "
                             "does not have keys %s permission on key vault 'fake-vault;location=eastus'. "
                             "For help resolving this issue, please see "
                             "https://go.microsoft.com/fwlink/?linkid=2125287" % (who, who, self.tenant, perm),
                             inner="AccessDenied")

    # ---- request handling ---------------------------------------------------------------------
    def action_name(self, method, path):
        p = path.strip("/").split("/")
        if len(p) >= 3 and p[1:] == ["oauth2", "v2.0", "token"]:
            return "token"
        if path.endswith("/.well-known/openid-configuration"):
            return "openid"
        if p and p[0] == "keys":
            if len(p) == 2:
                return "keys.get"
            if p[-1] in ("create", "rotate", "wrapkey", "unwrapkey", "rotationpolicy", "encrypt", "decrypt"):
                return "keys." + p[-1]
            return "keys.get"
        return "unknown"

    def handle(self, handler):
        method = handler.command
        path, _, query = handler.path.partition("?")
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        body = handler.read_body()
        action = self.action_name(method, path)
        entry = {"conn": handler.conn_id, "method": method, "path": handler.path, "action": action,
                 "headers": [[k, v] for k, v in handler.headers.items()], "time": time.time()}
        try:
            entry["body"] = json.loads(body) if body and action != "token" else (
                body.decode("latin-1") if body else None)
        except ValueError:
            entry["body"] = body.decode("latin-1")
        status, data, extra, fault = 200, None, [], None
        oauth = action in ("token", "openid")
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
                if oauth:
                    raise OAuthError(429, "temporarily_unavailable", "AADSTS50196: The server is too busy.",
                                     [50196], headers=[("Retry-After", "1")])
                raise AzureError(429, "Throttled", "Request was not processed because too many requests "
                                 "were received. Reason: VaultRequestTypeLimitReached",
                                 headers=[("Retry-After", "1")])
            if fault == "error5xx":
                st = self.faults.status5xx
                if oauth:
                    raise OAuthError(st, "temporarily_unavailable", "AADSTS90033: A transient error has occurred.")
                raise AzureError(st, "InternalServerError" if st == 500 else "ServiceUnavailable",
                                 "The service is temporarily unavailable.")
            with self.lock:
                if action == "token":
                    status, data = self.token_endpoint(method, path, body)
                elif action == "openid":
                    status, data = self.openid(handler, path)
                else:
                    status, data = self.keyvault(handler, method, path, q, body, entry)
        except AzureError as e:
            status, data, extra = e.status, e.body(), e.headers
            entry["error"] = e.code
        except OAuthError as e:
            status, data, extra = e.status, e.body(), e.headers
            entry["error"] = e.error
        except Exception as e:  # a bug in the fake
            import traceback
            traceback.print_exc()
            status, data = 500, {"error": {"code": "InternalServerError", "message": "fake bug: %s" % e}}
        resp = json.dumps(data).encode()
        ctype = "application/json; charset=utf-8"
        if fault == "malformed" and status == 200:
            resp, ct2 = malformed_body(self.faults.malformed_mode, resp)
            ctype = ct2 or ctype
            entry["malformed"] = self.faults.malformed_mode
        entry["status"] = status
        self.stats.record(entry)
        hdrs = [("Content-Type", ctype), ("Cache-Control", "no-cache"),
                ("x-ms-request-id", secrets.token_hex(4) + "-" + secrets.token_hex(2) + "-4" +
                 secrets.token_hex(2)[1:] + "-8" + secrets.token_hex(2)[1:] + "-" + secrets.token_hex(6))]
        if action.startswith("keys"):
            hdrs.append(("x-ms-keyvault-service-version", "1.9.0.0"))
        handler.send_raw(status, resp, hdrs + extra, close=fault == "close")

    def openid(self, handler, path):
        tenant = path.strip("/").split("/")[0]
        base = "https://" + (handler.headers.get("Host") or "127.0.0.1")
        return 200, {"token_endpoint": "%s/%s/oauth2/v2.0/token" % (base, tenant),
                     "authorization_endpoint": "%s/%s/oauth2/v2.0/authorize" % (base, tenant),
                     "device_authorization_endpoint": "%s/%s/oauth2/v2.0/devicecode" % (base, tenant),
                     "issuer": "%s/%s/v2.0" % (base, tenant),
                     "jwks_uri": "%s/%s/discovery/v2.0/keys" % (base, tenant),
                     "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                     "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                               "client_secret_basic"],
                     "tenant_region_scope": "NA", "cloud_instance_name": "microsoftonline.com"}

    def token_endpoint(self, method, path, body):
        if method != "POST":
            raise OAuthError(405, "invalid_request", "AADSTS900561: The endpoint only accepts POST requests.",
                             [900561])
        tenant = path.strip("/").split("/")[0]
        f = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if tenant != self.tenant:
            raise OAuthError(400, "invalid_request", "AADSTS90002: Tenant '%s' not found. Check to make sure "
                             "you have the correct tenant ID and are signing into the correct cloud." % tenant,
                             [90002])
        if f.get("grant_type") != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported "
                             "grant type '%s'." % f.get("grant_type"), [70003])
        cid = f.get("client_id", "")
        c = self.clients.get(cid)
        if not c or c["tenant"] != tenant:
            raise OAuthError(400, "unauthorized_client", "AADSTS700016: Application with identifier '%s' was "
                             "not found in the directory '%s'." % (cid, tenant), [700016])
        if "client_secret" not in f:
            raise OAuthError(401, "invalid_client", "AADSTS7000216: 'client_assertion', 'client_secret' or "
                             "'request' is required for the 'client_credentials' grant type.", [7000216])
        if c["revoked"] or not hmac.compare_digest(f["client_secret"].encode(), c["secret"].encode()):
            raise OAuthError(401, "invalid_client", "AADSTS7000215: Invalid client secret provided. Ensure the "
                             "secret being sent in the request is the client secret value, not the client "
                             "secret ID, for a secret added to app '%s'." % cid, [7000215])
        scope = f.get("scope", "")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise OAuthError(400, "invalid_scope", "AADSTS1002012: The provided value for scope %s is not "
                             "valid. Client credential flows must have a scope value with /.default suffixed "
                             "to the resource identifier (application ID URI)." % scope, [1002012])
        aud = scopes[0][: -len("/.default")]
        ttl = self.token_ttl
        return 200, {"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl,
                     "access_token": self.issue(cid, aud, ttl)}

    def keyvault(self, handler, method, path, q, body, entry):
        p = path.strip("/").split("/")
        if not p or p[0] != "keys" or len(p) < 2:
            raise AzureError(404, "NotFound", "The requested resource was not found.")
        who = self.authenticate(handler)
        entry["who"] = who
        av = q.get("api-version")
        if not av:
            raise AzureError(400, "BadParameter", "The 'api-version' query parameter is missing.")
        if not API_VERSION_RE.match(av):
            raise AzureError(400, "BadParameter", "The specified version (%s) is not recognized. Consider "
                             "using the latest supported version (7.4)." % av)
        name = p[1]
        if not NAME_RE.match(name):
            raise AzureError(400, "BadParameter", "Invalid key name: %s" % name)
        base = "https://" + (handler.headers.get("Host") or "127.0.0.1")
        req = {}
        if body.strip():
            try:
                req = json.loads(body)
            except ValueError:
                raise AzureError(400, "BadParameter", "The request body is not valid JSON.")
            if not isinstance(req, dict):
                raise AzureError(400, "BadParameter", "The request body must be a JSON object.")
        rest = p[2:]
        if rest == ["create"] and method == "POST":
            self.authorize(who, "create")
            kty = req.get("kty")
            if kty not in ("RSA", "RSA-HSM"):
                raise AzureError(400, "BadParameter", "Unsupported key type: %s" % kty)
            attrs = req.get("attributes") or {}
            v = self.new_version(name, kty, int(req.get("key_size") or 2048), req.get("key_ops"),
                                 attrs.get("enabled", True), attrs.get("nbf"), attrs.get("exp"))
            v["tags"] = req.get("tags") or {}
            self.save_state()
            return 200, self.bundle(base, name, v)
        if rest == ["rotate"] and method == "POST":
            self.authorize(who, "rotate")
            old = self.find(name)
            v = self.new_version(name, old["kty"], old["key_size"], old["key_ops"])
            self.save_state()
            return 200, self.bundle(base, name, v)
        if rest == ["rotationpolicy"]:
            self.authorize(who, "getrotationpolicy" if method == "GET" else "setrotationpolicy")
            self.find(name)
            if method == "PUT":
                acts = req.get("lifetimeActions") or []
                self.keys[name]["rotation"] = any((a.get("action") or {}).get("type", "").lower() == "rotate"
                                                  for a in acts)
                self.save_state()
            acts = [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}]
            attrs = {}
            if self.keys[name]["rotation"]:
                acts = [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}}] + acts
                attrs = {"expiryTime": "P2Y", "created": int(self.now()), "updated": int(self.now())}
            return 200, {"id": "%s/keys/%s/rotationpolicy" % (base, name), "lifetimeActions": acts,
                         "attributes": attrs}
        if method == "GET" and len(rest) <= 1:
            self.authorize(who, "get")
            v = self.find(name, rest[0] if rest and rest[0] else None)
            return 200, self.bundle(base, name, v)
        if method == "POST" and len(rest) in (1, 2) and rest[-1] in ("wrapkey", "unwrapkey", "encrypt", "decrypt"):
            op = rest[-1]
            perm = {"wrapkey": "wrapKey", "unwrapkey": "unwrapKey", "encrypt": "encrypt", "decrypt": "decrypt"}[op]
            self.authorize(who, perm)
            v = self.find(name, rest[0] if len(rest) == 2 else None)
            return 200, self.crypto(base, name, v, perm, req)
        raise AzureError(405, "MethodNotAllowed", "The requested method is not allowed.")

    def crypto(self, base, name, v, perm, req):
        now = self.now()
        if not v["enabled"]:
            raise AzureError(403, "Forbidden", "Operation \"%s\" is not allowed on a disabled key." % perm,
                             inner="KeyDisabled")
        if v["nbf"] is not None and v["nbf"] > now:
            raise AzureError(403, "Forbidden", "Operation \"%s\" is not allowed on a key that is not yet "
                             "valid." % perm, inner="KeyNotYetValid")
        if v["exp"] is not None and v["exp"] <= now:
            raise AzureError(403, "Forbidden", "Operation \"%s\" is not allowed on an expired key." % perm,
                             inner="KeyExpired")
        if perm not in v["key_ops"]:
            raise AzureError(403, "Forbidden", "Operation %s is not permitted on this key." % perm,
                             inner="KeyOperationForbidden")
        alg = req.get("alg")
        pads = {"RSA-OAEP-256": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                                                     label=None),
                "RSA-OAEP": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
                "RSA1_5": lambda: padding.PKCS1v15()}
        if alg not in pads:
            raise AzureError(400, "BadParameter", "Invalid algorithm: %s" % alg)
        try:
            value = unb64u(req.get("value"))
        except (ValueError, TypeError):
            raise AzureError(400, "BadParameter", "Property value has invalid value: not base64url encoded")
        if perm in ("wrapKey", "encrypt"):
            limit = v["key_size"] // 8 - (66 if alg == "RSA-OAEP-256" else 42 if alg == "RSA-OAEP" else 11)
            if not value or len(value) > limit:
                raise AzureError(400, "BadParameter", "The value is too long for the key and algorithm.")
            out = v["priv"].public_key().encrypt(value, pads[alg]())
        else:
            try:
                out = v["priv"].decrypt(value, pads[alg]())
            except ValueError:
                raise AzureError(400, "BadParameter", "The parameter is incorrect.\r\n")
        return {"kid": "%s/keys/%s/%s" % (base, name, v["version"]), "value": b64u(out)}

    # ---- IMDS ---------------------------------------------------------------------------------
    def handle_imds(self, handler):
        path, _, query = handler.path.partition("?")
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        handler.read_body()
        action = "imds.token" if path == "/metadata/identity/oauth2/token" else "imds.other"
        entry = {"conn": handler.conn_id, "method": handler.command, "path": handler.path, "action": action,
                 "headers": [[k, v] for k, v in handler.headers.items()], "time": time.time()}
        status, extra, fault = 200, [], None
        try:
            delay = self.imds_faults.latency(action)
            if delay:
                time.sleep(delay)
            fault = self.imds_faults.take(action)
            if fault == "drop":
                entry["status"] = "dropped"
                self.imds_stats.record(entry)
                handler.drop_connection()
                return
            if fault == "throttle":
                raise OAuthError(429, "too_many_requests", "Too many requests.", headers=[("Retry-After", "1")])
            if fault == "error5xx":
                raise OAuthError(self.imds_faults.status5xx, "unknown_error", "Internal error.")
            if handler.headers.get("Metadata") != "true":
                raise OAuthError(400, "invalid_request", "Required metadata header not specified")
            if handler.headers.get("X-Forwarded-For"):
                raise OAuthError(400, "invalid_request", "Request not allowed through a proxy.")
            if action != "imds.token" or handler.command != "GET":
                raise OAuthError(404, "not_found", "Not found.")
            if not q.get("api-version"):
                raise OAuthError(400, "invalid_request", "Required query variable 'api-version' is missing")
            res = q.get("resource")
            if not res:
                raise OAuthError(400, "invalid_request", "Required audience parameter not specified")
            with self.lock:
                if not self.imds["enabled"] or (q.get("client_id") and q["client_id"] != self.imds["client_id"]):
                    raise OAuthError(400, "invalid_request", "Identity not found")
                ttl = self.imds["ttl"]
                now = int(self.now())
                tok = self.issue(self.imds["client_id"], res, ttl)
            data = {"access_token": tok, "client_id": self.imds["client_id"], "expires_in": str(ttl),
                    "expires_on": str(now + ttl), "ext_expires_in": str(ttl), "not_before": str(now),
                    "resource": res, "token_type": "Bearer"}
        except OAuthError as e:
            status, data, extra = e.status, e.body(), e.headers
            entry["error"] = e.error
        resp = json.dumps(data).encode()
        ctype = "application/json; charset=utf-8"
        if fault == "malformed" and status == 200:
            resp, ct2 = malformed_body(self.imds_faults.malformed_mode, resp)
            ctype = ct2 or ctype
        entry["status"] = status
        self.imds_stats.record(entry)
        handler.send_raw(status, resp, [("Content-Type", ctype), ("Server", "IMDS/150.870.65.1323")] + extra,
                         close=fault == "close")


class KVHandler(BaseHandler):
    server_version = "Microsoft-IIS/10.0"

    def do_GET(self):
        self.server.app.handle(self)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET


class IMDSHandler(BaseHandler):
    server_version = "IMDS"

    def do_GET(self):
        self.server.app.handle_imds(self)

    do_POST = do_PUT = do_GET


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fakecommon.add_common_args(p)
    p.add_argument("--imds-port", type=int, default=0)
    p.add_argument("--imds-portfile")
    p.add_argument("--tenant", default=DEFAULT_TENANT)
    p.add_argument("--client", action="append", help="CLIENT_ID:SECRET (repeatable)")
    p.add_argument("--token-ttl", type=int, default=3599)
    args = p.parse_args()
    app = AzureApp(args)
    srv = app.start_server(KVHandler, args.port)
    imds = app.start_server(IMDSHandler, args.imds_port, tls=False, stats=app.imds_stats)
    ctl = app.start_control()
    if args.imds_portfile:
        fakecommon.write_atomic(args.imds_portfile, "%d\n" % imds.server_address[1])
    app.run({"port": srv.server_address[1], "imds": imds.server_address[1], "control": ctl.server_address[1]})


if __name__ == "__main__":
    main()
