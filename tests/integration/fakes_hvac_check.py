#!/usr/bin/python3
"""Prove tests/fakes/fake_vault.py speaks the Vault HTTP API (transit, token, AppRole, sys) as hvac expects.

usage: fakes_hvac_check.py --port P --control-port C --ca CA --root-token T [--other-ca CA]
                           [--blob-out F | --blob-in F]

Every check() can fail; the script exits 1 listing the failures.  Loopback only.
"""

import argparse
import base64
import json
import os
import sys
import urllib.request

import hvac
import hvac.exceptions
import requests

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


def expect_exc(fn, exc, what, has=None):
    try:
        r = fn()
    except exc as e:
        text = "%s %s" % (e, getattr(e, "errors", "") or "")
        check(has is None or has in text, "%s -> %s%s (got %r)" % (what, exc.__name__,
                                                                  "" if has is None else " '%s'" % has, text))
        return e
    except Exception as e:  # wrong exception type
        check(False, "%s -> %s (got %s: %s)" % (what, exc.__name__, type(e).__name__, e))
        return None
    check(False, "%s -> %s (no error; got %r)" % (what, exc.__name__, r))
    return None


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
        kw["op"] = op
        return self.call("/control", kw)

    def faults(self, **kw):
        return self.call("/faults", kw)


def b64(b):
    return base64.b64encode(b).decode()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--other-ca")
    p.add_argument("--root-token", required=True)
    p.add_argument("--blob-out")
    p.add_argument("--blob-in")
    args = p.parse_args()
    url = "https://127.0.0.1:%d" % args.port
    ctl = Ctl(args.control_port)

    def vc(token=None, namespace=None):
        return hvac.Client(url=url, token=token, verify=args.ca, namespace=namespace, timeout=10)

    root = vc(args.root_token)
    tr = root.secrets.transit

    if args.blob_in:
        with open(args.blob_in) as f:
            saved = json.load(f)
        r = vc(saved["token"]).secrets.transit.decrypt_data(saved["key"], saved["ciphertext"])
        check(base64.b64decode(r["data"]["plaintext"]) == base64.b64decode(saved["plaintext"]),
              "ciphertext decrypts after a restart with --state (AppRole token survives too)")
        return finish()

    # ---- sys
    check(root.sys.is_sealed() is False, "sys/seal-status: unsealed")
    check(root.is_authenticated(), "root token authenticates (auth/token/lookup-self)")
    h = requests.get(url + "/v1/sys/health", verify=args.ca)
    check(h.status_code == 200 and h.json().get("sealed") is False and h.json().get("initialized") is True,
          "sys/health 200 unsealed")

    # ---- transit keys, encrypt/decrypt
    tr.create_key("vol-key")
    k = tr.read_key("vol-key")["data"]
    check(k["type"] == "aes256-gcm96" and k["latest_version"] == 1 and k["min_decryption_version"] == 1
          and list(k["keys"]) == ["1"], "transit keys/<name>: type, versions")
    pt = os.urandom(32)
    r = tr.encrypt_data("vol-key", b64(pt))
    ct1 = r["data"]["ciphertext"]
    check(ct1.startswith("vault:v1:") and r["data"].get("key_version") == 1, "encrypt -> vault:v1:...")
    check(base64.b64decode(tr.decrypt_data("vol-key", ct1)["data"]["plaintext"]) == pt, "decrypt round trip")
    bad = ct1[:-6] + ("AAAAAA" if not ct1.endswith("AAAAAA") else "BBBBBB")
    expect_exc(lambda: tr.decrypt_data("vol-key", bad), hvac.exceptions.InvalidRequest, "tampered ciphertext",
               "message authentication failed")
    expect_exc(lambda: tr.decrypt_data("vol-key", "garbage"), hvac.exceptions.InvalidRequest,
               "ciphertext without prefix", "invalid ciphertext: no prefix")
    expect_exc(lambda: tr.decrypt_data("no-such-key", ct1), hvac.exceptions.InvalidRequest, "decrypt with unknown key",
               "encryption key not found")
    expect_exc(lambda: tr.read_key("no-such-key"), hvac.exceptions.InvalidPath, "read unknown key -> 404")
    check("vol-key" in tr.list_keys()["data"]["keys"], "LIST transit/keys")

    # associated_data (hvac 0.11 has no parameter for it: generic write)
    ad = b64(b"volume-uuid-1234")
    r = root.write("transit/encrypt/vol-key", plaintext=b64(pt), associated_data=ad)
    ct_ad = r["data"]["ciphertext"]
    r = root.write("transit/decrypt/vol-key", ciphertext=ct_ad, associated_data=ad)
    check(base64.b64decode(r["data"]["plaintext"]) == pt, "associated_data round trip")
    expect_exc(lambda: root.write("transit/decrypt/vol-key", ciphertext=ct_ad), hvac.exceptions.InvalidRequest,
               "decrypt without the associated_data", "message authentication failed")
    expect_exc(lambda: root.write("transit/decrypt/vol-key", ciphertext=ct_ad, associated_data=b64(b"other")),
               hvac.exceptions.InvalidRequest, "decrypt with other associated_data", "message authentication failed")

    # derived key with context
    tr.create_key("derived-key", derived=True)
    check(tr.read_key("derived-key")["data"]["derived"] is True, "derived key metadata")
    c1 = b64(b"ctx-one")
    expect_exc(lambda: tr.encrypt_data("derived-key", b64(pt)), hvac.exceptions.InvalidRequest,
               "derived key without context", "missing 'context'")
    ctd = tr.encrypt_data("derived-key", b64(pt), context=c1)["data"]["ciphertext"]
    check(base64.b64decode(tr.decrypt_data("derived-key", ctd, context=c1)["data"]["plaintext"]) == pt,
          "derived key round trip with context")
    expect_exc(lambda: tr.decrypt_data("derived-key", ctd, context=b64(b"ctx-two")), hvac.exceptions.InvalidRequest,
               "derived key with another context", "message authentication failed")

    # rotation, rewrap, min_decryption_version
    tr.rotate_key("vol-key")
    k = tr.read_key("vol-key")["data"]
    check(k["latest_version"] == 2 and sorted(k["keys"]) == ["1", "2"], "rotate -> version 2")
    ct2 = tr.encrypt_data("vol-key", b64(pt))["data"]["ciphertext"]
    check(ct2.startswith("vault:v2:"), "encrypt after rotate uses v2")
    ct1v1 = tr.encrypt_data("vol-key", b64(pt), key_version=1)["data"]["ciphertext"]
    check(ct1v1.startswith("vault:v1:"), "encrypt with key_version=1")
    check(base64.b64decode(tr.decrypt_data("vol-key", ct1)["data"]["plaintext"]) == pt, "v1 ciphertext still decrypts")
    rw = tr.rewrap_data("vol-key", ct1)["data"]
    check(rw["ciphertext"].startswith("vault:v2:") and rw.get("key_version") == 2, "rewrap v1 -> v2")
    check(base64.b64decode(tr.decrypt_data("vol-key", rw["ciphertext"])["data"]["plaintext"]) == pt,
          "rewrapped ciphertext decrypts")
    expect_exc(lambda: tr.encrypt_data("vol-key", b64(pt), key_version=3), hvac.exceptions.InvalidRequest,
               "encrypt with a future key_version", "higher than the latest key version")
    tr.update_key_configuration("vol-key", min_decryption_version=2)
    k = tr.read_key("vol-key")["data"]
    check(k["min_decryption_version"] == 2 and list(k["keys"]) == ["2"], "min_decryption_version=2 hides v1")
    expect_exc(lambda: tr.decrypt_data("vol-key", ct1), hvac.exceptions.InvalidRequest,
               "v1 ciphertext below min_decryption_version", "disallowed by policy (too old)")
    expect_exc(lambda: tr.decrypt_data("vol-key", "vault:v9:" + ct2[9:]), hvac.exceptions.InvalidRequest,
               "ciphertext from a version that does not exist", "version is too new")
    expect_exc(lambda: tr.update_key_configuration("vol-key", min_decryption_version=5),
               hvac.exceptions.InvalidRequest, "min_decryption_version above latest")

    # batch
    items = [{"plaintext": b64(b"a" * 32)}, {"plaintext": b64(b"b" * 32)}]
    res = tr.encrypt_data("vol-key", None, batch_input=items)["data"]["batch_results"]
    check(len(res) == 2 and all(r["ciphertext"].startswith("vault:v2:") for r in res), "batch encrypt")
    dres = tr.decrypt_data("vol-key", None, batch_input=[{"ciphertext": r["ciphertext"]} for r in res]
                           + [{"ciphertext": ct1}])["data"]["batch_results"]
    check(base64.b64decode(dres[0]["plaintext"]) == b"a" * 32 and base64.b64decode(dres[1]["plaintext"]) == b"b" * 32
          and "too old" in dres[2].get("error", ""), "batch decrypt with a per-item error")

    # ---- policies + AppRole
    root.sys.create_or_update_policy("vol-unlock", {"path": {
        "transit/encrypt/vol-key": {"capabilities": ["update"]},
        "transit/decrypt/vol-key": {"capabilities": ["update"]},
        "transit/keys/vol-key": {"capabilities": ["read"]}}})
    root.auth.approle.create_or_update_approle("unlock", token_policies=["vol-unlock"], token_ttl="10m")
    role_id = root.auth.approle.read_role_id("unlock")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("unlock")["data"]["secret_id"]
    app = vc()
    login = app.auth.approle.login(role_id, secret_id)
    tok = login["auth"]["client_token"]
    check(tok.startswith("hvs.") and login["auth"]["lease_duration"] == 600 and
          "vol-unlock" in login["auth"]["policies"], "AppRole login -> client_token, lease_duration 600")
    check(app.token == tok and app.is_authenticated(), "hvac uses the AppRole token")
    me = app.auth.token.lookup_self()["data"]
    check(590 <= me["ttl"] <= 600 and "vol-unlock" in me["policies"] and me["id"] == tok, "token lookup-self")
    ren = app.auth.token.renew_self()
    check(ren["auth"]["client_token"] == tok and ren["auth"]["lease_duration"] == 600, "token renew-self")
    r = app.secrets.transit.encrypt_data("vol-key", b64(pt))
    check(base64.b64decode(app.secrets.transit.decrypt_data("vol-key", r["data"]["ciphertext"])["data"]
                           ["plaintext"]) == pt, "AppRole token can encrypt/decrypt its key")
    e = expect_exc(lambda: app.secrets.transit.encrypt_data("derived-key", b64(pt), context=c1),
                   hvac.exceptions.Forbidden, "AppRole token on another key", "permission denied")
    check(e is not None and e.errors == ["1 error occurred:\n\t* permission denied\n\n"],
          "403 body is Vault's permission-denied error list")
    expect_exc(lambda: app.secrets.transit.create_key("new-key"), hvac.exceptions.Forbidden,
               "AppRole token cannot create keys")
    expect_exc(lambda: app.secrets.transit.encrypt_data("not-yet", b64(pt)), hvac.exceptions.Forbidden,
               "encrypt to a missing key needs 'create'")
    expect_exc(lambda: vc().auth.approle.login(role_id, "wrong-secret-id"), hvac.exceptions.InvalidRequest,
               "AppRole login with a wrong secret_id", "invalid role or secret ID")
    expect_exc(lambda: vc().auth.approle.login("no-such-role", secret_id), hvac.exceptions.InvalidRequest,
               "AppRole login with a wrong role_id")

    # the same set-up through the control API
    ctl.op("set_policy", name="ctl-policy", rules={"transit/decrypt/vol-key": ["update"]})
    ids = ctl.op("create_approle", name="ctl-role", policies=["ctl-policy"], token_ttl="5m")
    cl = vc()
    lg = cl.auth.approle.login(ids["role_id"], ids["secret_id"])
    check(lg["auth"]["lease_duration"] == 300 and base64.b64decode(
        cl.secrets.transit.decrypt_data("vol-key", ct2)["data"]["plaintext"]) == pt,
        "control API create_approle + set_policy: login and decrypt")
    expect_exc(lambda: cl.secrets.transit.encrypt_data("vol-key", b64(pt)), hvac.exceptions.Forbidden,
               "control API policy grants decrypt only")
    ctok = ctl.op("create_token", policies=["ctl-policy"], ttl="1h")["token"]
    check(vc(ctok).auth.token.lookup_self()["data"]["ttl"] > 3500, "control API create_token")

    # token revocation / expiry
    ctl.op("revoke_token", token=tok)
    e = expect_exc(lambda: app.secrets.transit.decrypt_data("vol-key", ct2), hvac.exceptions.Forbidden,
                   "revoked token (control API)", "invalid token")
    check(not app.is_authenticated(), "is_authenticated() is False after revocation")
    tok2 = vc().auth.approle.login(role_id, root.auth.approle.generate_secret_id("unlock")["data"]["secret_id"]
                                   )["auth"]["client_token"]
    ctl.op("expire_tokens")
    expect_exc(lambda: vc(tok2).secrets.transit.decrypt_data("vol-key", ct2), hvac.exceptions.Forbidden,
               "expired token (expire_tokens)", "invalid token")
    check(root.is_authenticated(), "root token survives expire_tokens")
    tok3 = vc().auth.approle.login(role_id, root.auth.approle.generate_secret_id("unlock")["data"]["secret_id"]
                                   )["auth"]["client_token"]
    ctl.op("clock", offset_s=601)
    expect_exc(lambda: vc(tok3).secrets.transit.decrypt_data("vol-key", ct2), hvac.exceptions.Forbidden,
               "token past its TTL (server clock +601 s)", "invalid token")
    ctl.op("clock", offset_s=0)
    t4 = root.auth.token.create(policies=["vol-unlock"], ttl="1h")["auth"]["client_token"]
    c4 = vc(t4)
    check(c4.is_authenticated(), "auth/token/create")
    c4.auth.token.revoke_self()
    expect_exc(lambda: c4.secrets.transit.decrypt_data("vol-key", ct2), hvac.exceptions.Forbidden,
               "token after revoke-self")
    expect_exc(lambda: vc("hvs.not-a-token").secrets.transit.decrypt_data("vol-key", ct2),
               hvac.exceptions.Forbidden, "unknown token", "invalid token")

    # ---- sealed
    ctl.op("seal")
    check(root.sys.is_sealed() is True, "seal-status shows sealed")
    e = expect_exc(lambda: tr.decrypt_data("vol-key", ct2), hvac.exceptions.VaultDown, "sealed -> 503",
                   "Vault is sealed")
    check(e is not None and e.errors == ["Vault is sealed"], "503 body is {\"errors\":[\"Vault is sealed\"]}")
    h = requests.get(url + "/v1/sys/health", verify=args.ca)
    check(h.status_code == 503 and h.json().get("sealed") is True, "sys/health 503 when sealed")
    h = requests.get(url + "/v1/sys/health?sealedcode=200", verify=args.ca)
    check(h.status_code == 200 and h.json().get("sealed") is True, "sys/health?sealedcode=200 when sealed")
    ctl.op("unseal")
    check(base64.b64decode(tr.decrypt_data("vol-key", ct2)["data"]["plaintext"]) == pt, "unsealed again")

    # ---- faults
    ctl.faults(throttle=1)
    e = expect_exc(lambda: tr.decrypt_data("vol-key", ct2), hvac.exceptions.RateLimitExceeded, "throttle -> 429",
                   "rate limit quota exceeded")
    ctl.faults(error5xx=1)
    expect_exc(lambda: tr.decrypt_data("vol-key", ct2), hvac.exceptions.InternalServerError, "5xx fault -> 500")
    ctl.faults(error5xx=1, status=503)
    expect_exc(lambda: tr.decrypt_data("vol-key", ct2), hvac.exceptions.VaultDown, "5xx fault with status 503")
    ctl.faults(malformed=1)
    r = tr.decrypt_data("vol-key", ct2)
    check(not isinstance(r, dict), "malformed 200 body: hvac cannot parse JSON (returns the raw response)")
    ctl.faults(drop=1)
    expect_exc(lambda: tr.decrypt_data("vol-key", ct2), requests.exceptions.ConnectionError,
               "dropped connection")
    ctl.faults(throttle=1, action="transit.encrypt")
    check(base64.b64decode(tr.decrypt_data("vol-key", ct2)["data"]["plaintext"]) == pt,
          "fault limited to one action leaves others alone")
    expect_exc(lambda: tr.encrypt_data("vol-key", b64(pt)), hvac.exceptions.RateLimitExceeded,
               "action-limited fault hits its action")
    ctl.call("/faults/reset", {})

    # ---- namespaces (X-Vault-Namespace)
    ctl.op("create_namespace", name="team-a")
    rns = vc(args.root_token, namespace="team-a")
    rns.secrets.transit.create_key("ns-key")
    ctn = rns.secrets.transit.encrypt_data("ns-key", b64(pt))["data"]["ciphertext"]
    check(base64.b64decode(rns.secrets.transit.decrypt_data("ns-key", ctn)["data"]["plaintext"]) == pt,
          "transit in namespace team-a")
    last = ctl.call("/requests")["requests"][-1]
    check(last["namespace"] == "team-a" and any(k.lower() == "x-vault-namespace" and v == "team-a"
                                                for k, v in last["headers"]), "hvac sent X-Vault-Namespace")
    expect_exc(lambda: tr.read_key("ns-key"), hvac.exceptions.InvalidPath, "namespace key invisible from root")
    rns.sys.create_or_update_policy("p", {"path": {"transit/decrypt/ns-key": {"capabilities": ["update"]}}})
    rns.auth.approle.create_or_update_approle("r", token_policies=["p"])
    nrid = rns.auth.approle.read_role_id("r")["data"]["role_id"]
    nsid = rns.auth.approle.generate_secret_id("r")["data"]["secret_id"]
    ntok = vc(namespace="team-a").auth.approle.login(nrid, nsid)["auth"]["client_token"]
    check(base64.b64decode(vc(ntok, "team-a").secrets.transit.decrypt_data("ns-key", ctn)["data"]["plaintext"])
          == pt, "namespace AppRole token decrypts in its namespace")
    expect_exc(lambda: vc(ntok).secrets.transit.decrypt_data("vol-key", ct2), hvac.exceptions.Forbidden,
               "namespace token rejected in the root namespace")
    expect_exc(lambda: vc(namespace="team-b").auth.approle.login(nrid, nsid), hvac.exceptions.InvalidPath,
               "unknown namespace")

    # ---- connection reuse counters
    ctl.call("/counters/reset", {})
    c = vc(args.root_token)
    for _ in range(5):
        c.secrets.transit.decrypt_data("vol-key", ct2)
    cnt = ctl.call("/counters")
    check(cnt["requests_by_action"].get("transit.decrypt") == 5, "per-action request counter")
    check(cnt["tcp_connections"] == 1 and cnt["tls_handshakes"] == 1,
          "keep-alive: 5 requests over %d connection(s), %d handshake(s)" % (cnt["tcp_connections"],
                                                                          cnt["tls_handshakes"]))
    ctl.faults(close=1)
    c.secrets.transit.decrypt_data("vol-key", ct2)
    c.secrets.transit.decrypt_data("vol-key", ct2)
    check(ctl.call("/counters")["tcp_connections"] == 2, "'Connection: close' fault: the next request reconnects")

    # ---- TLS verification with an unrelated CA
    if args.other_ca:
        expect_exc(lambda: hvac.Client(url=url, token=args.root_token, verify=args.other_ca).sys.read_seal_status(),
                   requests.exceptions.SSLError, "client trusting an unrelated CA refuses the server")

    if args.blob_out:
        t5 = vc().auth.approle.login(role_id, root.auth.approle.generate_secret_id("unlock")["data"]["secret_id"]
                                     )["auth"]["client_token"]
        with open(args.blob_out, "w") as f:
            json.dump({"token": t5, "key": "vol-key", "ciphertext": ct2, "plaintext": b64(pt)}, f)
    return finish()


def finish():
    print("\n%d passed, %d failed" % (passed, len(failures)))
    for f in failures:
        print("  FAILED: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
