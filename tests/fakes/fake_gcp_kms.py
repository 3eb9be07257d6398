#!/usr/bin/python3
"""Fake Google Cloud KMS (HTTPS): the OAuth 2.0 token endpoint for service accounts (JWT bearer
grant, RS256 assertion verified with google-auth's own verifier), Cloud KMS REST v1 cryptoKeys
encrypt/decrypt/get with the CRC32C integrity fields, and a GCE metadata server (plain HTTP), plus
the plain-HTTP control API of fakecommon.  Tests only; binds 127.0.0.1 only.

  /usr/bin/python3 tests/fakes/fake_gcp_kms.py --certs DIR --portfile F --control-portfile F \
      [--metadata-portfile F] [--state F] [--service-account-file OUT] [--project P]

See tests/fakes/README.md for the API surface and the control operations.
"""

import argparse
import base64
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

from cryptography.exceptions import InvalidTag  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from google.auth import jwt as gjwt  # noqa: E402
import crcmod.predefined  # noqa: E402

crc32c = crcmod.predefined.mkCrcFun("crc-32c")
SCOPES_OK = ("https://www.googleapis.com/auth/cloudkms", "https://www.googleapis.com/auth/cloud-platform")
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAGIC = b"GCPF"
KEY_RE = re.compile(r"^projects/([^/]+)/locations/([^/]+)/keyRings/([^/]+)/cryptoKeys/([^/:]+)"
                    r"(?:/cryptoKeyVersions/([0-9]+))?$")
UNAUTH_MISSING = ("Request is missing required authentication credential. Expected OAuth 2 access token, login "
                  "cookie or other valid authentication credential. See "
                  "https://developers.google.com/identity/sign-in/web/devconsole-project.")
UNAUTH_INVALID = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                  "other valid authentication credential. See "
                  "https://developers.google.com/identity/sign-in/web/devconsole-project.")
CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
         429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
PERMS = {"encrypt": "cloudkms.cryptoKeyVersions.useToEncrypt", "decrypt": "cloudkms.cryptoKeyVersions.useToDecrypt",
         "get": "cloudkms.cryptoKeys.get"}


def b64e(b):
    return base64.b64encode(b).decode()


class GcpError(Exception):
    """A Google API error: {"error": {"code", "message", "status"}}."""

    def __init__(self, code, message, status=None, headers=()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or CODES.get(code, "UNKNOWN")
        self.headers = list(headers)


class OAuthError(Exception):
    """An OAuth 2.0 token endpoint error: {"error", "error_description"} (RFC 6749 5.2)."""

    def __init__(self, code, error, description, headers=()):
        super().__init__(description)
        self.code = code
        self.error = error
        self.description = description
        self.headers = list(headers)


def b64field(req, field, required):
    v = req.get(field)
    if v is None or v == "":
        if required:
            raise GcpError(400, "Invalid value at '%s': required field is empty." % field)
        return b""
    if not isinstance(v, str):
        raise GcpError(400, "Invalid value at '%s' (TYPE_BYTES), %s" % (field, json.dumps(v)))
    try:
        return base64.b64decode(v.replace("-", "+").replace("_", "/") + "=" * (-len(v) % 4), validate=True)
    except ValueError:
        raise GcpError(400, "Invalid value at '%s' (TYPE_BYTES), Base64 decoding failed for \"%s\"" % (field, v))


def int64field(req, field):
    """CRC32C fields are Int64Value: a JSON string or number, or absent."""
    v = req.get(field)
    if v is None:
        return None
    try:
        n = int(v) if isinstance(v, (int, str)) and not isinstance(v, bool) else None
    except ValueError:
        n = None
    if n is None or n < 0 or n > 0xFFFFFFFF:
        raise GcpError(400, "Invalid value at '%s' (TYPE_INT64), %s" % (field, json.dumps(v)))
    return n


def snake(field):
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), field).replace("crc32_c", "crc32c")


class GcpApp(FakeApp):
    name = "gcp-kms"

    def __init__(self, args):
        super().__init__(args)
        self.project = args.project
        self.accounts = {}    # email -> {public_pem, private_pem?, kid, enabled, denied: set(perm) or {"*"}}
        self.tokens = {}      # access token -> {email, exp, scope}
        self.keys = {}        # key name -> {purpose, primary, versions: {n: {state, material}}, created}
        self.token_ttl = args.token_ttl
        self.corrupt = {}     # reply field -> shots left (integrity fault injection)
        self.metadata_stats, self.metadata_faults = self.second_listener("metadata")
        self.metadata_enabled = True
        self.metadata_email = "vm-default@%s.iam.gserviceaccount.com" % self.project
        self.port = 0
        st = self.load_state_file()
        if st:
            self._load(st)
        if self.metadata_email not in self.accounts:
            self.accounts[self.metadata_email] = self._account(None, None)
        self.save_state()

    # ---------------------------------------------------------------- state
    @staticmethod
    def _account(public_pem, private_pem, kid=None, enabled=True, denied=()):
        return {"public_pem": public_pem, "private_pem": private_pem, "kid": kid, "enabled": enabled,
                "denied": set(denied)}

    def _load(self, st):
        self.project = st.get("project", self.project)
        self.metadata_email = st.get("metadata_email", self.metadata_email)
        self.token_ttl = st.get("token_ttl", self.token_ttl)
        for email, a in (st.get("accounts") or {}).items():
            self.accounts[email] = self._account(a.get("public_pem"), a.get("private_pem"), a.get("kid"),
                                                 a.get("enabled", True), a.get("denied", ()))
        for name, k in (st.get("keys") or {}).items():
            self.keys[name] = {"purpose": k.get("purpose", "ENCRYPT_DECRYPT"), "primary": k.get("primary"),
                               "created": k.get("created", time.time()),
                               "rotation_period": k.get("rotation_period"),
                               "versions": {int(n): {"state": v["state"],
                                                     "material": base64.b64decode(v["material"])
                                                     if v.get("material") else None}
                                            for n, v in (k.get("versions") or {}).items()}}
        self.tokens = {t: dict(r) for t, r in (st.get("tokens") or {}).items()}

    def dump_state(self, secret=False):
        with self.lock:
            keys = {}
            for name, k in self.keys.items():
                vers = {}
                for n, v in k["versions"].items():
                    d = {"state": v["state"]}
                    if secret and v["material"]:
                        d["material"] = b64e(v["material"])
                    vers[str(n)] = d
                keys[name] = {"purpose": k["purpose"], "primary": k["primary"], "created": k["created"],
                              "rotation_period": k["rotation_period"], "versions": vers}
            accounts = {}
            for email, a in self.accounts.items():
                d = {"kid": a["kid"], "enabled": a["enabled"], "denied": sorted(a["denied"]),
                     "public_pem": a["public_pem"]}
                if secret:
                    d["private_pem"] = a["private_pem"]
                accounts[email] = d
            out = {"project": self.project, "metadata_email": self.metadata_email, "token_ttl": self.token_ttl,
                   "keys": keys, "accounts": accounts}
            if secret:
                out["tokens"] = self.tokens
            else:
                out["tokens"] = len(self.tokens)
            return out

    def token_uri(self):
        return "https://127.0.0.1:%d/token" % self.port

    # ---------------------------------------------------------------- control operations
    def op_add_service_account(self, email=None, key_file=None, public_pem=None, kid=None):
        """New service account with a fresh RSA key; returns its JSON key file (also written to key_file)."""
        with self.lock:
            email = email or "kms-%s@%s.iam.gserviceaccount.com" % (secrets.token_hex(3), self.project)
            info = None
            if public_pem:
                self.accounts[email] = self._account(public_pem, None, kid)
            else:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()
                pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo).decode()
                kid = kid or secrets.token_hex(20)
                self.accounts[email] = self._account(pub, priv, kid)
                info = self.key_file(email)
            self.save_state()
        if key_file and info:
            fakecommon.write_atomic(key_file, json.dumps(info, indent=2) + "\n")
            os.chmod(key_file, 0o600)
        return {"email": email, "key_file": info}

    def key_file(self, email):
        a = self.accounts[email]
        return {"type": "service_account", "project_id": self.project, "private_key_id": a["kid"],
                "private_key": a["private_pem"], "client_email": email, "client_id": "1%020d" % 7,
                "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": self.token_uri(),
                "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs"}

    def op_disable_account(self, email):
        with self.lock:
            self.accounts[email]["enabled"] = False
            self.save_state()

    def op_enable_account(self, email):
        with self.lock:
            self.accounts[email]["enabled"] = True
            self.save_state()

    def op_revoke(self, email, permissions=None):
        """Remove IAM permissions of an account (all by default): Cloud KMS answers PERMISSION_DENIED."""
        with self.lock:
            self.accounts[email]["denied"] |= set(permissions or ["*"])
            self.save_state()

    def op_restore(self, email):
        with self.lock:
            self.accounts[email]["denied"] = set()
            self.save_state()

    def op_expire_tokens(self, email=None):
        with self.lock:
            n = 0
            for t, r in self.tokens.items():
                if email is None or r["email"] == email:
                    r["exp"] = self.now() - 1
                    n += 1
            self.save_state()
            return {"expired": n}

    def op_token_ttl(self, seconds):
        with self.lock:
            self.token_ttl = int(seconds)
            self.save_state()

    def op_create_key(self, name=None, project=None, location="global", key_ring="kmscrypt", key="vol",
                      purpose="ENCRYPT_DECRYPT", rotation_period=None, primary_state="ENABLED"):
        with self.lock:
            name = name or "projects/%s/locations/%s/keyRings/%s/cryptoKeys/%s" % (
                project or self.project, location, key_ring, key)
            if not KEY_RE.match(name):
                raise ValueError("bad key name %r" % name)
            k = {"purpose": purpose, "primary": 1, "created": time.time(), "rotation_period": rotation_period,
                 "versions": {1: {"state": primary_state, "material": os.urandom(32)}}}
            if purpose != "ENCRYPT_DECRYPT":
                k["primary"] = None
            self.keys[name] = k
            self.save_state()
            return {"name": name}

    def _key(self, name):
        if name not in self.keys:
            raise ValueError("no key %r" % name)
        return self.keys[name]

    def op_rotate(self, name):
        with self.lock:
            k = self._key(name)
            n = max(k["versions"]) + 1
            k["versions"][n] = {"state": "ENABLED", "material": os.urandom(32)}
            k["primary"] = n
            self.save_state()
            return {"primary": n}

    def op_set_primary(self, name, version):
        with self.lock:
            self._key(name)["primary"] = int(version)
            self.save_state()

    def _set_state(self, name, version, state):
        with self.lock:
            k = self._key(name)
            v = k["versions"][int(version or k["primary"])]
            v["state"] = state
            if state == "DESTROYED":
                v["material"] = None
            self.save_state()

    def op_disable_version(self, name, version=None):
        self._set_state(name, version, "DISABLED")

    def op_enable_version(self, name, version=None):
        self._set_state(name, version, "ENABLED")

    def op_destroy_version(self, name, version=None):
        self._set_state(name, version, "DESTROYED")

    def op_corrupt(self, field, n=1):
        """Corrupt the next N replies' integrity field: ciphertextCrc32c or plaintextCrc32c (wrong value),
        verifiedPlaintextCrc32c or verifiedAdditionalAuthenticatedDataCrc32c (false)."""
        with self.lock:
            self.corrupt[field] = int(n)
            return dict(self.corrupt)

    def op_metadata_config(self, enabled=None, email=None):
        with self.lock:
            if enabled is not None:
                self.metadata_enabled = bool(enabled)
            if email:
                self.metadata_email = email
                self.accounts.setdefault(email, self._account(None, None))
            self.save_state()
            return {"enabled": self.metadata_enabled, "email": self.metadata_email}

    # ---------------------------------------------------------------- tokens
    def issue_token(self, email, scope):
        tok = "ya29.fake-" + secrets.token_urlsafe(32)
        self.tokens[tok] = {"email": email, "exp": self.now() + self.token_ttl, "scope": scope}
        self.save_state()
        return {"access_token": tok, "expires_in": int(self.token_ttl), "token_type": "Bearer"}

    def token_grant(self, form):
        if form.get("grant_type") != JWT_GRANT:
            raise OAuthError(400, "unsupported_grant_type", "Invalid grant_type: %s" % form.get("grant_type", ""))
        assertion = form.get("assertion")
        if not assertion:
            raise OAuthError(400, "invalid_request", "Missing required parameter: assertion")
        try:
            unverified = gjwt.decode(assertion, verify=False)
            header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
        except Exception:
            raise OAuthError(400, "invalid_grant", "Invalid JWT: could not decode the assertion")
        email = unverified.get("iss")
        a = self.accounts.get(email)
        if header.get("alg") != "RS256" or header.get("typ", "JWT") != "JWT":
            raise OAuthError(400, "invalid_grant", "Invalid JWT header: alg must be RS256")
        if not a or not a["public_pem"]:
            raise OAuthError(400, "invalid_grant", "Invalid grant: account not found")
        if not a["enabled"]:
            raise OAuthError(400, "invalid_grant", "Invalid grant: account not found")
        certs = {a["kid"]: a["public_pem"]} if a["kid"] else a["public_pem"]
        audiences = {self.token_uri(), "https://localhost:%d/token" % self.port}
        if unverified.get("aud") not in audiences:
            raise OAuthError(400, "invalid_grant", "Invalid JWT: Failed audience check. The audience must be "
                             "the token endpoint %s" % self.token_uri())
        try:
            # google-auth's own verifier: RS256 signature with the account's public key, iat/exp, aud
            payload = gjwt.decode(assertion, certs=certs, audience=unverified["aud"])
        except ValueError as e:
            msg = str(e)
            if "signature" in msg or "Certificate" in msg:
                raise OAuthError(400, "invalid_grant", "Invalid JWT Signature.")
            raise OAuthError(400, "invalid_grant", "Invalid JWT: %s" % msg)
        if not isinstance(payload.get("iat"), int) or not isinstance(payload.get("exp"), int) or \
                payload["exp"] - payload["iat"] > 3600 or payload["exp"] <= payload["iat"]:
            raise OAuthError(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) "
                             "and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
        scope = payload.get("scope") or ""
        if not any(s in scope.split() for s in SCOPES_OK):
            raise OAuthError(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        return self.issue_token(email, scope)

    def bearer(self, handler):
        authz = handler.headers.get("Authorization") or ""
        if not authz:
            raise GcpError(401, UNAUTH_MISSING, headers=[("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')])
        tok = authz[7:].strip() if authz[:7].lower() == "bearer " else None
        rec = self.tokens.get(tok) if tok else None
        if not rec or rec["exp"] <= self.now() or not self.accounts.get(rec["email"], {}).get("enabled", False):
            raise GcpError(401, UNAUTH_INVALID, headers=[
                ("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/", error="invalid_token"')])
        return rec["email"]

    # ---------------------------------------------------------------- Cloud KMS
    def check_perm(self, email, action, name):
        d = self.accounts[email]["denied"]
        if "*" in d or PERMS[action] in d:
            raise GcpError(403, "Permission '%s' denied on resource '%s' (or it may not exist)." % (PERMS[action], name))

    def find_key(self, name):
        k = self.keys.get(name)
        if not k:
            raise GcpError(404, "%s not found." % name)
        return k

    def take_corrupt(self, field):
        if self.corrupt.get(field, 0) > 0:
            self.corrupt[field] -= 1
            return True
        return False

    def kms_encrypt(self, email, name, req):
        m = KEY_RE.match(name)
        if not m:
            raise GcpError(400, "Resource name [%s] does not represent a valid CryptoKey or CryptoKeyVersion." % name)
        key_name = name.split("/cryptoKeyVersions/")[0]
        self.check_perm(email, "encrypt", name)
        k = self.find_key(key_name)
        if k["purpose"] != "ENCRYPT_DECRYPT":
            raise GcpError(400, "%s has purpose %s, not ENCRYPT_DECRYPT." % (key_name, k["purpose"]),
                           "FAILED_PRECONDITION")
        ver = int(m.group(5)) if m.group(5) else k["primary"]
        v = k["versions"].get(ver)
        vname = "%s/cryptoKeyVersions/%d" % (key_name, ver)
        if v is None:
            raise GcpError(404, "%s not found." % vname)
        if v["state"] != "ENABLED":
            raise GcpError(400, "%s is not enabled, current state is: %s." % (vname, v["state"]), "FAILED_PRECONDITION")
        pt = b64field(req, "plaintext", True)
        aad = b64field(req, "additionalAuthenticatedData", False)
        if len(pt) > 65536:
            raise GcpError(400, "The request payload is too large.")
        verified = {}
        for field, data in (("plaintextCrc32c", pt), ("additionalAuthenticatedDataCrc32c", aad)):
            c = int64field(req, field)
            if c is not None:
                if c != crc32c(data):
                    raise GcpError(400, "The checksum in field %s did not match the data in field %s." % (
                        snake(field), snake(field[:-len("Crc32c")])))
                verified[field] = True
        nonce = os.urandom(12)
        hdr = MAGIC + len(vname).to_bytes(2, "big") + vname.encode()
        ct = hdr + nonce + AESGCM(v["material"]).encrypt(nonce, pt, hdr + aad)
        out = {"name": vname, "ciphertext": b64e(ct), "ciphertextCrc32c": str(crc32c(ct)),
               "verifiedPlaintextCrc32c": verified.get("plaintextCrc32c", False),
               "verifiedAdditionalAuthenticatedDataCrc32c": verified.get("additionalAuthenticatedDataCrc32c", False),
               "protectionLevel": "SOFTWARE"}
        if self.take_corrupt("ciphertextCrc32c"):
            out["ciphertextCrc32c"] = str(crc32c(ct) ^ 1)
        for f in ("verifiedPlaintextCrc32c", "verifiedAdditionalAuthenticatedDataCrc32c"):
            if self.take_corrupt(f):
                out[f] = False
        # proto3 JSON omits false booleans
        return {k2: v2 for k2, v2 in out.items() if v2 is not False}

    def kms_decrypt(self, email, name, req):
        if not KEY_RE.match(name) or "/cryptoKeyVersions/" in name:
            raise GcpError(400, "Resource name [%s] does not represent a valid CryptoKey." % name)
        self.check_perm(email, "decrypt", name)
        k = self.find_key(name)
        ct = b64field(req, "ciphertext", True)
        aad = b64field(req, "additionalAuthenticatedData", False)
        for field, data in (("ciphertextCrc32c", ct), ("additionalAuthenticatedDataCrc32c", aad)):
            c = int64field(req, field)
            if c is not None and c != crc32c(data):
                raise GcpError(400, "The checksum in field %s did not match the data in field %s." % (
                    snake(field), snake(field[:-len("Crc32c")])))
        if len(ct) < 6 + 12 + 16 or ct[:4] != MAGIC:
            raise GcpError(400, "Decryption failed: the ciphertext is invalid.")
        n = int.from_bytes(ct[4:6], "big")
        vname = ct[6:6 + n].decode("latin-1")
        hdr, rest = ct[:6 + n], ct[6 + n:]
        if vname.split("/cryptoKeyVersions/")[0] != name:
            raise GcpError(400, "Decryption failed: verify that 'name' refers to the correct CryptoKey.")
        try:
            ver = int(vname.split("/cryptoKeyVersions/")[1])
        except (IndexError, ValueError):
            raise GcpError(400, "Decryption failed: the ciphertext is invalid.")
        v = k["versions"].get(ver)
        if v is None:
            raise GcpError(400, "Decryption failed: the ciphertext is invalid.")
        if v["state"] != "ENABLED":
            raise GcpError(400, "%s is not enabled, current state is: %s." % (vname, v["state"]), "FAILED_PRECONDITION")
        try:
            pt = AESGCM(v["material"]).decrypt(rest[:12], rest[12:], hdr + aad)
        except InvalidTag:
            raise GcpError(400, "Decryption failed: the ciphertext is invalid.")
        crc = crc32c(pt)
        if self.take_corrupt("plaintextCrc32c"):
            crc ^= 1
        return {"plaintext": b64e(pt), "plaintextCrc32c": str(crc), "usedPrimary": ver == k["primary"],
                "protectionLevel": "SOFTWARE"}

    def kms_get(self, email, name):
        if not KEY_RE.match(name) or "/cryptoKeyVersions/" in name:
            raise GcpError(400, "Resource name [%s] does not represent a valid CryptoKey." % name)
        self.check_perm(email, "get", name)
        k = self.find_key(name)
        out = {"name": name, "purpose": k["purpose"],
               "createTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(k["created"])),
               "versionTemplate": {"protectionLevel": "SOFTWARE", "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"},
               "destroyScheduledDuration": "2592000s"}
        if k["primary"] and k["primary"] in k["versions"]:
            v = k["versions"][k["primary"]]
            out["primary"] = {"name": "%s/cryptoKeyVersions/%d" % (name, k["primary"]), "state": v["state"],
                              "protectionLevel": "SOFTWARE", "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION",
                              "generateTime": out["createTime"]}
        if k["rotation_period"]:
            out["rotationPeriod"] = k["rotation_period"]
            out["nextRotationTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
        return out

    # ---------------------------------------------------------------- HTTP entry (HTTPS listener)
    @staticmethod
    def action_name(method, path):
        if path == "/token":
            return "token"
        m = re.match(r"^/v1/(projects/[^:]+)(?::(encrypt|decrypt))?$", path)
        if m:
            return m.group(2) or ("get" if method == "GET" else "other")
        return "other"

    def handle(self, handler):
        t0 = time.time()
        body = handler.read_body()
        method = handler.command
        path, _, query = handler.path.partition("?")
        path = urllib.parse.unquote(path)
        action = self.action_name(method, path)
        entry = {"conn": handler.conn_id, "method": method, "path": handler.path, "action": action,
                 "headers": [[k, v] for k, v in handler.headers.items()], "time": t0}
        try:
            entry["body"] = json.loads(body) if body and action != "token" else body.decode("latin-1")
        except ValueError:
            entry["body"] = body.decode("latin-1")
        status, data, extra, fault = 200, None, [], None
        oauth = action == "token"
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
                    raise OAuthError(429, "rate_limit_exceeded", "Rate limit exceeded", [("Retry-After", "1")])
                raise GcpError(429, "Quota exceeded for quota metric 'Cryptographic requests' and limit "
                               "'Cryptographic requests per minute' of service 'cloudkms.googleapis.com'.",
                               headers=[("Retry-After", "1")])
            if fault == "error5xx":
                st = self.faults.status5xx
                if oauth:
                    raise OAuthError(st, "internal_failure", "Backend error")
                raise GcpError(st, "The service is currently unavailable." if st == 503 else "Internal error encountered.")
            with self.lock:
                if oauth:
                    if method != "POST":
                        raise OAuthError(405, "invalid_request", "Method not allowed")
                    ctype = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                    if ctype != "application/x-www-form-urlencoded":
                        raise OAuthError(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
                    form = dict(urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True))
                    data = self.token_grant(form)
                else:
                    email = self.bearer(handler)
                    entry["principal"] = email
                    m = re.match(r"^/v1/(projects/[^:]+)(?::([a-zA-Z]+))?$", path)
                    if not m:
                        raise GcpError(404, "The requested URL %s was not found on this server." % path)
                    name, verb = m.group(1), m.group(2)
                    req = {}
                    if method == "POST":
                        try:
                            req = json.loads(body or b"{}")
                        except ValueError as e:
                            raise GcpError(400, "Invalid JSON payload received. %s" % e)
                        if not isinstance(req, dict):
                            raise GcpError(400, "Invalid JSON payload received. Expected an object.")
                    if method == "POST" and verb == "encrypt":
                        data = self.kms_encrypt(email, name, req)
                    elif method == "POST" and verb == "decrypt":
                        data = self.kms_decrypt(email, name, req)
                    elif method == "GET" and verb is None:
                        data = self.kms_get(email, name)
                    else:
                        raise GcpError(404, "Method not found.")
        except GcpError as e:
            status, extra = e.code, e.headers
            data = {"error": {"code": e.code, "message": e.message, "status": e.status}}
            entry["error"] = e.status
        except OAuthError as e:
            status, extra = e.code, e.headers
            data = {"error": e.error, "error_description": e.description}
            entry["error"] = e.error
        except Exception as e:  # a bug in the fake
            import traceback
            traceback.print_exc()
            status, data = 500, {"error": {"code": 500, "message": "fake bug: %s" % e, "status": "INTERNAL"}}
        resp = json.dumps(data, indent=2).encode() + b"\n"
        ctype = "application/json; charset=UTF-8"
        if fault == "malformed" and status == 200:
            resp, ct2 = malformed_body(self.faults.malformed_mode, resp)
            ctype = ct2 or ctype
            entry["malformed"] = self.faults.malformed_mode
        entry["status"] = status
        self.stats.record(entry)
        hdrs = [("Content-Type", ctype), ("Vary", "Origin, X-Origin, Referer"), ("X-Content-Type-Options", "nosniff")]
        handler.send_raw(status, resp, hdrs + extra, close=fault == "close")


class GcpHandler(BaseHandler):
    server_version = "ESF"

    def do_GET(self):
        self.server.app.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


class MetadataHandler(BaseHandler):
    """GCE metadata server (plain HTTP): needs "Metadata-Flavor: Google", answers with it."""

    server_version = "Metadata Server for VM"

    def _reply(self, status, text, ctype="application/text"):
        app = self.server.app
        app.metadata_stats.record({"conn": self.conn_id, "method": self.command, "path": self.path,
                                   "action": self.path.partition("?")[0], "status": status,
                                   "headers": [[k, v] for k, v in self.headers.items()], "time": time.time()})
        self.send_raw(status, text, [("Content-Type", ctype), ("Metadata-Flavor", "Google")])

    def do_GET(self):
        app = self.server.app
        self.read_body()
        d = app.metadata_faults.latency(None)
        if d:
            time.sleep(d)
        f = app.metadata_faults.take(None)
        if f == "drop":
            app.metadata_stats.record({"conn": self.conn_id, "path": self.path, "status": "dropped"})
            return self.drop_connection()
        if f == "throttle":
            return self._reply(429, "Too many requests")
        if f == "error5xx":
            return self._reply(app.metadata_faults.status5xx, "Internal error")
        if self.headers.get("X-Forwarded-For"):
            return self._reply(403, "Request denied: X-Forwarded-For header present")
        if self.headers.get("Metadata-Flavor") != "Google":
            return self._reply(403, "Missing required header: Metadata-Flavor")
        path = self.path.partition("?")[0]
        if path in ("", "/"):
            return self._reply(200, "computeMetadata/\n")
        with app.lock:
            if not app.metadata_enabled:
                return self._reply(404, "Not Found")
            m = re.match(r"^/computeMetadata/v1/instance/service-accounts/([^/]+)/?(token|email)?$", path)
            if m and m.group(1) in ("default", app.metadata_email):
                if m.group(2) == "token":
                    body = json.dumps(app.issue_token(app.metadata_email, SCOPES_OK[1]))
                    if f == "malformed":
                        body = body[:len(body) // 2]
                    return self._reply(200, body, "application/json")
                if m.group(2) == "email":
                    return self._reply(200, app.metadata_email)
                return self._reply(200, json.dumps({"aliases": ["default"], "email": app.metadata_email,
                                                    "scopes": [SCOPES_OK[1]]}), "application/json")
            if path == "/computeMetadata/v1/project/project-id":
                return self._reply(200, app.project)
        return self._reply(404, "Not Found")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fakecommon.add_common_args(p)
    p.add_argument("--project", default="kmscrypt-test")
    p.add_argument("--metadata-port", type=int, default=0)
    p.add_argument("--metadata-portfile")
    p.add_argument("--token-ttl", type=int, default=3599)
    p.add_argument("--service-account-file", help="create a service account and write its JSON key file here")
    p.add_argument("--key", action="append", default=[],
                   help="create this key at start: projects/P/locations/L/keyRings/R/cryptoKeys/K")
    args = p.parse_args()
    app = GcpApp(args)
    srv = app.start_server(GcpHandler, args.port)
    app.port = srv.server_address[1]
    md = app.start_server(MetadataHandler, args.metadata_port, tls=False, stats=app.metadata_stats)
    ctl = app.start_control()
    for k in args.key:
        if k not in app.keys:
            app.op_create_key(name=k)
    if args.service_account_file:
        old = None
        if os.path.exists(args.service_account_file):
            with open(args.service_account_file) as f:
                old = json.load(f).get("client_email")
        if old in app.accounts and app.accounts[old]["private_pem"]:
            fakecommon.write_atomic(args.service_account_file, json.dumps(app.key_file(old), indent=2) + "\n")
        else:
            app.op_add_service_account(key_file=args.service_account_file)
    ports = {"port": app.port, "metadata": md.server_address[1], "control": ctl.server_address[1]}
    if args.metadata_portfile:
        fakecommon.write_atomic(args.metadata_portfile, "%d\n" % ports["metadata"])
    app.run(ports)


if __name__ == "__main__":
    main()
