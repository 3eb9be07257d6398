#!/usr/bin/python3
"""Fake AWS KMS (JSON 1.1 over HTTPS, SigV4 verified with botocore's own signer) plus a fake EC2
IMDSv2 endpoint and a plain-HTTP control API.  Tests only; binds 127.0.0.1 only.

  /usr/bin/python3 tests/fakes/fake_aws_kms.py --certs DIR --portfile F --control-portfile F \
      [--imds-portfile F] [--state F] [--region us-east-1] [--credential AKID:SECRET[:PRINCIPAL]]
      [--quota-rate R [--quota-burst B] [--quota-stats F]]   (request quota: ThrottlingException)

See tests/fakes/README.md for the protocol surface and the control operations.
"""

import argparse
import base64
import calendar
import datetime
import email.utils
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

from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest, HTTPHeaders  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from cryptography.exceptions import InvalidTag  # noqa: E402

JSON_CT = "application/x-amz-json-1.1"
ACCEPTED_CT = ("application/x-amz-json-1.1", "application/x-amz-json-1.0", "application/json")
SIGV4_TS = "%Y%m%dT%H%M%SZ"
DEFAULT_AKID = "AKIAFAKEKMS000000001"
DEFAULT_SECRET = "fakeSecretKeyForKmscryptTests0000000001"
BLOB_MAGIC = b"FKMS\x01"  # fake blob format; opaque to clients
SKEW_LIMIT = 300
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
INVALID_SIG_MSG = ("The request signature we calculated does not match the signature you provided. "
                   "Check your AWS Secret Access Key and signing method. "
                   "Consult the service documentation for details.")
# Errors raised by the AWS front end come with the Coral namespace in __type (clients strip up to '#').
CORAL = "com.amazon.coral.service#"


ERROR_STYLE = {"style": "plain"}  # plain | namespaced (control op error_style)


class KmsError(Exception):
    def __init__(self, type_, message=None, status=400, coral=False):
        super().__init__(type_)
        self.type = type_
        self.message = message
        self.status = status
        self.coral = coral

    def body(self):
        prefix = CORAL if self.coral else ("com.amazonaws.kms#" if ERROR_STYLE["style"] == "namespaced" else "")
        d = {"__type": prefix + self.type}
        if self.message is not None:
            d["message"] = self.message
        return d


def b64e(b):
    return base64.b64encode(b).decode()


def iso8601(t):
    return datetime.datetime.utcfromtimestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")


class _SigV4Verifier(SigV4Auth):
    """botocore's SigV4 signer, restricted to the headers the client said it signed."""

    def __init__(self, credentials, service, region, signed_names):
        super().__init__(credentials, service, region)
        self._signed_names = signed_names

    def headers_to_sign(self, request):
        hm = HTTPHeaders()
        for name in self._signed_names:
            for v in request.headers.get_all(name) or []:
                hm[name] = v
        return hm


def sigv4_expected(method, path, headers, body, akid, secret, token, region, service, signed, amz_date):
    """Recompute a SigV4 signature with botocore's signer over a request as received.

    headers: mapping with get()/get_all() (http.client.HTTPMessage); signed: the SignedHeaders names.
    Returns (hex signature, canonical request)."""
    req = AWSRequest(method=method, url="https://%s%s" % (headers.get("Host"), path), data=body)
    for name in signed:
        for v in headers.get_all(name) or []:
            req.headers[name] = v
    req.context["timestamp"] = amz_date
    signer = _SigV4Verifier(Credentials(akid, secret, token), service, region, signed)
    canonical = signer.canonical_request(req)
    return signer.signature(signer.string_to_sign(req, canonical), req), canonical


def validation_error(problems):
    n = len(problems)
    return KmsError("ValidationException", "%d validation error%s detected: %s" % (
        n, "" if n == 1 else "s", "; ".join(problems)))


class AwsKmsApp(FakeApp):
    name = "aws-kms"

    def __init__(self, args):
        super().__init__(args)
        self.region = args.region
        self.account = args.account
        self.credentials = {}   # access key id -> {secret, principal, token, expiration, kind}
        self.keys = {}          # key uuid -> record
        self.aliases = {}       # alias name -> {target, created, updated}
        self.denied = {}        # access key id or principal ARN -> set of actions ("*" = all)
        self.imds_stats, self.imds_faults = self.second_listener("imds")
        self.imds_tokens = {}   # token -> expiry
        self.imds_role = args.imds_role
        self.imds_enabled = True
        self.imds_v1 = args.imds_allow_v1
        self.imds_cred_ttl = args.imds_cred_ttl
        self.imds_current = None
        self.skew_check = not args.no_skew_check
        st = self.load_state_file()
        if st:
            self._load(st)
        if not self.credentials:
            self.credentials[DEFAULT_AKID] = self._cred(DEFAULT_SECRET, None)
        for c in args.credential or []:
            parts = c.split(":", 2)
            self.credentials[parts[0]] = self._cred(parts[1], parts[2] if len(parts) > 2 else None)
        self._rotate_imds()
        self.save_state()

    # ---------------------------------------------------------------- state
    def _cred(self, secret, principal, token=None, expiration=None, kind="static"):
        return {"secret": secret, "principal": principal or "arn:aws:iam::%s:user/kmscrypt-test" % self.account,
                "token": token, "expiration": expiration, "kind": kind}

    def _load(self, st):
        self.region = st.get("region", self.region)
        self.account = st.get("account_id", self.account)
        for akid, c in (st.get("credentials") or {}).items():
            if isinstance(c, str):
                c = {"secret": c}
            self.credentials[akid] = self._cred(c["secret"], c.get("principal"), c.get("token"),
                                                c.get("expiration"), c.get("kind", "static"))
        for kid, k in (st.get("keys") or {}).items():
            self.keys[kid] = self._key_record(kid, k)
        for name, a in (st.get("aliases") or {}).items():
            if isinstance(a, str):
                a = {"target": a}
            self.aliases[name] = {"target": a.get("target"), "created": a.get("created", time.time()),
                                  "updated": a.get("updated", a.get("created", time.time()))}
        for who, acts in (st.get("denied") or {}).items():
            self.denied[who] = set(acts)

    def _key_record(self, kid, k=None):
        k = k or {}
        mats = k.get("material") or [b64e(os.urandom(32))]
        if isinstance(mats, str):
            mats = [mats]
        state = k.get("state") or ("Enabled" if k.get("enabled", True) else "Disabled")
        return {"id": kid, "material": [base64.b64decode(m) for m in mats], "state": state,
                "description": k.get("description", ""), "created": k.get("created", time.time()),
                "deletion_date": k.get("deletion_date")}

    def dump_state(self, secret=False):
        with self.lock:
            keys = {}
            for kid, k in self.keys.items():
                d = {"arn": self.key_arn(kid), "state": k["state"], "enabled": k["state"] == "Enabled",
                     "description": k["description"], "created": k["created"]}
                if k["deletion_date"]:
                    d["deletion_date"] = k["deletion_date"]
                if secret:
                    d["material"] = [b64e(m) for m in k["material"]]
                keys[kid] = d
            creds = {}
            for akid, c in self.credentials.items():
                if c["kind"] == "imds" and secret:
                    continue  # temporary: regenerated at start
                d = dict(c)
                if not secret:
                    d["secret"] = "<hidden>"
                creds[akid] = d
            return {"region": self.region, "account_id": self.account, "keys": keys,
                    "aliases": {n: dict(a) for n, a in self.aliases.items()}, "credentials": creds,
                    "denied": {w: sorted(a) for w, a in self.denied.items()}}

    def key_arn(self, kid):
        return "arn:aws:kms:%s:%s:key/%s" % (self.region, self.account, kid)

    def alias_arn(self, name):
        return "arn:aws:kms:%s:%s:%s" % (self.region, self.account, name)

    # ---------------------------------------------------------------- IMDS credentials
    def _rotate_imds(self):
        with self.lock:
            akid = "ASIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
            secret = base64.b64encode(os.urandom(30)).decode()
            token = "IQoJb3JpZ2luX2Vj" + base64.b64encode(os.urandom(240)).decode()
            exp = int(self.now() + self.imds_cred_ttl)
            principal = "arn:aws:sts::%s:assumed-role/%s/i-0fake0000000000001" % (self.account, self.imds_role)
            self.credentials[akid] = self._cred(secret, principal, token, exp, "imds")
            self.imds_current = {"akid": akid, "updated": self.now()}
            return akid

    # ---------------------------------------------------------------- control ops
    def op_create_key(self, description="", key_id=None, material=None, state="Enabled"):
        with self.lock:
            kid = key_id or str(uuid.uuid4())
            if not UUID_RE.match(kid):
                raise ValueError("key_id must be a lower-case UUID")
            self.keys[kid] = self._key_record(kid, {"description": description, "state": state,
                                                    "material": material})
            self.save_state()
            return {"KeyId": kid, "Arn": self.key_arn(kid)}

    def op_create_alias(self, alias, key_id):
        with self.lock:
            self.aliases[alias] = {"target": key_id, "created": time.time(), "updated": time.time()}
            self.save_state()

    def _ctl_key(self, key_id):
        k = self.resolve_key(key_id)
        return k

    def op_disable_key(self, key_id):
        with self.lock:
            self._ctl_key(key_id)["state"] = "Disabled"
            self.save_state()

    def op_enable_key(self, key_id):
        with self.lock:
            self._ctl_key(key_id)["state"] = "Enabled"
            self.save_state()

    def op_set_key_state(self, key_id, state):
        with self.lock:
            k = self._ctl_key(key_id)
            k["state"] = state
            k["deletion_date"] = time.time() + 7 * 86400 if state == "PendingDeletion" else None
            self.save_state()

    def op_delete_key(self, key_id):
        """Remove a key entirely (as after the deletion waiting period)."""
        with self.lock:
            k = self._ctl_key(key_id)
            del self.keys[k["id"]]
            self.save_state()

    def op_revoke(self, access_key=None, principal=None, actions=None):
        """AccessDeniedException for this access key id or principal ARN (actions: list, default all)."""
        with self.lock:
            who = access_key or principal
            if who is None:
                raise ValueError("access_key or principal required")
            self.denied.setdefault(who, set()).update(actions or ["*"])
            self.save_state()

    def op_restore(self, access_key=None, principal=None):
        with self.lock:
            self.denied.pop(access_key or principal, None)
            self.save_state()

    def op_add_credential(self, access_key, secret, principal=None, token=None, expiration=None):
        with self.lock:
            self.credentials[access_key] = self._cred(secret, principal, token, expiration,
                                                      "temporary" if token else "static")
            self.save_state()

    def op_delete_credential(self, access_key):
        with self.lock:
            self.credentials.pop(access_key, None)
            self.save_state()

    def op_imds_rotate(self):
        return {"AccessKeyId": self._rotate_imds()}

    def op_imds_expire(self):
        """Expire every temporary credential handed out by IMDS (KMS answers ExpiredTokenException)."""
        with self.lock:
            for c in self.credentials.values():
                if c["kind"] == "imds":
                    c["expiration"] = int(self.now()) - 1

    def op_imds_config(self, enabled=None, role=None, allow_v1=None, cred_ttl=None):
        with self.lock:
            if enabled is not None:
                self.imds_enabled = bool(enabled)
            if role is not None:
                self.imds_role = role
                self._rotate_imds()
            if allow_v1 is not None:
                self.imds_v1 = bool(allow_v1)
            if cred_ttl is not None:
                self.imds_cred_ttl = int(cred_ttl)
                self._rotate_imds()
        return {"enabled": self.imds_enabled, "role": self.imds_role, "allow_v1": self.imds_v1}

    def op_error_style(self, style="plain"):
        """plain: {"__type": "NotFoundException"}; namespaced: "com.amazonaws.kms#NotFoundException"
        (both forms occur in AWS JSON protocols; clients must strip up to '#')."""
        if style not in ("plain", "namespaced"):
            raise ValueError("style must be plain or namespaced")
        ERROR_STYLE["style"] = style
        return {"style": style}

    def op_skew_check(self, enabled=True):
        self.skew_check = bool(enabled)

    # ---------------------------------------------------------------- key resolution
    def resolve_key(self, key_id, allow_alias=True):
        if not isinstance(key_id, str) or not key_id:
            raise KmsError("NotFoundException", "Invalid keyId %s" % (key_id,))
        m = re.match(r"^arn:aws:kms:([^:]*):([^:]*):(key/.+|alias/.+)$", key_id)
        if m:
            if m.group(1) != self.region or m.group(2) != self.account:
                raise KmsError("NotFoundException", "Invalid arn %s" % key_id)
            rest = m.group(3)
        else:
            rest = key_id
        if rest.startswith("alias/"):
            if not allow_alias:
                raise KmsError("NotFoundException", "Invalid keyId %s" % key_id)
            a = self.aliases.get(rest)
            if a is None or not a.get("target"):
                raise KmsError("NotFoundException", "Alias %s is not found." % self.alias_arn(rest))
            kid = a["target"]
        elif rest.startswith("key/"):
            kid = rest[4:]
        else:
            kid = rest
        if not UUID_RE.match(kid) and kid not in self.keys:
            raise KmsError("NotFoundException", "Invalid keyId %s" % key_id)
        k = self.keys.get(kid)
        if k is None:
            raise KmsError("NotFoundException", "Key '%s' does not exist" % self.key_arn(kid))
        return k

    def check_usable(self, k):
        st = k["state"]
        arn = self.key_arn(k["id"])
        if st == "Enabled":
            return
        if st == "Disabled":
            raise KmsError("DisabledException", "%s is disabled." % arn)
        if st == "PendingDeletion":
            raise KmsError("KMSInvalidStateException", "%s is pending deletion." % arn)
        raise KmsError("KMSInvalidStateException", "%s is %s." % (arn, st))

    def check_access(self, ctx, action, resource_arn):
        for who in (ctx["akid"], ctx["principal"]):
            acts = self.denied.get(who)
            if acts and ("*" in acts or action in acts or "kms:" + action in acts):
                raise KmsError("AccessDeniedException",
                               "User: %s is not authorized to perform: kms:%s on resource: %s because no "
                               "identity-based policy allows the kms:%s action"
                               % (ctx["principal"], action, resource_arn, action))

    # ---------------------------------------------------------------- blobs
    @staticmethod
    def _aad(header, ec):
        return header + json.dumps(ec or {}, sort_keys=True, separators=(",", ":")).encode()

    def seal(self, k, plaintext, ec):
        ver = len(k["material"]) - 1
        header = BLOB_MAGIC + k["id"].encode() + bytes([ver])
        nonce = os.urandom(12)
        ct = AESGCM(k["material"][ver]).encrypt(nonce, plaintext, self._aad(header, ec))
        return header + nonce + ct

    def open_blob(self, blob, ec):
        """-> (key record, plaintext); InvalidCiphertextException for anything that does not open."""
        n = len(BLOB_MAGIC)
        if len(blob) < n + 36 + 1 + 12 + 16 or blob[:n] != BLOB_MAGIC:
            raise KmsError("InvalidCiphertextException")
        kid = blob[n:n + 36].decode("latin-1")
        ver = blob[n + 36]
        k = self.keys.get(kid)
        if k is None or ver >= len(k["material"]):
            raise KmsError("InvalidCiphertextException")
        return k, (blob[:n + 37], blob[n + 37:n + 49], blob[n + 49:], ver)

    def decrypt_opened(self, k, parts, ec):
        header, nonce, ct, ver = parts
        try:
            return AESGCM(k["material"][ver]).decrypt(nonce, ct, self._aad(header, ec))
        except InvalidTag:
            raise KmsError("InvalidCiphertextException")

    # ---------------------------------------------------------------- SigV4
    def authenticate(self, handler, body):
        h = handler.headers
        auth = h.get("Authorization")
        if not auth:
            raise KmsError("MissingAuthenticationTokenException", "Missing Authentication Token", coral=True)
        algo, _, rest = auth.strip().partition(" ")
        params = {}
        for part in rest.split(","):
            k, eq, v = part.strip().partition("=")
            if eq:
                params[k.strip()] = v.strip()
        missing = [p for p in ("Credential", "Signature", "SignedHeaders") if p not in params]
        if algo != "AWS4-HMAC-SHA256" or missing:
            raise KmsError("IncompleteSignatureException", " ".join(
                "Authorization header requires '%s' parameter." % p for p in missing or ["Credential"])
                + " Authorization=%s" % auth, coral=True)
        scope = params["Credential"].split("/")
        if len(scope) != 5:
            raise KmsError("IncompleteSignatureException",
                           "Credential should have at least 5 slash-separated parts. %s" % auth, coral=True)
        akid, sdate, region, service, term = scope
        cred = self.credentials.get(akid)
        if cred is None:
            raise KmsError("UnrecognizedClientException", "The security token included in the request is invalid.",
                           coral=True)
        token = h.get("X-Amz-Security-Token")
        if cred["token"]:
            if token != cred["token"]:
                raise KmsError("UnrecognizedClientException",
                               "The security token included in the request is invalid.", coral=True)
        elif token:
            raise KmsError("UnrecognizedClientException", "The security token included in the request is invalid.",
                           coral=True)
        amz_date = h.get("X-Amz-Date")
        if amz_date:
            try:
                req_t = calendar.timegm(time.strptime(amz_date, SIGV4_TS))
            except ValueError:
                raise KmsError("IncompleteSignatureException",
                               "Date must be in ISO-8601 'basic format'. Got '%s'." % amz_date, coral=True)
        elif h.get("Date"):
            try:
                req_t = email.utils.mktime_tz(email.utils.parsedate_tz(h.get("Date")))
            except (TypeError, ValueError):
                raise KmsError("IncompleteSignatureException", "Unparseable Date header", coral=True)
            amz_date = time.strftime(SIGV4_TS, time.gmtime(req_t))
        else:
            raise KmsError("IncompleteSignatureException",
                           "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
                           "Authorization=%s" % auth, coral=True)
        if term != "aws4_request":
            raise KmsError("InvalidSignatureException",
                           "Credential should be scoped with a valid terminator: 'aws4_request', not '%s'." % term)
        if service != "kms":
            raise KmsError("InvalidSignatureException",
                           "Credential should be scoped to correct service: 'kms'. ")
        if region != self.region:
            raise KmsError("InvalidSignatureException",
                           "Credential should be scoped to a valid region, not '%s'. " % region)
        if sdate != amz_date[:8]:
            raise KmsError("InvalidSignatureException",
                           "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
                           "HTTP: '%s' != '%s', from '%s'." % (sdate, amz_date[:8], amz_date))
        signed = [s for s in params["SignedHeaders"].split(";") if s]
        if "host" not in signed:
            raise KmsError("InvalidSignatureException", "'Host' or ':authority' must be a 'SignedHeader' in the "
                           "AWS Authorization.")
        if "x-amz-date" not in signed and "date" not in signed:
            raise KmsError("InvalidSignatureException", "'X-Amz-Date' or 'Date' must be a 'SignedHeader' in the "
                           "AWS Authorization.")
        for name in signed:
            if h.get(name) is None or name != name.lower():
                raise KmsError("InvalidSignatureException", INVALID_SIG_MSG)
        csha = h.get("X-Amz-Content-SHA256")
        if csha is not None and csha != hashlib.sha256(body).hexdigest():
            raise KmsError("InvalidSignatureException",
                           "The provided 'x-amz-content-sha256' header does not match what was computed.")
        expected, canonical = sigv4_expected(handler.command, handler.path, h, body, akid, cred["secret"],
                                             cred["token"], region, service, signed, amz_date)
        if not hmac.compare_digest(expected, params["Signature"]):
            handler.sig_debug = canonical
            raise KmsError("InvalidSignatureException", INVALID_SIG_MSG)
        if cred["expiration"] is not None and self.now() >= cred["expiration"]:
            raise KmsError("ExpiredTokenException", "The security token included in the request is expired",
                           coral=True)
        if self.skew_check:
            now = self.now()
            fmt = lambda t: time.strftime(SIGV4_TS, time.gmtime(t))  # noqa: E731
            if req_t < now - SKEW_LIMIT:
                raise KmsError("InvalidSignatureException", "Signature expired: %s is now earlier than %s (%s - 5 min.)"
                               % (amz_date, fmt(now - SKEW_LIMIT), fmt(now)))
            if req_t > now + SKEW_LIMIT:
                raise KmsError("InvalidSignatureException", "Signature not yet current: %s is still later than %s "
                               "(%s + 5 min.)" % (amz_date, fmt(now + SKEW_LIMIT), fmt(now)))
        return {"akid": akid, "principal": cred["principal"]}

    # ---------------------------------------------------------------- request parsing helpers
    @staticmethod
    def p_str(req, name, required=False, problems=None):
        v = req.get(name)
        if v is None:
            if required:
                problems.append("Value null at '%s' failed to satisfy constraint: Member must not be null"
                                % (name[0].lower() + name[1:]))
            return None
        if not isinstance(v, str):
            raise KmsError("SerializationException", "Expected a string for %s" % name)
        return v

    @staticmethod
    def p_blob(req, name, required, problems, maxlen):
        v = req.get(name)
        lname = name[0].lower() + name[1:]
        if v is None:
            if required:
                problems.append("Value null at '%s' failed to satisfy constraint: Member must not be null" % lname)
            return None
        if not isinstance(v, str):
            raise KmsError("SerializationException", "Expected a base64 string for %s" % name)
        try:
            b = base64.b64decode(v, validate=True)
        except (ValueError, TypeError):
            raise KmsError("SerializationException", "Could not base64-decode %s" % name)
        if len(b) < 1:
            problems.append("Value at '%s' failed to satisfy constraint: Member must have length greater than or "
                            "equal to 1" % lname)
        if len(b) > maxlen:
            problems.append("Value at '%s' failed to satisfy constraint: Member must have length less than or "
                            "equal to %d" % (lname, maxlen))
        return b

    @staticmethod
    def p_ec(req, name):
        ec = req.get(name)
        if ec is None:
            return {}
        if not isinstance(ec, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ec.items()):
            raise KmsError("SerializationException", "%s must be a map of strings to strings" % name)
        return ec

    def check_algorithm(self, req, name):
        algo = req.get(name)
        if algo is not None and algo != "SYMMETRIC_DEFAULT":
            raise KmsError("InvalidKeyUsageException",
                           "%s is not supported for KMS keys with key spec SYMMETRIC_DEFAULT" % algo)

    @staticmethod
    def check_dry_run(req):
        if req.get("DryRun") is True:
            raise KmsError("DryRunOperationException",
                           "The request would have succeeded, but the DryRun option is set.", status=412)

    def key_metadata(self, k):
        md = {"AWSAccountId": self.account, "KeyId": k["id"], "Arn": self.key_arn(k["id"]),
              "CreationDate": k["created"], "Enabled": k["state"] == "Enabled", "Description": k["description"],
              "KeyUsage": "ENCRYPT_DECRYPT", "KeyState": k["state"], "Origin": "AWS_KMS",
              "KeyManager": "CUSTOMER", "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
              "KeySpec": "SYMMETRIC_DEFAULT", "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
              "MultiRegion": False}
        if k["deletion_date"]:
            md["DeletionDate"] = k["deletion_date"]
            md["PendingDeletionWindowInDays"] = 7
        return md

    # ---------------------------------------------------------------- actions
    def a_CreateKey(self, ctx, req):
        problems = []
        spec = req.get("KeySpec") or req.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
        usage = req.get("KeyUsage") or "ENCRYPT_DECRYPT"
        if spec != "SYMMETRIC_DEFAULT" or usage != "ENCRYPT_DECRYPT":
            raise KmsError("UnsupportedOperationException",
                           "This fake supports only SYMMETRIC_DEFAULT ENCRYPT_DECRYPT keys.")
        desc = self.p_str(req, "Description", False, problems) or ""
        if problems:
            raise validation_error(problems)
        self.check_access(ctx, "CreateKey", "*")
        kid = str(uuid.uuid4())
        self.keys[kid] = self._key_record(kid, {"description": desc})
        self.save_state()
        return {"KeyMetadata": self.key_metadata(self.keys[kid])}

    def a_DescribeKey(self, ctx, req):
        problems = []
        key_id = self.p_str(req, "KeyId", True, problems)
        if problems:
            raise validation_error(problems)
        k = self.resolve_key(key_id)
        self.check_access(ctx, "DescribeKey", self.key_arn(k["id"]))
        return {"KeyMetadata": self.key_metadata(k)}

    def _enable_disable(self, ctx, req, action, new_state):
        problems = []
        key_id = self.p_str(req, "KeyId", True, problems)
        if problems:
            raise validation_error(problems)
        k = self.resolve_key(key_id, allow_alias=False)
        self.check_access(ctx, action, self.key_arn(k["id"]))
        if k["state"] not in ("Enabled", "Disabled"):
            raise KmsError("KMSInvalidStateException", "%s is %s." % (
                self.key_arn(k["id"]), "pending deletion" if k["state"] == "PendingDeletion" else k["state"]))
        k["state"] = new_state
        self.save_state()
        return None

    def a_EnableKey(self, ctx, req):
        return self._enable_disable(ctx, req, "EnableKey", "Enabled")

    def a_DisableKey(self, ctx, req):
        return self._enable_disable(ctx, req, "DisableKey", "Disabled")

    def a_ScheduleKeyDeletion(self, ctx, req):
        problems = []
        key_id = self.p_str(req, "KeyId", True, problems)
        if problems:
            raise validation_error(problems)
        k = self.resolve_key(key_id, allow_alias=False)
        self.check_access(ctx, "ScheduleKeyDeletion", self.key_arn(k["id"]))
        days = int(req.get("PendingWindowInDays") or 30)
        k["state"] = "PendingDeletion"
        k["deletion_date"] = time.time() + days * 86400
        self.save_state()
        return {"KeyId": self.key_arn(k["id"]), "DeletionDate": k["deletion_date"], "KeyState": "PendingDeletion",
                "PendingWindowInDays": days}

    def a_CancelKeyDeletion(self, ctx, req):
        problems = []
        key_id = self.p_str(req, "KeyId", True, problems)
        if problems:
            raise validation_error(problems)
        k = self.resolve_key(key_id, allow_alias=False)
        self.check_access(ctx, "CancelKeyDeletion", self.key_arn(k["id"]))
        if k["state"] != "PendingDeletion":
            raise KmsError("KMSInvalidStateException", "%s is not pending deletion." % self.key_arn(k["id"]))
        k["state"] = "Disabled"
        k["deletion_date"] = None
        self.save_state()
        return {"KeyId": self.key_arn(k["id"])}

    def a_CreateAlias(self, ctx, req):
        problems = []
        name = self.p_str(req, "AliasName", True, problems)
        target = self.p_str(req, "TargetKeyId", True, problems)
        if name is not None and not re.match(r"^alias/[a-zA-Z0-9/_-]+$", name):
            problems.append("Value '%s' at 'aliasName' failed to satisfy constraint: Member must satisfy regular "
                            "expression pattern: ^[a-zA-Z0-9:/_-]+$" % name)
        if problems:
            raise validation_error(problems)
        if name.startswith("alias/aws/"):
            raise KmsError("InvalidAliasNameException",
                           "Alias must not begin with 'alias/aws/'")
        k = self.resolve_key(target, allow_alias=False)
        self.check_access(ctx, "CreateAlias", self.alias_arn(name))
        if name in self.aliases:
            raise KmsError("AlreadyExistsException", "An alias with the name %s already exists"
                           % self.alias_arn(name))
        now = time.time()
        self.aliases[name] = {"target": k["id"], "created": now, "updated": now}
        self.save_state()
        return None

    def a_ListAliases(self, ctx, req):
        problems = []
        key_filter = self.p_str(req, "KeyId", False, problems)
        limit = req.get("Limit", 50)
        if not isinstance(limit, int) or not 1 <= limit <= 100:
            problems.append("Value '%s' at 'limit' failed to satisfy constraint: Member must have value less "
                            "than or equal to 100" % limit)
        if problems:
            raise validation_error(problems)
        self.check_access(ctx, "ListAliases", "*")
        target = None
        if key_filter:
            target = self.resolve_key(key_filter, allow_alias=False)["id"]
        rows = []
        for name in sorted(self.aliases):
            a = self.aliases[name]
            if target and a.get("target") != target:
                continue
            row = {"AliasName": name, "AliasArn": self.alias_arn(name), "CreationDate": a["created"],
                   "LastUpdatedDate": a["updated"]}
            if a.get("target"):
                row["TargetKeyId"] = a["target"]
            rows.append(row)
        start = 0
        marker = req.get("Marker")
        if marker:
            try:
                start = int(base64.b64decode(marker).decode().split(":")[1])
            except (ValueError, IndexError):
                raise KmsError("InvalidMarkerException", "Invalid marker")
        page = rows[start:start + limit]
        out = {"Aliases": page, "Truncated": start + limit < len(rows)}
        if out["Truncated"]:
            out["NextMarker"] = b64e(("aliases:%d" % (start + limit)).encode())
        return out

    def a_Encrypt(self, ctx, req):
        problems = []
        key_id = self.p_str(req, "KeyId", True, problems)
        pt = self.p_blob(req, "Plaintext", True, problems, 4096)
        if problems:
            raise validation_error(problems)
        ec = self.p_ec(req, "EncryptionContext")
        self.check_algorithm(req, "EncryptionAlgorithm")
        k = self.resolve_key(key_id)
        self.check_access(ctx, "Encrypt", self.key_arn(k["id"]))
        self.check_usable(k)
        self.check_dry_run(req)
        return {"CiphertextBlob": b64e(self.seal(k, pt, ec)), "KeyId": self.key_arn(k["id"]),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}

    def _generate(self, ctx, req, action, with_plaintext):
        problems = []
        key_id = self.p_str(req, "KeyId", True, problems)
        n, spec = req.get("NumberOfBytes"), req.get("KeySpec")
        if n is not None and (not isinstance(n, int) or not 1 <= n <= 1024):
            problems.append("Value '%s' at 'numberOfBytes' failed to satisfy constraint: Member must have value "
                            "less than or equal to 1024" % n)
        if spec is not None and spec not in ("AES_256", "AES_128"):
            problems.append("Value '%s' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value "
                            "set: [AES_256, AES_128]" % spec)
        if problems:
            raise validation_error(problems)
        if (n is None) == (spec is None):
            raise KmsError("ValidationException", "Please specify either number of bytes or key spec.")
        ec = self.p_ec(req, "EncryptionContext")
        k = self.resolve_key(key_id)
        self.check_access(ctx, action, self.key_arn(k["id"]))
        self.check_usable(k)
        self.check_dry_run(req)
        nbytes = n if n is not None else (32 if spec == "AES_256" else 16)
        pt = os.urandom(nbytes)
        out = {"CiphertextBlob": b64e(self.seal(k, pt, ec)), "KeyId": self.key_arn(k["id"])}
        if with_plaintext:
            out["Plaintext"] = b64e(pt)
        return out

    def a_GenerateDataKey(self, ctx, req):
        return self._generate(ctx, req, "GenerateDataKey", True)

    def a_GenerateDataKeyWithoutPlaintext(self, ctx, req):
        return self._generate(ctx, req, "GenerateDataKeyWithoutPlaintext", False)

    def _open_for(self, ctx, req, action, blob_name, ec_name, key_name, algo_name):
        problems = []
        blob = self.p_blob(req, blob_name, True, problems, 6144)
        key_id = self.p_str(req, key_name, False, problems)
        if problems:
            raise validation_error(problems)
        ec = self.p_ec(req, ec_name)
        self.check_algorithm(req, algo_name)
        want = self.resolve_key(key_id) if key_id is not None else None
        k, parts = self.open_blob(blob, ec)
        if want is not None and want["id"] != k["id"]:
            raise KmsError("IncorrectKeyException", "The key ID in the request does not identify a KMS key that "
                           "can perform this operation.")
        self.check_access(ctx, action, self.key_arn(k["id"]))
        self.check_usable(k)
        return k, self.decrypt_opened(k, parts, ec)

    def a_Decrypt(self, ctx, req):
        k, pt = self._open_for(ctx, req, "Decrypt", "CiphertextBlob", "EncryptionContext", "KeyId",
                               "EncryptionAlgorithm")
        self.check_dry_run(req)
        return {"KeyId": self.key_arn(k["id"]), "Plaintext": b64e(pt), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}

    def a_ReEncrypt(self, ctx, req):
        problems = []
        dest_id = self.p_str(req, "DestinationKeyId", True, problems)
        if problems:
            raise validation_error(problems)
        self.check_algorithm(req, "DestinationEncryptionAlgorithm")
        dest_ec = self.p_ec(req, "DestinationEncryptionContext")
        src, pt = self._open_for(ctx, req, "ReEncryptFrom", "CiphertextBlob", "SourceEncryptionContext",
                                 "SourceKeyId", "SourceEncryptionAlgorithm")
        dest = self.resolve_key(dest_id)
        self.check_access(ctx, "ReEncryptTo", self.key_arn(dest["id"]))
        self.check_usable(dest)
        self.check_dry_run(req)
        return {"CiphertextBlob": b64e(self.seal(dest, pt, dest_ec)), "SourceKeyId": self.key_arn(src["id"]),
                "KeyId": self.key_arn(dest["id"]), "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT"}

    # ---------------------------------------------------------------- request entry
    def handle(self, handler):
        t0 = time.time()
        body = handler.read_body()
        target = handler.headers.get("X-Amz-Target") or ""
        action = target.partition(".")[2] if target.startswith("TrentService.") else None
        entry = {"conn": handler.conn_id, "method": handler.command, "path": handler.path, "action": action,
                 "headers": [[k, v] for k, v in handler.headers.items()], "time": t0}
        try:
            entry["body"] = json.loads(body) if body else None
        except ValueError:
            entry["body"] = body.decode("latin-1")
        status, out, fault = 200, None, None
        handler.sig_debug = None
        try:
            if self.quota and not self.quota.admit(action):  # --quota-rate: charged before anything else
                entry["quota"] = "throttled"
                raise KmsError("ThrottlingException", "You have exceeded the rate at which you may call KMS. "
                               "Reduce the frequency of your calls.")
            with self.lock:
                ctx = self.authenticate(handler, body)
            entry["access_key"] = ctx["akid"]
            if handler.command != "POST" or handler.path.partition("?")[0] != "/":
                raise KmsError("UnknownOperationException", None, status=404, coral=True)
            ctype = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            fn = getattr(self, "a_" + action, None) if action else None
            if fn is None:
                raise KmsError("UnknownOperationException", None, coral=True)
            if ctype not in ACCEPTED_CT:
                raise KmsError("SerializationException", "Unsupported Content-Type: %s" % ctype, coral=True)
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
                raise KmsError("ThrottlingException", "You have exceeded the rate at which you may call KMS. "
                               "Reduce the frequency of your calls.")
            if fault == "error5xx":
                st = self.faults.status5xx
                if st == 500:
                    raise KmsError("KMSInternalException", "An internal error occurred.", status=500)
                raise KmsError("ServiceUnavailableException", "Service Unavailable", status=st, coral=True)
            try:
                req = json.loads(body) if body.strip() else {}
            except ValueError:
                raise KmsError("SerializationException", "Start of structure or map found where not expected.")
            if not isinstance(req, dict):
                raise KmsError("SerializationException", "Start of structure or map found where not expected.")
            with self.lock:
                out = fn(ctx, req)
        except KmsError as e:
            status, out = e.status, e.body()
            entry["error_type"] = e.type
        except Exception as e:  # a bug in the fake: answer like AWS would on an internal fault
            import traceback
            traceback.print_exc()
            status, out = 500, {"__type": "KMSInternalException", "message": "fake bug: %s" % e}
            entry["error_type"] = "KMSInternalException"
        resp = b"" if out is None else json.dumps(out, separators=(",", ":")).encode()
        ctype = JSON_CT
        if fault == "malformed" and status == 200:
            resp, ct2 = malformed_body(self.faults.malformed_mode, resp or b'{"x":1}')
            ctype = ct2 or ctype
            entry["malformed"] = self.faults.malformed_mode
        entry["status"] = status
        if handler.sig_debug:
            entry["expected_canonical_request"] = handler.sig_debug
        self.stats.record(entry)
        handler.send_raw(status, resp, [("x-amzn-RequestId", str(uuid.uuid4())), ("Content-Type", ctype)],
                         close=fault == "close")


class KmsHandler(BaseHandler):
    def do_POST(self):
        self.server.app.handle(self)

    do_GET = do_PUT = do_DELETE = do_POST


class ImdsHandler(BaseHandler):
    """EC2 instance metadata service, IMDSv2 (token required unless allow_v1)."""

    server_version = "EC2ws"

    def _reply(self, status, text, ctype="text/plain", extra=()):
        app = self.server.app
        app.imds_stats.record({"conn": self.conn_id, "method": self.command, "path": self.path,
                               "action": self.path, "status": status,
                               "headers": [[k, v] for k, v in self.headers.items()], "time": time.time()})
        self.send_raw(status, text, [("Content-Type", ctype)] + list(extra))

    def _fault(self):
        app = self.server.app
        d = app.imds_faults.latency(None)
        if d:
            time.sleep(d)
        f = app.imds_faults.take(None)
        if f == "drop":
            app.imds_stats.record({"conn": self.conn_id, "method": self.command, "path": self.path,
                                   "status": "dropped", "time": time.time()})
            self.drop_connection()
            return True
        if f == "error5xx":
            self._reply(app.imds_faults.status5xx, "Internal Server Error")
            return True
        if f == "throttle":
            self._reply(429, "Too Many Requests")
            return True
        if f == "malformed":
            self._reply(200, "{\"Code\":\"Success\",\"AccessKeyId\":")
            return True
        return False

    def do_PUT(self):
        app = self.server.app
        self.read_body()
        if self._fault():
            return
        if self.path != "/latest/api/token":
            return self._reply(404, "Not Found")
        if self.headers.get("X-Forwarded-For"):
            return self._reply(403, "Forbidden")
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        try:
            ttl_i = int(ttl)
            ok = 1 <= ttl_i <= 21600
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return self._reply(400, "Bad Request")
        tok = base64.b64encode(os.urandom(42)).decode()
        with app.lock:
            app.imds_tokens[tok] = app.now() + ttl_i
        self._reply(200, tok, extra=[("X-aws-ec2-metadata-token-ttl-seconds", str(ttl_i))])

    def do_GET(self):
        app = self.server.app
        self.read_body()
        if self._fault():
            return
        tok = self.headers.get("X-aws-ec2-metadata-token")
        with app.lock:
            if tok is not None:
                exp = app.imds_tokens.get(tok)
                if exp is None or exp <= app.now():
                    return self._reply(401, "Unauthorized")
            elif not app.imds_v1:
                return self._reply(401, "Unauthorized")
            if not app.imds_enabled:
                return self._reply(404, "Not Found")
            path = self.path.partition("?")[0]
            role = app.imds_role
            base = "/latest/meta-data/iam/security-credentials/"
            if path == base:
                return self._reply(200, role)
            if path == base + role:
                c = app.credentials[app.imds_current["akid"]]
                return self._reply(200, json.dumps({
                    "Code": "Success", "LastUpdated": iso8601(app.imds_current["updated"]), "Type": "AWS-HMAC",
                    "AccessKeyId": app.imds_current["akid"], "SecretAccessKey": c["secret"], "Token": c["token"],
                    "Expiration": iso8601(c["expiration"])}, indent=2))
            if path == "/latest/meta-data/iam/info":
                return self._reply(200, json.dumps({
                    "Code": "Success", "LastUpdated": iso8601(app.imds_current["updated"]),
                    "InstanceProfileArn": "arn:aws:iam::%s:instance-profile/%s" % (app.account, role),
                    "InstanceProfileId": "AIPAFAKE0000000000001"}, indent=2))
            simple = {"/latest/meta-data/placement/region": app.region,
                      "/latest/meta-data/placement/availability-zone": app.region + "a",
                      "/latest/meta-data/instance-id": "i-0fake0000000000001"}
            if path in simple:
                return self._reply(200, simple[path])
            if path == "/latest/dynamic/instance-identity/document":
                return self._reply(200, json.dumps({
                    "accountId": app.account, "region": app.region, "availabilityZone": app.region + "a",
                    "instanceId": "i-0fake0000000000001", "architecture": "x86_64", "imageId": "ami-0fake",
                    "instanceType": "t3.micro", "privateIp": "127.0.0.1", "version": "2017-09-30"}, indent=2),
                    "application/json")
            return self._reply(404, "Not Found")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fakecommon.add_common_args(p)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--account", default="111122223333")
    p.add_argument("--credential", action="append", help="AKID:SECRET[:PRINCIPAL_ARN] (repeatable)")
    p.add_argument("--imds-port", type=int, default=0)
    p.add_argument("--imds-portfile")
    p.add_argument("--imds-role", default="kmscrypt-test-role")
    p.add_argument("--imds-allow-v1", action="store_true", help="serve metadata without a session token")
    p.add_argument("--imds-cred-ttl", type=int, default=6 * 3600)
    p.add_argument("--no-skew-check", action="store_true")
    fakecommon.add_quota_args(p)
    args = p.parse_args()
    app = AwsKmsApp(args)
    kms = app.start_server(KmsHandler, args.port)
    imds = app.start_server(ImdsHandler, args.imds_port, tls=False, stats=app.imds_stats)
    ctl = app.start_control()
    ports = {"port": kms.server_address[1], "imds": imds.server_address[1], "control": ctl.server_address[1]}
    if args.imds_portfile:
        fakecommon.write_atomic(args.imds_portfile, "%d\n" % ports["imds"])
    app.run(ports)


if __name__ == "__main__":
    main()
