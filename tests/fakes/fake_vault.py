#!/usr/bin/python3
"""Fake HashiCorp Vault (HTTPS): transit secrets engine, token auth, AppRole, seal state, namespaces,
plus a plain-HTTP control API.  Tests only; binds 127.0.0.1 only.

  /usr/bin/python3 tests/fakes/fake_vault.py --certs DIR --portfile F --control-portfile F \
      [--state F] [--root-token T]

See tests/fakes/README.md for the API surface and the control operations.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import string
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakecommon  # noqa: E402
from fakecommon import BaseHandler, FakeApp, malformed_body  # noqa: E402

from cryptography.exceptions import InvalidTag  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402

VERSION = "1.15.6"
DEFAULT_TTL = 768 * 3600           # Vault's default token TTL (32 days)
KEY_TYPES = {"aes256-gcm96": 32, "aes128-gcm96": 16, "chacha20-poly1305": 32}
ERR_DENIED = "1 error occurred:\n\t* permission denied\n\n"
ERR_BAD_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
ERR_TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
ERR_DERIVED = ("missing 'context' for key derivation; the key was created using a derived key, which means "
               "additional, per-request information must be included in order to perform operations with the key")
B62 = string.ascii_letters + string.digits

DEFAULT_POLICY = {
    "auth/token/lookup-self": ["read"],
    "auth/token/renew-self": ["update"],
    "auth/token/revoke-self": ["update"],
    "sys/capabilities-self": ["update"],
}


class VaultError(Exception):
    def __init__(self, status, errors, headers=()):
        super().__init__(status)
        self.status = status
        self.errors = errors if isinstance(errors, list) else [errors]
        self.headers = list(headers)


def bad(msg):
    return VaultError(400, msg)


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


def rand62(n):
    return "".join(secrets.choice(B62) for _ in range(n))


def parse_duration(v, name):
    """Vault TypeDurationSecond: integer seconds or a Go duration string ("1h30m", "90s")."""
    if v is None or v == "":
        return 0
    if isinstance(v, bool):
        raise bad("error converting input %r for field \"%s\"" % (v, name))
    if isinstance(v, (int, float)):
        return int(v)
    s = str(v).strip()
    if re.fullmatch(r"\d+", s):
        return int(s)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h|d)", s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
                                      "d": 86400}[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise bad("error converting input %s for field \"%s\": time: invalid duration \"%s\"" % (s, name, s))
    return int(total)


def parse_bool(v, name, default=False):
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "1", "t"):
        return True
    if isinstance(v, str) and v.lower() in ("false", "0", "f", ""):
        return False
    if isinstance(v, int):
        return v != 0
    raise bad("error converting input %r for field \"%s\"" % (v, name))


def parse_int(v, name, default=0):
    if v is None or v == "":
        return default
    try:
        if isinstance(v, bool):
            raise ValueError
        return int(v)
    except (TypeError, ValueError):
        raise bad("error converting input %s for field \"%s\": strconv.ParseInt: parsing \"%s\": invalid syntax"
                  % (v, name, v))


def comma_list(v):
    if v is None:
        return []
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    return [str(p) for p in v]


def b64decode_field(v, name):
    if not isinstance(v, str):
        raise bad("'%s' expected type 'string', got unconvertible type '%s'" % (name, type(v).__name__))
    try:
        return base64.b64decode(v, validate=True)
    except (ValueError, TypeError):
        raise bad("illegal base64 data at input byte %d" % _first_bad_b64(v))


def _first_bad_b64(s):
    for i, c in enumerate(s):
        if c not in string.ascii_letters + string.digits + "+/=":
            return i
    return max(0, len(s) - 1)


class VaultApp(FakeApp):
    name = "vault"

    def __init__(self, args):
        super().__init__(args)
        self.sealed = False
        self.root_token = args.root_token
        self.ns = {}          # namespace path ("" = root) -> {mounts, policies, approles, tokens}
        st = self.load_state_file()
        if st:
            self._load(st)
        self.namespace("")
        self.ns[""]["tokens"].setdefault(self.root_token, self._token_record(["root"], 0, "", "auth/token/root",
                                                                            display="root"))
        self.save_state()

    # ---------------------------------------------------------------- state
    def namespace(self, name, create=True):
        name = (name or "").strip("/")
        if name not in self.ns:
            if not create:
                return None
            self.ns[name] = {"mounts": {"transit": {"type": "transit", "keys": {}}},
                             "policies": {}, "approles": {}, "tokens": {}}
        return self.ns[name]

    def _load(self, st):
        self.sealed = bool(st.get("sealed", False))
        self.root_token = st.get("root_token", self.root_token)
        for name, n in (st.get("namespaces") or {}).items():
            d = self.namespace(name)
            for m, mv in (n.get("mounts") or {}).items():
                keys = {}
                for kn, kv in (mv.get("keys") or {}).items():
                    kv = dict(kv)
                    kv["versions"] = {int(v): dict(e, key=base64.b64decode(e["key"]))
                                      for v, e in kv["versions"].items()}
                    keys[kn] = kv
                d["mounts"][m] = {"type": mv.get("type", "transit"), "keys": keys}
            d["policies"].update(n.get("policies") or {})
            d["approles"].update(n.get("approles") or {})
            d["tokens"].update(n.get("tokens") or {})

    def dump_state(self, secret=False):
        with self.lock:
            out = {"sealed": self.sealed, "root_token": self.root_token, "version": VERSION, "namespaces": {}}
            for name, n in self.ns.items():
                mounts = {}
                for m, mv in n["mounts"].items():
                    keys = {}
                    for kn, k in mv["keys"].items():
                        kd = {kk: vv for kk, vv in k.items() if kk != "versions"}
                        kd["versions"] = {str(v): {"time": e["time"], **({"key": base64.b64encode(e["key"]).decode()}
                                                                          if secret else {})}
                                          for v, e in k["versions"].items()}
                        keys[kn] = kd
                    mounts[m] = {"type": mv["type"], "keys": keys}
                out["namespaces"][name] = {"mounts": mounts, "policies": n["policies"], "approles": n["approles"],
                                           "tokens": n["tokens"]}
            return out

    def _token_record(self, policies, ttl, ns, path, display="token", meta=None, num_uses=0, renewable=None,
                      max_ttl=0):
        now = self.now()
        return {"policies": sorted(set(policies)), "creation": now, "ttl": ttl,
                "expire": now + ttl if ttl else None, "accessor": rand62(24), "namespace": ns, "path": path,
                "display_name": display, "meta": meta, "num_uses": num_uses,
                "renewable": bool(ttl) if renewable is None else renewable, "max_ttl": max_ttl,
                "entity_id": "" if "root" in policies else str(uuid.uuid4())}

    def issue_token(self, ns, policies, ttl, path, **kw):
        tok = "hvs." + rand62(24)
        self.namespace(ns)["tokens"][tok] = self._token_record(policies, ttl, ns, path, **kw)
        return tok

    def find_token(self, tok):
        """-> (namespace name, record) for a live token, else None (expired tokens are removed)."""
        for name, n in self.ns.items():
            rec = n["tokens"].get(tok)
            if rec is not None:
                if rec["expire"] is not None and rec["expire"] <= self.now():
                    del n["tokens"][tok]
                    return None
                return name, rec
        return None

    def auth_block(self, tok, rec, metadata=None):
        return {"client_token": tok, "accessor": rec["accessor"], "policies": rec["policies"],
                "token_policies": rec["policies"], "metadata": metadata if metadata is not None else rec["meta"],
                "lease_duration": rec["ttl"], "renewable": rec["renewable"], "entity_id": rec["entity_id"],
                "token_type": "service", "orphan": True, "mfa_requirement": None, "num_uses": rec["num_uses"]}

    # ---------------------------------------------------------------- ACL
    @staticmethod
    def _glob(pattern, path):
        if pattern.endswith("*"):
            pre = pattern[:-1]
            segs = pre.split("/")
            psegs = path.split("/")
            if len(psegs) < len(segs) - 1:
                return False
            return all(a == "+" or a == b for a, b in zip(segs[:-1], psegs)) and \
                "/".join(psegs[len(segs) - 1:]).startswith(segs[-1])
        segs, psegs = pattern.split("/"), path.split("/")
        return len(segs) == len(psegs) and all(a == "+" or a == b for a, b in zip(segs, psegs))

    def allowed(self, ns, rec, path, cap):
        if "root" in rec["policies"]:
            return True
        caps = set()
        for pname in rec["policies"]:
            rules = DEFAULT_POLICY if pname == "default" else \
                (self.ns[ns]["policies"].get(pname) or {}).get("path", {})
            for pat, rule in rules.items():
                if self._glob(pat, path):
                    c = rule if isinstance(rule, list) else rule.get("capabilities", [])
                    caps.update(c)
        if "deny" in caps:
            return False
        return cap in caps

    # ---------------------------------------------------------------- control ops
    def op_seal(self):
        self.sealed = True
        self.save_state()

    def op_unseal(self):
        self.sealed = False
        self.save_state()

    def op_create_namespace(self, name):
        with self.lock:
            self.namespace(name)
            self.save_state()

    def op_create_token(self, policies=("default",), ttl=DEFAULT_TTL, namespace="", num_uses=0, renewable=None):
        with self.lock:
            policies = list(policies) if "root" in policies else ["default"] + list(policies)
            tok = self.issue_token(namespace, policies, parse_duration(ttl, "ttl"), "auth/token/create",
                                   num_uses=num_uses, renewable=renewable)
            self.save_state()
            return {"token": tok}

    def op_revoke_token(self, token):
        with self.lock:
            for n in self.ns.values():
                n["tokens"].pop(token, None)
            self.save_state()

    def op_expire_tokens(self, token=None, include_root=False):
        """Expire one token, or every token (except the root token unless include_root)."""
        with self.lock:
            now = self.now()
            for n in self.ns.values():
                for t, rec in n["tokens"].items():
                    if (token is None and (include_root or t != self.root_token)) or t == token:
                        rec["expire"] = now - 1
            self.save_state()

    def op_set_policy(self, name, rules, namespace=""):
        """rules: {"path/glob*": ["update", ...]} or Vault's {"path": {...: {"capabilities": [...]}}}."""
        with self.lock:
            if "path" not in rules:
                rules = {"path": {p: {"capabilities": c} for p, c in rules.items()}}
            self.namespace(namespace)["policies"][name] = rules
            self.save_state()

    def op_create_key(self, name, mount="transit", type="aes256-gcm96", derived=False, namespace="",
                      exportable=False):
        with self.lock:
            m = self._mount(namespace, mount, create=True)
            if name not in m["keys"]:
                m["keys"][name] = self._new_key(name, type, derived)
            self.save_state()
            return self.key_info(name, m["keys"][name])

    def op_rotate_key(self, name, mount="transit", namespace=""):
        with self.lock:
            k = self._mount(namespace, mount)["keys"][name]
            self._rotate(k)
            self.save_state()
            return self.key_info(name, k)

    def op_key_config(self, name, mount="transit", namespace="", **cfg):
        with self.lock:
            k = self._mount(namespace, mount)["keys"][name]
            self._configure_key(name, k, cfg)
            self.save_state()
            return self.key_info(name, k)

    def op_create_approle(self, name, policies=("default",), token_ttl=None, namespace="", secret_id_num_uses=0,
                          token_num_uses=0):
        with self.lock:
            roles = self.namespace(namespace)["approles"]
            role = roles.setdefault(name, self._new_role())
            role["token_policies"] = comma_list(policies)
            if token_ttl is not None:
                role["token_ttl"] = parse_duration(token_ttl, "token_ttl")
            role["secret_id_num_uses"] = secret_id_num_uses
            role["token_num_uses"] = token_num_uses
            sid = self._new_secret_id(role)
            self.save_state()
            return {"role_id": role["role_id"], "secret_id": sid}

    def op_revoke_secret_ids(self, name, namespace=""):
        with self.lock:
            self.namespace(namespace)["approles"][name]["secret_ids"] = {}
            self.save_state()

    # ---------------------------------------------------------------- transit keys
    def _mount(self, ns, mount, create=False):
        n = self.namespace(ns)
        m = n["mounts"].get(mount)
        if m is None and create:
            m = n["mounts"][mount] = {"type": "transit", "keys": {}}
        if m is None:
            raise KeyError(mount)
        return m

    def _new_key(self, name, ktype, derived, convergent=False, exportable=False):
        if ktype not in KEY_TYPES:
            raise bad("unknown key type: %s" % ktype)
        now = int(time.time())
        return {"type": ktype, "derived": bool(derived), "convergent_encryption": bool(convergent),
                "exportable": bool(exportable), "deletion_allowed": False, "latest_version": 1,
                "min_decryption_version": 1, "min_encryption_version": 0, "min_available_version": 0,
                "auto_rotate_period": 0,
                "versions": {1: {"key": os.urandom(KEY_TYPES[ktype]), "time": now}}}

    @staticmethod
    def _rotate(k):
        v = k["latest_version"] + 1
        k["versions"][v] = {"key": os.urandom(KEY_TYPES[k["type"]]), "time": int(time.time())}
        k["latest_version"] = v

    @staticmethod
    def _configure_key(name, k, cfg):
        mdv = cfg.get("min_decryption_version")
        mev = cfg.get("min_encryption_version")
        if mdv is not None:
            mdv = parse_int(mdv, "min_decryption_version")
            if mdv <= 0:
                mdv = 1
            if mdv > k["latest_version"]:
                raise bad("cannot set min decryption version of %d, latest key version is %d"
                          % (mdv, k["latest_version"]))
        if mev is not None:
            mev = parse_int(mev, "min_encryption_version")
            if mev > k["latest_version"]:
                raise bad("cannot set min encryption version of %d, latest key version is %d"
                          % (mev, k["latest_version"]))
        new_mdv = mdv if mdv is not None else k["min_decryption_version"]
        new_mev = mev if mev is not None else k["min_encryption_version"]
        if new_mev > 0 and new_mev < new_mdv:
            raise bad("min encryption version should not be less than min decryption version")
        k["min_decryption_version"], k["min_encryption_version"] = new_mdv, new_mev
        if "deletion_allowed" in cfg:
            k["deletion_allowed"] = parse_bool(cfg["deletion_allowed"], "deletion_allowed")
        if "exportable" in cfg and parse_bool(cfg["exportable"], "exportable"):
            k["exportable"] = True
        if "auto_rotate_period" in cfg:
            k["auto_rotate_period"] = parse_duration(cfg["auto_rotate_period"], "auto_rotate_period")

    def key_info(self, name, k):
        d = {"allow_plaintext_backup": False, "auto_rotate_period": k["auto_rotate_period"],
             "deletion_allowed": k["deletion_allowed"], "derived": k["derived"], "exportable": k["exportable"],
             "imported_key": False, "keys": {str(v): e["time"] for v, e in sorted(k["versions"].items())
                                             if v >= k["min_decryption_version"]},
             "latest_version": k["latest_version"], "min_available_version": k["min_available_version"],
             "min_decryption_version": k["min_decryption_version"],
             "min_encryption_version": k["min_encryption_version"], "name": name, "supports_decryption": True,
             "supports_derivation": True, "supports_encryption": True, "supports_signing": False,
             "type": k["type"]}
        if k["derived"]:
            d["kdf"] = "hkdf_sha256"
            d["convergent_encryption"] = k["convergent_encryption"]
        return d

    @staticmethod
    def _aead(k, ver, context):
        raw = k["versions"][ver]["key"]
        if k["derived"]:
            raw = HKDF(algorithm=hashes.SHA256(), length=len(raw), salt=None, info=context).derive(raw)
        return ChaCha20Poly1305(raw) if k["type"] == "chacha20-poly1305" else AESGCM(raw)

    def encrypt_one(self, k, item):
        if "plaintext" not in item or item["plaintext"] is None:
            raise bad("missing plaintext to encrypt")
        pt = b64decode_field(item["plaintext"], "plaintext")
        context = self._context(k, item)
        aad = b64decode_field(item["associated_data"], "associated_data") if item.get("associated_data") else None
        ver = parse_int(item.get("key_version"), "key_version")
        if ver == 0:
            ver = k["latest_version"]
        elif ver < 0:
            raise bad("requested version for encryption is negative")
        elif ver > k["latest_version"]:
            raise bad("requested version for encryption is higher than the latest key version")
        if k["min_encryption_version"] > 0 and ver < k["min_encryption_version"]:
            raise bad("requested version for encryption is less than the minimum encryption key version")
        if k["convergent_encryption"]:
            nonce = hmac.new(k["versions"][ver]["key"], context + pt, hashlib.sha256).digest()[:12]
        else:
            nonce = os.urandom(12)
        ct = self._aead(k, ver, context).encrypt(nonce, pt, aad)
        return "vault:v%d:%s" % (ver, base64.b64encode(nonce + ct).decode()), ver

    def _context(self, k, item):
        ctx = item.get("context")
        if k["derived"]:
            if not ctx:
                raise bad(ERR_DERIVED)
            return b64decode_field(ctx, "context")
        return b""

    def decrypt_one(self, k, item):
        value = item.get("ciphertext")
        if not value:
            raise bad("missing ciphertext to decrypt")
        if not isinstance(value, str) or not value.startswith("vault:v"):
            raise bad("invalid ciphertext: no prefix")
        parts = value[len("vault:v"):].split(":", 1)
        if len(parts) != 2:
            raise bad("invalid ciphertext: wrong number of fields")
        try:
            ver = int(parts[0])
        except ValueError:
            raise bad("invalid ciphertext: version number could not be decoded")
        ver = ver or 1
        if ver > k["latest_version"]:
            raise bad("invalid ciphertext: version is too new")
        if k["min_decryption_version"] > 0 and ver < k["min_decryption_version"]:
            raise bad(ERR_TOO_OLD)
        context = self._context(k, item)
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (ValueError, TypeError):
            raise bad("invalid ciphertext: could not decode base64")
        aad = b64decode_field(item["associated_data"], "associated_data") if item.get("associated_data") else None
        if len(blob) < 12 + 16:
            raise bad("invalid ciphertext length: too short")
        try:
            pt = self._aead(k, ver, context).decrypt(blob[:12], blob[12:], aad)
        except InvalidTag:
            raise bad("cipher: message authentication failed")
        return base64.b64encode(pt).decode(), ver

    @staticmethod
    def _new_role():
        return {"role_id": str(uuid.uuid4()), "secret_ids": {}, "token_policies": ["default"],
                "token_ttl": 0, "token_max_ttl": 0, "bind_secret_id": True, "secret_id_num_uses": 0,
                "secret_id_ttl": 0, "token_num_uses": 0}

    def _new_secret_id(self, role, custom=None, meta=None):
        sid = custom or str(uuid.uuid4())
        role["secret_ids"][sid] = {"accessor": str(uuid.uuid4()), "uses_left": role["secret_id_num_uses"],
                                   "expire": self.now() + role["secret_id_ttl"] if role["secret_id_ttl"] else None,
                                   "metadata": meta or {}}
        return sid

    # ---------------------------------------------------------------- HTTP entry
    def handle(self, handler):
        t0 = time.time()
        body = handler.read_body()
        method = handler.command
        raw_path, _, query = handler.path.partition("?")
        if method == "GET" and "list=true" in query.split("&"):
            method = "LIST"
        path = raw_path[len("/v1/"):] if raw_path.startswith("/v1/") else None
        ns_name = (handler.headers.get("X-Vault-Namespace") or "").strip("/")
        token = handler.headers.get("X-Vault-Token")
        authz = handler.headers.get("Authorization") or ""
        if token is None and authz.lower().startswith("bearer "):
            token = authz[7:].strip()
        entry = {"conn": handler.conn_id, "method": method, "path": handler.path, "namespace": ns_name,
                 "headers": [[k, v] for k, v in handler.headers.items()], "time": t0}
        try:
            entry["body"] = json.loads(body) if body else None
        except ValueError:
            entry["body"] = body.decode("latin-1")
        action = self.action_name(path or "")
        entry["action"] = action
        status, data, extra_headers, fault = 200, None, [], None
        try:
            if path is None:
                raise VaultError(404, [])
            req = {}
            if body.strip():
                try:
                    req = json.loads(body)
                except ValueError as e:
                    raise bad("failed to parse JSON input: %s" % e)
                if not isinstance(req, dict):
                    raise bad("failed to parse JSON input: request body must be a JSON object")
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
                raise VaultError(429, 'request path "%s": rate limit quota exceeded' % path,
                                 [("Retry-After", "1")])
            if fault == "error5xx":
                st = self.faults.status5xx
                raise VaultError(st, "internal error" if st == 500 else
                                 ("Vault is sealed" if st == 503 else "upstream error"))
            with self.lock:
                entry["query"] = query
                status, data = self.route(method, path, ns_name, token, req, entry)
        except VaultError as e:
            status, data, extra_headers = e.status, {"errors": e.errors}, e.headers
            entry["errors"] = e.errors
        except Exception as e:  # a bug in the fake
            import traceback
            traceback.print_exc()
            status, data = 500, {"errors": ["1 error occurred:\n\t* internal error (fake bug: %s)\n\n" % e]}
        if status == 204:
            resp = b""
        else:
            resp = json.dumps(data).encode() + b"\n"
        ctype = "application/json"
        if fault == "malformed" and status in (200, 204):
            resp, ct2 = malformed_body(self.faults.malformed_mode, resp or b'{"data":{}}')
            ctype = ct2 or ctype
            status = 200
            entry["malformed"] = self.faults.malformed_mode
        entry["status"] = status
        self.stats.record(entry)
        hdrs = [("Cache-Control", "no-store"), ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")]
        if status != 204:
            hdrs.append(("Content-Type", ctype))
        handler.send_raw(status, resp, hdrs + extra_headers, close=fault == "close")

    @staticmethod
    def action_name(path):
        p = path.strip("/").split("/")
        if p[:2] == ["sys", "health"] or p[:2] == ["sys", "seal-status"]:
            return "sys." + p[1]
        if p[0] == "sys":
            return "sys." + "/".join(p[1:2])
        if p[:2] == ["auth", "token"]:
            return "token." + "/".join(p[2:3])
        if p[:2] == ["auth", "approle"]:
            return "approle." + ("login" if p[2:3] == ["login"] else "role")
        if len(p) >= 2 and p[1] in ("encrypt", "decrypt", "rewrap", "datakey"):
            return "transit." + p[1]
        if len(p) >= 2 and p[1] == "keys":
            return "transit.keys" + ("." + p[3] if len(p) > 3 else "")
        return path

    def respond(self, data=None, auth=None, warnings=None, mount_type=None):
        return 200, {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": 0,
                     "data": data, "wrap_info": None, "warnings": warnings, "auth": auth,
                     "mount_type": mount_type or ""}

    def route(self, method, path, ns_name, token, req, entry):
        path = path.strip("/")
        write = method in ("POST", "PUT")
        # unauthenticated system endpoints
        if path == "sys/health" and method in ("GET", "HEAD"):
            q = dict(p.partition("=")[::2] for p in entry.get("query", "").split("&") if p)
            try:
                st = int(q.get("sealedcode", 503)) if self.sealed else int(q.get("activecode", 200))
            except ValueError:
                raise bad("invalid status code in query")
            return st, {"initialized": True, "sealed": self.sealed, "standby": self.sealed,
                        "performance_standby": False, "replication_performance_mode": "disabled",
                        "replication_dr_mode": "disabled", "server_time_utc": int(self.now()),
                        "version": VERSION, "cluster_name": "vault-cluster-fake", "cluster_id": "fake-cluster"}
        if path == "sys/seal-status" and method == "GET":
            return 200, self.seal_status()
        if path == "sys/unseal" and write:
            self.sealed = False
            self.save_state()
            return 200, self.seal_status()
        if self.sealed:
            raise VaultError(503, "Vault is sealed")
        ns = self.namespace(ns_name, create=False)
        if ns is None:
            # Unknown namespace: no route can serve it.
            raise VaultError(404, "no handler for route \"%s\". route entry not found." % path)
        if path == "auth/approle/login" and write:
            return self.approle_login(ns_name, ns, req)
        # everything else needs a token
        if not token:
            raise VaultError(403, "permission denied")
        found = self.find_token(token)
        if found is None or (found[0] != ns_name and found[0] != ""):
            raise VaultError(403, ERR_BAD_TOKEN)
        tok_ns, rec = found
        entry["token_accessor"] = rec["accessor"]

        def need(cap, p=path):
            # policies are those of the token's own namespace
            if not self.allowed(tok_ns, rec, p, cap):
                raise VaultError(403, ERR_DENIED)

        def use_token():
            if rec["num_uses"]:
                rec["num_uses"] -= 1
                if rec["num_uses"] == 0:
                    self.namespace(tok_ns)["tokens"].pop(token, None)

        cap = {"GET": "read", "LIST": "list", "DELETE": "delete", "POST": "update", "PUT": "update"}.get(method)
        if cap is None:
            raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")
        p = path.split("/")
        # ---- token auth method
        if p[:2] == ["auth", "token"]:
            need(cap)
            use_token()
            return self.token_api(p[2:], method, ns_name, tok_ns, token, rec, req)
        if p[:3] == ["auth", "approle", "role"]:
            need(cap)
            use_token()
            return self.approle_admin(p[3:], method, ns, req)
        if p[0] == "sys":
            if p[:2] == ["sys", "seal"] and write:
                need("sudo")
                self.sealed = True
                self.save_state()
                return 204, None
            if p[:2] == ["sys", "mounts"]:
                need(cap)
                if len(p) == 2 and method == "GET":
                    return self.respond({m + "/": {"type": v["type"]} for m, v in ns["mounts"].items()})
                mname = "/".join(p[2:])
                if write:
                    if req.get("type") != "transit":
                        raise bad("this fake only mounts the transit secrets engine")
                    if mname in ns["mounts"]:
                        raise bad("path is already in use at %s/" % mname)
                    ns["mounts"][mname] = {"type": "transit", "keys": {}}
                    self.save_state()
                    return 204, None
                if method == "DELETE":
                    ns["mounts"].pop(mname, None)
                    self.save_state()
                    return 204, None
            if p[:2] == ["sys", "policy"] or p[:3] == ["sys", "policies", "acl"]:
                need(cap)
                name = p[-1]
                if write:
                    rules = req.get("policy")
                    if isinstance(rules, str):
                        rules = json.loads(rules)  # HCL is not parsed by this fake; JSON policies only
                    ns["policies"][name] = rules
                    self.save_state()
                    return 204, None
            raise VaultError(404, "no handler for route \"%s\". route entry not found." % path)
        # ---- transit mounts (longest mount prefix)
        mount = None
        for m in sorted(ns["mounts"], key=len, reverse=True):
            if path == m or path.startswith(m + "/"):
                mount = m
                break
        if mount is None:
            raise VaultError(404, "no handler for route \"%s\". route entry not found." % path)
        sub = path[len(mount) + 1:].split("/") if path != mount else [""]
        keys = ns["mounts"][mount]["keys"]
        # existence check: writing to a missing key's encrypt path needs "create"
        if sub[0] == "encrypt" and len(sub) == 2 and write and sub[1] not in keys:
            need("create")
        elif sub[0] == "keys" and len(sub) == 2 and write and sub[1] not in keys:
            need("create")
        else:
            need(cap)
        use_token()
        return self.transit(ns_name, mount, keys, sub, method, req)

    def seal_status(self):
        return {"type": "shamir", "initialized": True, "sealed": self.sealed, "t": 1, "n": 1, "progress": 0,
                "nonce": "", "version": VERSION, "build_date": "2024-01-01T00:00:00Z", "migration": False,
                "recovery_seal": False, "storage_type": "inmem",
                **({} if self.sealed else {"cluster_name": "vault-cluster-fake", "cluster_id": "fake-cluster"})}

    # ---------------------------------------------------------------- auth APIs
    def approle_login(self, ns_name, ns, req):
        role_id = req.get("role_id")
        if not role_id:
            raise bad("missing role_id")
        role_name, role = None, None
        for n, r in ns["approles"].items():
            if r["role_id"] == role_id:
                role_name, role = n, r
        if role is None:
            raise bad("invalid role or secret ID")
        meta = {"role_name": role_name}
        if role["bind_secret_id"]:
            sid = req.get("secret_id")
            if not sid:
                raise bad("missing secret_id")
            s = role["secret_ids"].get(sid)
            if s is None or (s["expire"] is not None and s["expire"] <= self.now()):
                raise bad("invalid role or secret ID")
            if s["uses_left"]:
                s["uses_left"] -= 1
                if s["uses_left"] == 0:
                    del role["secret_ids"][sid]
            meta.update(s.get("metadata") or {})
        ttl = role["token_ttl"] or DEFAULT_TTL
        tok = self.issue_token(ns_name, ["default"] + role["token_policies"], ttl, "auth/approle/login",
                               display="approle", meta=meta, num_uses=role.get("token_num_uses", 0),
                               max_ttl=role["token_max_ttl"])
        self.save_state()
        rec = ns["tokens"][tok]
        return self.respond(None, auth=self.auth_block(tok, rec, meta))

    def approle_admin(self, p, method, ns, req):
        if not p or not p[0]:
            if method == "LIST":
                if not ns["approles"]:
                    raise VaultError(404, [])
                return self.respond({"keys": sorted(ns["approles"])})
            raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")
        name = p[0]
        role = ns["approles"].get(name)
        if len(p) == 1:
            if method in ("POST", "PUT"):
                if role is None:
                    role = ns["approles"][name] = self._new_role()
                if "token_policies" in req or "policies" in req:
                    role["token_policies"] = comma_list(req.get("token_policies", req.get("policies")))
                for f in ("token_ttl", "token_max_ttl", "secret_id_ttl"):
                    if f in req:
                        role[f] = parse_duration(req[f], f)
                for f in ("secret_id_num_uses", "token_num_uses"):
                    if f in req:
                        role[f] = parse_int(req[f], f)
                if "bind_secret_id" in req:
                    role["bind_secret_id"] = parse_bool(req["bind_secret_id"], "bind_secret_id", True)
                self.save_state()
                return 204, None
            if role is None:
                raise VaultError(404, [])
            if method == "GET":
                return self.respond({k: v for k, v in role.items() if k not in ("secret_ids", "role_id")})
            if method == "DELETE":
                del ns["approles"][name]
                self.save_state()
                return 204, None
        if role is None:
            raise bad("role \"%s\" does not exist" % name)
        if p[1:] == ["role-id"]:
            if method == "GET":
                return self.respond({"role_id": role["role_id"]})
            if method in ("POST", "PUT"):
                role["role_id"] = req.get("role_id") or role["role_id"]
                self.save_state()
                return 204, None
        if p[1:] in (["secret-id"], ["custom-secret-id"]) and method in ("POST", "PUT"):
            meta = req.get("metadata")
            if isinstance(meta, str) and meta:
                meta = json.loads(meta)
            sid = self._new_secret_id(role, req.get("secret_id") if p[1] == "custom-secret-id" else None, meta)
            self.save_state()
            s = role["secret_ids"][sid]
            return self.respond({"secret_id": sid, "secret_id_accessor": s["accessor"],
                                 "secret_id_ttl": role["secret_id_ttl"],
                                 "secret_id_num_uses": role["secret_id_num_uses"]})
        if p[1:] == ["secret-id", "destroy"] and method in ("POST", "PUT", "DELETE"):
            role["secret_ids"].pop(req.get("secret_id"), None)
            self.save_state()
            return 204, None
        raise VaultError(404, "no handler for route \"auth/approle/role/%s\". route entry not found."
                         % "/".join(p))

    def token_lookup_data(self, tok, rec):
        now = self.now()
        return {"accessor": rec["accessor"], "creation_time": int(rec["creation"]), "creation_ttl": rec["ttl"],
                "display_name": rec["display_name"], "entity_id": rec["entity_id"],
                "expire_time": rfc3339(rec["expire"]) if rec["expire"] else None, "explicit_max_ttl": 0,
                "id": tok, "issue_time": rfc3339(rec["creation"]), "meta": rec["meta"],
                "num_uses": rec["num_uses"], "orphan": True, "path": rec["path"], "policies": rec["policies"],
                "renewable": rec["renewable"], "ttl": max(0, int(rec["expire"] - now)) if rec["expire"] else 0,
                "type": "service", "namespace_path": (rec["namespace"] + "/") if rec["namespace"] else ""}

    def token_api(self, p, method, ns_name, tok_ns, token, rec, req):
        op = p[0] if p else ""
        write = method in ("POST", "PUT")
        if op == "lookup-self" and method in ("GET", "POST", "PUT"):
            return self.respond(self.token_lookup_data(token, rec))
        if op == "lookup" and write:
            t = req.get("token")
            f = self.find_token(t) if t else None
            if f is None:
                raise bad("bad token")
            return self.respond(self.token_lookup_data(t, f[1]))
        if op == "renew-self" and write:
            if not rec["renewable"]:
                raise bad("lease is not renewable")
            inc = parse_duration(req.get("increment"), "increment") or rec["ttl"] or DEFAULT_TTL
            if rec["max_ttl"]:
                inc = min(inc, int(rec["creation"] + rec["max_ttl"] - self.now()))
            rec["expire"] = self.now() + inc
            rec["ttl"] = inc
            self.save_state()
            return self.respond(None, auth=self.auth_block(token, rec))
        if op == "revoke-self" and write:
            self.namespace(tok_ns)["tokens"].pop(token, None)
            self.save_state()
            return 204, None
        if op == "revoke" and write:
            t = req.get("token")
            for n in self.ns.values():
                n["tokens"].pop(t, None)
            self.save_state()
            return 204, None
        if op == "create" and write:
            policies = comma_list(req.get("policies")) or list(rec["policies"])
            if "root" in policies and "root" not in rec["policies"]:
                raise bad("root tokens may not be created without parent token being root")
            if not parse_bool(req.get("no_default_policy"), "no_default_policy") and "root" not in policies:
                policies = ["default"] + policies
            ttl = parse_duration(req.get("ttl"), "ttl") or (0 if "root" in policies else DEFAULT_TTL)
            tok = self.issue_token(ns_name, policies, ttl, "auth/token/create",
                                   display="token" + ("-" + req["display_name"] if req.get("display_name") else ""),
                                   meta=req.get("meta"), num_uses=parse_int(req.get("num_uses"), "num_uses"),
                                   renewable=parse_bool(req.get("renewable"), "renewable", True) if ttl else False,
                                   max_ttl=parse_duration(req.get("explicit_max_ttl"), "explicit_max_ttl"))
            if req.get("id"):
                n = self.namespace(ns_name)
                n["tokens"][req["id"]] = n["tokens"].pop(tok)
                tok = req["id"]
            self.save_state()
            return self.respond(None, auth=self.auth_block(tok, self.namespace(ns_name)["tokens"][tok]))
        raise VaultError(404, "no handler for route \"auth/token/%s\". route entry not found." % "/".join(p))

    # ---------------------------------------------------------------- transit API
    def transit(self, ns_name, mount, keys, sub, method, req):
        write = method in ("POST", "PUT")
        op = sub[0]
        mt = "transit"
        if op == "keys":
            if len(sub) == 1 or sub[1] == "":
                if method == "LIST":
                    if not keys:
                        raise VaultError(404, [])
                    return self.respond({"keys": sorted(keys)}, mount_type=mt)
                raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")
            name = sub[1]
            k = keys.get(name)
            if len(sub) == 2:
                if write:
                    if k is None:
                        ktype = req.get("type") or "aes256-gcm96"
                        if ktype not in KEY_TYPES:
                            raise bad("unknown key type: %s" % ktype)
                        derived = parse_bool(req.get("derived"), "derived")
                        conv = parse_bool(req.get("convergent_encryption"), "convergent_encryption")
                        if conv and not derived:
                            raise bad("convergent encryption requires derivation to be enabled")
                        k = keys[name] = self._new_key(name, ktype, derived, conv,
                                                       parse_bool(req.get("exportable"), "exportable"))
                        self.save_state()
                    return self.respond(self.key_info(name, k), mount_type=mt)
                if method == "GET":
                    if k is None:
                        raise VaultError(404, [])
                    return self.respond(self.key_info(name, k), mount_type=mt)
                if method == "DELETE":
                    if k is None:
                        return 204, None
                    if not k["deletion_allowed"]:
                        raise bad("error deleting policy %s: deletion is not allowed for this key" % name)
                    del keys[name]
                    self.save_state()
                    return 204, None
            if k is None:
                raise bad("no existing key named %s could be found" % name)
            if sub[2:] == ["rotate"] and write:
                self._rotate(k)
                self.save_state()
                return self.respond(self.key_info(name, k), mount_type=mt)
            if sub[2:] == ["config"] and write:
                self._configure_key(name, k, req)
                self.save_state()
                return self.respond(self.key_info(name, k), mount_type=mt)
            raise VaultError(405, "1 error occurred:\n\t* unsupported operation\n\n")
        if op in ("encrypt", "decrypt", "rewrap") and len(sub) == 2 and write:
            name = sub[1]
            k = keys.get(name)
            items = req.get("batch_input")
            batch = items is not None
            if batch:
                if not isinstance(items, list) or not items:
                    raise bad("missing batch input to process")
                if not all(isinstance(i, dict) for i in items):
                    raise bad("failed to parse batch input: expected a map")
            else:
                items = [req]
            ctx_set = bool(items[0].get("context"))
            if any(bool(i.get("context")) != ctx_set for i in items):
                raise bad("context should be set either in all the request blocks or in none")
            if k is None:
                if op != "encrypt":
                    raise bad("encryption key not found")
                if not batch and "plaintext" not in req:
                    raise bad("missing plaintext to encrypt")
                ktype = req.get("type") or "aes256-gcm96"
                if ktype not in KEY_TYPES:
                    raise bad("unknown key type %s" % ktype)
                k = keys[name] = self._new_key(name, ktype, ctx_set,
                                               parse_bool(req.get("convergent_encryption"), "convergent_encryption"))
                self.save_state()
            results = []
            for it in items:
                try:
                    if op == "encrypt":
                        ct, ver = self.encrypt_one(k, it)
                        r = {"ciphertext": ct, "key_version": ver}
                    elif op == "decrypt":
                        pt, _ = self.decrypt_one(k, it)
                        r = {"plaintext": pt}
                    else:
                        pt, _ = self.decrypt_one(k, dict(it, associated_data=None))
                        ct, ver = self.encrypt_one(k, dict(it, plaintext=pt, associated_data=None))
                        r = {"ciphertext": ct, "key_version": ver}
                except VaultError as e:
                    if not batch:
                        raise
                    r = {"error": e.errors[0]}
                if batch and "reference" in it:
                    r["reference"] = it["reference"]
                results.append(r)
            if not batch:
                return self.respond(results[0], mount_type=mt)
            if all("error" in r for r in results):
                return 400, {"errors": ["1 error occurred:\n\t* %s\n\n" % results[0]["error"]],
                             "data": {"batch_results": results}}
            return self.respond({"batch_results": results}, mount_type=mt)
        if op == "datakey" and len(sub) == 3 and write and sub[1] in ("plaintext", "wrapped"):
            k = keys.get(sub[2])
            if k is None:
                raise bad("encryption key not found")
            bits = parse_int(req.get("bits"), "bits", 256)
            if bits not in (128, 256, 512):
                raise bad("invalid bits value")
            dk = os.urandom(bits // 8)
            ct, ver = self.encrypt_one(k, {"plaintext": base64.b64encode(dk).decode(),
                                           "context": req.get("context")})
            d = {"ciphertext": ct, "key_version": ver}
            if sub[1] == "plaintext":
                d["plaintext"] = base64.b64encode(dk).decode()
            return self.respond(d, mount_type=mt)
        raise VaultError(405 if op in ("encrypt", "decrypt", "rewrap", "keys") else 404,
                         "1 error occurred:\n\t* unsupported operation\n\n" if op in
                         ("encrypt", "decrypt", "rewrap", "keys") else
                         "no handler for route \"%s/%s\". route entry not found." % (mount, "/".join(sub)))


class VaultHandler(BaseHandler):
    server_version = ""

    def version_string(self):
        return ""

    def send_response(self, code, message=None):
        # Vault sends no Server header
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def do_GET(self):
        self.server.app.handle(self)

    do_POST = do_PUT = do_DELETE = do_LIST = do_HEAD = do_GET


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fakecommon.add_common_args(p)
    p.add_argument("--root-token", default="hvs.kmscryptFakeRootToken000")
    args = p.parse_args()
    app = VaultApp(args)
    srv = app.start_server(VaultHandler, args.port)
    ctl = app.start_control()
    app.run({"port": srv.server_address[1], "control": ctl.server_address[1]})


if __name__ == "__main__":
    main()
