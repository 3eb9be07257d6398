#!/usr/bin/python3
"""Prove tests/fakes/fake_gcp_kms.py speaks Google's OAuth 2.0 service-account flow, the GCE metadata
server and Cloud KMS REST v1 as google-auth (Debian python3-google-auth) expects.

usage: fakes_gcp_check.py --port P --control-port C --metadata-port M --sa-file F --key NAME
                          [--blob-out F | --blob-in F]

Every check() can fail; the script exits 1 listing the failures.  Loopback only.
"""

import argparse
import base64
import json
import os
import sys
import urllib.request

failures = []
passed = 0


def check(cond, what):
    global passed
    if cond:
        passed += 1
        print("ok   %s" % what)
    else:
        failures.append(what)
        print("FAIL %s" % what)
    return cond


class Ctl:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port

    def call(self, path, obj=None):
        data = None if obj is None else json.dumps(obj).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST" if data is not None else "GET")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as r:
            return json.loads(r.read())

    def op(self, op, **kw):
        return self.call("/control", dict(kw, op=op))


def b64(b):
    return base64.b64encode(b).decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--control-port", type=int, required=True)
    ap.add_argument("--metadata-port", type=int, required=True)
    ap.add_argument("--sa-file", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--blob-out")
    ap.add_argument("--blob-in")
    a = ap.parse_args()

    # google-auth reads the metadata host from the environment when the module is imported
    os.environ["GCE_METADATA_ROOT"] = "127.0.0.1:%d" % a.metadata_port
    os.environ["GCE_METADATA_IP"] = "127.0.0.1:%d" % a.metadata_port
    import crcmod.predefined
    import google.auth.exceptions
    import google.auth.transport.requests as gtr
    from google.auth import compute_engine
    from google.oauth2 import service_account

    crc = crcmod.predefined.mkCrcFun("crc-32c")
    ctl = Ctl(a.control_port)
    base = "https://127.0.0.1:%d/v1/%s" % (a.port, a.key)
    scope = ["https://www.googleapis.com/auth/cloudkms"]
    aad = b"kmscrypt:v1:0b2c6a4e-0000-4000-8000-000000000001:0"

    if a.blob_in:
        # after a restart of the fake on the same --state: the old ciphertext still opens
        creds = service_account.Credentials.from_service_account_file(a.sa_file, scopes=scope)
        s = gtr.AuthorizedSession(creds)
        blob = json.load(open(a.blob_in))
        r = s.post(base + ":decrypt", json={"ciphertext": blob["ciphertext"], "additionalAuthenticatedData": b64(aad)})
        check(r.status_code == 200 and base64.b64decode(r.json()["plaintext"]) == b"secret-after-restart",
              "decrypt after restart (%d)" % r.status_code)
        return finish()

    # ---- service account: JWT bearer grant through google-auth, token_uri from the key file
    info = json.load(open(a.sa_file))
    check(info["token_uri"].startswith("https://127.0.0.1:"), "key file token_uri points at the fake")
    creds = service_account.Credentials.from_service_account_file(a.sa_file, scopes=scope)
    req = gtr.Request()
    creds.refresh(req)
    check(bool(creds.token) and creds.token.startswith("ya29."), "google-auth refresh gets an access token")
    check(creds.expiry is not None, "token has an expiry (expires_in)")

    s = gtr.AuthorizedSession(creds)
    pt = b"0123456789abcdef0123456789abcdef"
    r = s.post(base + ":encrypt", json={"plaintext": b64(pt), "additionalAuthenticatedData": b64(aad),
                                        "plaintextCrc32c": str(crc(pt)), "additionalAuthenticatedDataCrc32c": str(crc(aad))})
    check(r.status_code == 200, "encrypt 200 (%d %s)" % (r.status_code, r.text[:200]))
    e = r.json()
    ct = base64.b64decode(e["ciphertext"])
    check(e.get("verifiedPlaintextCrc32c") is True and e.get("verifiedAdditionalAuthenticatedDataCrc32c") is True,
          "encrypt reply verifies both CRC32C fields")
    check(int(e["ciphertextCrc32c"]) == crc(ct) and isinstance(e["ciphertextCrc32c"], str),
          "ciphertextCrc32c is the CRC32C of the ciphertext, as an int64 JSON string")
    check(e["name"] == a.key + "/cryptoKeyVersions/1", "name is the key version used (%s)" % e["name"])

    r = s.post(base + ":decrypt", json={"ciphertext": e["ciphertext"], "additionalAuthenticatedData": b64(aad),
                                        "ciphertextCrc32c": str(crc(ct)), "additionalAuthenticatedDataCrc32c": str(crc(aad))})
    d = r.json()
    check(r.status_code == 200 and base64.b64decode(d["plaintext"]) == pt, "decrypt round trip")
    check(int(d["plaintextCrc32c"]) == crc(pt) and d.get("usedPrimary") is True, "decrypt plaintextCrc32c, usedPrimary")

    r = s.post(base + ":decrypt", json={"ciphertext": e["ciphertext"], "additionalAuthenticatedData": b64(aad + b"x")})
    check(r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT" and
          "Decryption failed" in r.json()["error"]["message"], "decrypt with another AAD -> 400 INVALID_ARGUMENT")
    r = s.post(base + ":encrypt", json={"plaintext": b64(pt), "plaintextCrc32c": str(crc(pt) ^ 1)})
    check(r.status_code == 400 and "checksum" in r.json()["error"]["message"], "wrong plaintextCrc32c -> 400 checksum")
    r = s.post(base + ":encrypt", json={"plaintext": b64(pt)})
    check(r.status_code == 200 and "verifiedPlaintextCrc32c" not in r.json(), "no CRC sent -> not verified (omitted)")

    r = s.get(base)
    k = r.json()
    check(r.status_code == 200 and k["purpose"] == "ENCRYPT_DECRYPT" and k["primary"]["state"] == "ENABLED",
          "get cryptoKey: purpose and primary state")

    # ---- rotation: new primary, old ciphertext still opens
    ctl.op("rotate", name=a.key)
    r = s.post(base + ":encrypt", json={"plaintext": b64(pt)})
    check(r.json()["name"].endswith("/cryptoKeyVersions/2"), "after rotate, encrypt uses version 2")
    r = s.post(base + ":decrypt", json={"ciphertext": e["ciphertext"], "additionalAuthenticatedData": b64(aad)})
    check(r.status_code == 200 and r.json()["usedPrimary"] is False, "version 1 ciphertext opens after rotation")
    r = s.post(base + "/cryptoKeyVersions/1:encrypt", json={"plaintext": b64(pt)})
    check(r.status_code == 200 and r.json()["name"].endswith("/cryptoKeyVersions/1"), "encrypt with a pinned version")

    # ---- disabled version
    ctl.op("disable_version", name=a.key, version=1)
    r = s.post(base + ":decrypt", json={"ciphertext": e["ciphertext"], "additionalAuthenticatedData": b64(aad)})
    check(r.status_code == 400 and r.json()["error"]["status"] == "FAILED_PRECONDITION" and
          "DISABLED" in r.json()["error"]["message"], "disabled version -> FAILED_PRECONDITION")
    ctl.op("enable_version", name=a.key, version=1)

    # ---- tokens: expiry makes AuthorizedSession refresh (it retries once on 401)
    ctl.op("expire_tokens")
    r = s.get(base)
    check(r.status_code == 200, "expired token: AuthorizedSession refreshes on 401 and retries")
    raw = gtr.requests.get(base, headers={"Authorization": "Bearer ya29.bogus"})
    check(raw.status_code == 401 and raw.json()["error"]["status"] == "UNAUTHENTICATED" and
          "invalid_token" in raw.headers.get("WWW-Authenticate", ""), "bogus token -> 401 UNAUTHENTICATED")
    raw = gtr.requests.get(base)
    check(raw.status_code == 401, "no token -> 401")

    # ---- revoke IAM -> PERMISSION_DENIED, restore
    email = info["client_email"]
    ctl.op("revoke", email=email)
    r = s.post(base + ":encrypt", json={"plaintext": b64(pt)})
    check(r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED" and
          "cloudkms.cryptoKeyVersions.useToEncrypt" in r.json()["error"]["message"], "revoked -> 403 PERMISSION_DENIED")
    ctl.op("restore", email=email)
    check(s.post(base + ":encrypt", json={"plaintext": b64(pt)}).status_code == 200, "restored -> 200")

    # ---- the assertion's signature is verified: a key file with another private key is refused
    other = ctl.op("add_service_account")["key_file"]
    forged = dict(other, client_email=email, private_key_id=info["private_key_id"])
    fc = service_account.Credentials.from_service_account_info(forged, scopes=scope)
    try:
        fc.refresh(req)
        check(False, "assertion signed with a foreign key is refused")
    except google.auth.exceptions.RefreshError as ex:
        check("invalid_grant" in str(ex) and "Signature" in str(ex), "foreign key -> invalid_grant Invalid JWT Signature (%s)" % ex)
    wrong_aud = dict(info, token_uri=info["token_uri"].replace("/token", "/oauth2/v4/token"))
    try:
        service_account.Credentials.from_service_account_info(wrong_aud, scopes=scope).refresh(req)
        check(False, "wrong audience refused")
    except google.auth.exceptions.RefreshError:
        check(True, "assertion for another token URI -> refused")
    ctl.op("disable_account", email=email)
    try:
        service_account.Credentials.from_service_account_file(a.sa_file, scopes=scope).refresh(req)
        check(False, "disabled account refused")
    except google.auth.exceptions.RefreshError as ex:
        check("invalid_grant" in str(ex), "disabled account -> invalid_grant")
    check(gtr.requests.get(base, headers={"Authorization": "Bearer " + creds.token}).status_code == 401,
          "disabled account: its tokens stop working")
    ctl.op("enable_account", email=email)
    try:
        service_account.Credentials.from_service_account_file(a.sa_file, scopes=["https://example.com/x"]).refresh(req)
        check(False, "wrong scope refused")
    except google.auth.exceptions.RefreshError as ex:
        check("invalid_scope" in str(ex), "wrong scope -> invalid_scope")

    # ---- throttling and faults
    ctl.call("/faults", {"throttle": 1, "action": "encrypt"})
    r = s.post(base + ":encrypt", json={"plaintext": b64(pt)})
    check(r.status_code == 429 and r.json()["error"]["status"] == "RESOURCE_EXHAUSTED" and
          r.headers.get("Retry-After") == "1", "throttle -> 429 RESOURCE_EXHAUSTED with Retry-After")
    ctl.op("corrupt", field="ciphertextCrc32c")
    e2 = s.post(base + ":encrypt", json={"plaintext": b64(pt)}).json()
    check(int(e2["ciphertextCrc32c"]) != crc(base64.b64decode(e2["ciphertext"])), "corrupt ciphertextCrc32c control")
    ctl.call("/faults", {"malformed": 1, "action": "get"})
    r = s.get(base)
    try:
        r.json()
        check(False, "malformed reply")
    except ValueError:
        check(r.status_code == 200, "malformed reply is not JSON")
    ctl.call("/faults/reset", {})

    # ---- GCE metadata server, through google-auth's compute_engine credentials
    from google.auth.compute_engine import _metadata
    check(_metadata.ping(req), "metadata ping (Metadata-Flavor: Google answered)")
    check(_metadata.get(req, "instance/service-accounts/default/email").endswith(".iam.gserviceaccount.com"),
          "metadata email")
    cc = compute_engine.Credentials()
    cc.refresh(req)
    check(bool(cc.token) and cc.expiry is not None, "compute_engine credentials refresh from the metadata server")
    r = gtr.AuthorizedSession(cc).post(base + ":encrypt", json={"plaintext": b64(pt)})
    check(r.status_code == 200, "encrypt with the instance's token")
    raw = gtr.requests.get("http://127.0.0.1:%d/computeMetadata/v1/instance/service-accounts/default/token"
                           % a.metadata_port)
    check(raw.status_code == 403, "metadata token without Metadata-Flavor -> 403")

    if a.blob_out:
        r = s.post(base + ":encrypt", json={"plaintext": b64(b"secret-after-restart"), "additionalAuthenticatedData": b64(aad)})
        json.dump({"ciphertext": r.json()["ciphertext"]}, open(a.blob_out, "w"))
    return finish()


def finish():
    print("%d checks passed, %d failed" % (passed, len(failures)))
    for f in failures:
        print("  failed: %s" % f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
