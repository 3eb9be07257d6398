#!/usr/bin/python3
"""Prove tests/fakes/fake_ciphertrust.py answers as Thales CipherTrust Manager documents its REST API.

There is no CipherTrust client in Debian: this is a small client written from the documentation
(thalesdocs.com CipherTrust Manager "Authentication Tokens", "Keys", and the API playground's
/v1/auth/tokens, /v1/vault/keys2, /v1/crypto/encrypt|decrypt), kept apart from kmscrypt's C code.

usage: fakes_ciphertrust_check.py --port P --control-port C --ca CA --other-ca CA --state F
                                  [--phase all|restart]
Every check() can fail; the script exits 1 listing the failures.  Loopback only.
"""

import argparse
import base64
import json
import sys
import time
import urllib.request

import requests

failures = []
passed = 0
USER, PASSWORD = "kmscrypt", "kmscrypt-Fake-Password-1"


def check(cond, what):
    global passed
    if cond:
        passed += 1
        print("ok   %s" % what)
    else:
        failures.append(what)
        print("FAIL %s" % what)
    return cond


class CipherTrust:
    """The documented client flow: trade credentials for a JWT at /api/v1/auth/tokens, send it as a
    Bearer token, get a new one with the refresh token when the API answers 401."""

    def __init__(self, base, ca):
        self.base = base
        self.s = requests.Session()
        self.s.verify = ca
        self.jwt = None
        self.refresh = None

    def login(self, **body):
        r = self.s.post(self.base + "/api/v1/auth/tokens", json=body, timeout=10)
        if r.status_code == 200:
            d = r.json()
            self.jwt = d["jwt"]
            self.refresh = d.get("refresh_token", self.refresh)
        return r

    def call(self, method, path, retry=True, **kw):
        h = {"Authorization": "Bearer %s" % self.jwt, "Accept": "application/json"}
        r = self.s.request(method, self.base + path, headers=h, timeout=10, **kw)
        if r.status_code == 401 and retry and self.refresh:
            if self.login(grant_type="refresh_token", refresh_token=self.refresh).status_code == 200:
                return self.call(method, path, retry=False, **kw)
        return r


def ctl(cport, op, **args):
    req = urllib.request.Request("http://127.0.0.1:%d/control" % cport,
                                 data=json.dumps(dict(args, op=op)).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def faults(cport, **args):
    req = urllib.request.Request("http://127.0.0.1:%d/faults" % cport, data=json.dumps(args).encode(),
                                 method="POST")
    urllib.request.urlopen(req, timeout=10).read()


def b64(b):
    return base64.b64encode(b).decode()


def err_shape(r):
    try:
        d = r.json()
    except ValueError:
        return False
    return isinstance(d.get("code"), int) and isinstance(d.get("codeDesc"), str) and \
        isinstance(d.get("message"), str)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--control-port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--other-ca", required=True)
    ap.add_argument("--blob", required=True, help="file to keep a ciphertext across a restart")
    ap.add_argument("--phase", default="all", choices=["all", "restart"])
    a = ap.parse_args()
    base = "https://127.0.0.1:%d" % a.port
    cp = a.control_port
    c = CipherTrust(base, a.ca)

    if a.phase == "restart":
        saved = json.load(open(a.blob))
        r = c.login(grant_type="password", username=USER, password=PASSWORD)
        check(r.status_code == 200, "restart: password login on the saved state")
        r = c.call("POST", "/api/v1/crypto/decrypt", json=saved["reply"])
        check(r.status_code == 200 and base64.b64decode(r.json()["plaintext"]) == b"k" * 32,
              "restart: a ciphertext made before the restart decrypts")
        return

    # ---- authentication tokens
    r = c.login(grant_type="password", username=USER, password=PASSWORD)
    d = r.json() if r.status_code == 200 else {}
    check(r.status_code == 200, "password grant -> 200")
    check(isinstance(d.get("jwt"), str) and d["jwt"].count(".") == 2, "reply has a JWT (three dot-separated parts)")
    check(d.get("duration") == 300, "duration 300 s (API tokens are valid for 5 minutes)")
    check(d.get("token_type") == "Bearer", "token_type Bearer")
    check(isinstance(d.get("refresh_token"), str) and len(d["refresh_token"]) > 20,
          "password grant also issues a refresh token")
    rt = d.get("refresh_token")
    r = c.login(grant_type="password", username=USER, password="wrong")
    check(r.status_code == 401 and err_shape(r), "wrong password -> 401 with {code, codeDesc, message}")
    r = c.login(grant_type="password", username=USER, password=PASSWORD, domain="root")
    check(r.status_code == 200, "password grant with domain root")
    r = c.s.post(base + "/api/v1/auth/tokens", json={"grant_type": "refresh_token", "refresh_token": rt}, timeout=10)
    check(r.status_code == 200 and "jwt" in r.json() and "refresh_token" not in r.json(),
          "refresh_token grant -> a new JWT, no new refresh token")
    r = c.s.post(base + "/api/v1/auth/tokens", json={"grant_type": "refresh_token", "refresh_token": "nope"},
                 timeout=10)
    check(r.status_code == 401 and err_shape(r), "unknown refresh token -> 401")
    c.login(grant_type="password", username=USER, password=PASSWORD)
    r = c.s.get(base + "/api/v1/vault/keys2", timeout=10)
    check(r.status_code == 401, "no Bearer token -> 401")

    # ---- keys2
    name = "kmscrypt-check-key"
    r = c.call("GET", "/api/v1/vault/keys2", params={"name": name})
    check(r.status_code == 200 and r.json().get("total") == 0 and r.json().get("resources") == [],
          "list by an unknown name -> empty resources")
    r = c.call("POST", "/api/v1/vault/keys2", json={"name": name, "algorithm": "aes", "size": 256, "usageMask": 12})
    key = r.json() if r.status_code == 201 else {}
    check(r.status_code == 201, "create an AES-256 key -> 201")
    check(key.get("state") == "Active" and key.get("usageMask") == 12 and key.get("algorithm") == "AES" and
          key.get("size") == 256 and key.get("version") == 0, "new key: Active, usageMask 12, AES, 256, version 0")
    r = c.call("POST", "/api/v1/vault/keys2", json={"name": name, "algorithm": "aes"})
    check(r.status_code == 409 and err_shape(r), "same name again -> 409")
    r = c.call("GET", "/api/v1/vault/keys2", params={"name": name})
    res = r.json().get("resources", [])
    check(r.status_code == 200 and len(res) == 1 and res[0]["id"] == key.get("id"),
          "list by name -> exactly that key")
    r = c.call("GET", "/api/v1/vault/keys2/" + key.get("id", "x"))
    check(r.status_code == 200 and r.json().get("name") == name, "get by id")
    r = c.call("GET", "/api/v1/vault/keys2/nope")
    check(r.status_code == 404 and err_shape(r), "get an unknown id -> 404")

    # ---- crypto, AES-GCM with aad
    aad = b"kmscrypt:v1:volume-uuid:0"
    r = c.call("POST", "/api/v1/crypto/encrypt",
               json={"id": name, "type": "name", "plaintext": b64(b"k" * 32), "mode": "gcm", "aad": b64(aad)})
    enc = r.json() if r.status_code == 200 else {}
    check(r.status_code == 200, "encrypt by name, mode gcm, aad -> 200")
    check(all(isinstance(enc.get(f), str) for f in ("ciphertext", "tag", "iv")) and enc.get("mode") == "gcm" and
          enc.get("version") == 0 and enc.get("id") == key.get("id"),
          "encrypt reply: ciphertext, tag, iv, mode gcm, version 0, key id")
    check(len(base64.b64decode(enc.get("iv", ""))) == 12 and len(base64.b64decode(enc.get("tag", ""))) == 16,
          "12-byte IV, 16-byte tag")
    json.dump({"reply": dict(enc, aad=b64(aad))}, open(a.blob, "w"))
    r = c.call("POST", "/api/v1/crypto/decrypt", json=dict(enc, aad=b64(aad)))
    check(r.status_code == 200 and base64.b64decode(r.json().get("plaintext", "")) == b"k" * 32,
          "decrypt with every field of the encrypt reply -> the plaintext")
    r = c.call("POST", "/api/v1/crypto/decrypt", json=dict(enc, aad=b64(b"kmscrypt:v1:other:0")))
    check(r.status_code == 400 and err_shape(r), "decrypt with another aad -> 400")
    t = bytearray(base64.b64decode(enc["tag"]))
    t[0] ^= 1
    r = c.call("POST", "/api/v1/crypto/decrypt", json=dict(enc, aad=b64(aad), tag=b64(bytes(t))))
    check(r.status_code == 400, "decrypt with a changed tag -> 400")
    r = c.call("POST", "/api/v1/crypto/decrypt", json=dict(enc, aad=b64(aad), version=str(enc.get("version"))))
    check(r.status_code == 200, "decrypt takes the version as a string too")

    # ---- rotation: the old version keeps decrypting
    ctl(cp, "rotate_key", name=name)
    r = c.call("POST", "/api/v1/crypto/encrypt",
               json={"id": name, "type": "name", "plaintext": b64(b"n" * 32), "mode": "gcm", "aad": b64(aad)})
    check(r.status_code == 200 and r.json().get("version") == 1, "after rotation encrypt uses version 1")
    r = c.call("POST", "/api/v1/crypto/decrypt", json=dict(enc, aad=b64(aad)))
    check(r.status_code == 200, "a version 0 ciphertext still decrypts after rotation")
    r = c.call("GET", "/api/v1/vault/keys2", params={"name": name})
    check(r.json()["resources"][0].get("version") == 1, "the key list shows version 1")

    # ---- key rules: state and usage mask
    ctl(cp, "deactivate_key", name=name)
    r = c.call("GET", "/api/v1/vault/keys2", params={"name": name})
    check(r.json()["resources"][0].get("state") == "Deactivated", "deactivated key is listed as Deactivated")
    r = c.call("POST", "/api/v1/crypto/encrypt", json={"id": name, "type": "name", "plaintext": b64(b"x"),
                                                        "mode": "gcm"})
    check(r.status_code == 403 and err_shape(r), "encrypt with a Deactivated key -> 403")
    ctl(cp, "activate_key", name=name)
    ctl(cp, "set_usage_mask", name=name, usageMask=4)
    r = c.call("POST", "/api/v1/crypto/decrypt", json=dict(enc, aad=b64(aad)))
    check(r.status_code == 403, "decrypt with a usage mask without Decrypt -> 403")
    ctl(cp, "set_usage_mask", name=name, usageMask=12)

    # ---- JWT expiry and refresh, revocation
    ctl(cp, "expire_jwts")
    r = c.call("GET", "/api/v1/vault/keys2", retry=False, params={"name": name})
    check(r.status_code == 401, "expired JWT -> 401")
    r = c.call("GET", "/api/v1/vault/keys2", params={"name": name})
    check(r.status_code == 200, "a new JWT from the refresh token works")
    ctl(cp, "jwt_duration", seconds=2)
    c.login(grant_type="password", username=USER, password=PASSWORD)
    time.sleep(2.2)
    r = c.call("GET", "/api/v1/vault/keys2", retry=False, params={"name": name})
    check(r.status_code == 401, "a JWT of duration 2 s is refused after 2 s")
    ctl(cp, "jwt_duration", seconds=300)
    rt2 = ctl(cp, "issue_refresh_token", username=USER)["refresh_token"]
    r = c.login(grant_type="refresh_token", refresh_token=rt2)
    check(r.status_code == 200, "a refresh token issued by the administrator logs in")
    ctl(cp, "revoke_refresh_token", refresh_token=rt2)
    r = c.login(grant_type="refresh_token", refresh_token=rt2)
    check(r.status_code == 401, "revoked refresh token -> 401")
    rt3 = ctl(cp, "issue_refresh_token", username=USER, lifetime_s=1)["refresh_token"]
    time.sleep(1.1)
    check(c.login(grant_type="refresh_token", refresh_token=rt3).status_code == 401, "expired refresh token -> 401")
    ctl(cp, "disable_user", username=USER)
    check(c.login(grant_type="password", username=USER, password=PASSWORD).status_code == 401,
          "disabled user -> 401 at login")
    ctl(cp, "enable_user", username=USER)
    c.login(grant_type="password", username=USER, password=PASSWORD)

    # ---- faults
    faults(cp, throttle=1, action="crypto.encrypt")
    r = c.call("POST", "/api/v1/crypto/encrypt", json={"id": name, "type": "name", "plaintext": b64(b"x")})
    check(r.status_code == 429 and r.headers.get("Retry-After") == "1", "throttle -> 429 with Retry-After")
    faults(cp, malformed=1, action="crypto.decrypt", mode="truncated")
    r = c.call("POST", "/api/v1/crypto/decrypt", json=dict(enc, aad=b64(aad)))
    try:
        r.json()
        ok = False
    except ValueError:
        ok = True
    check(r.status_code == 200 and ok, "malformed -> 200 with a truncated body")
    faults(cp, error5xx=1, status=503)
    check(c.call("GET", "/api/v1/vault/keys2").status_code == 503, "error5xx 503")
    faults(cp, latency_ms=300, action="keys.list")
    t0 = time.time()
    c.call("GET", "/api/v1/vault/keys2")
    check(time.time() - t0 >= 0.3, "latency 300 ms")
    faults(cp, latency_ms=0)
    ctl(cp, "reply_style", version="string", duration="string")
    r = c.login(grant_type="password", username=USER, password=PASSWORD)
    check(r.json().get("duration") == "300", "reply_style: duration as a string")
    r = c.call("POST", "/api/v1/crypto/encrypt", json={"id": name, "type": "name", "plaintext": b64(b"x"),
                                                        "mode": "gcm"})
    check(r.json().get("version") == "1", "reply_style: version as a string")
    ctl(cp, "reply_style", version="int", duration="int")

    # ---- TLS: a client that trusts another CA is refused
    try:
        requests.get(base + "/api/v1/vault/keys2", verify=a.other_ca, timeout=10)
        check(False, "TLS with an unrelated CA fails")
    except requests.exceptions.SSLError:
        check(True, "TLS with an unrelated CA fails")


if __name__ == "__main__":
    main()
    print("%d passed, %d failed" % (passed, len(failures)))
    for f in failures:
        print("FAILED: %s" % f)
    sys.exit(1 if failures else 0)
