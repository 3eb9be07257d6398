#!/usr/bin/python3
"""Proof that fake_azure_kv.py speaks Azure's protocols: Microsoft's own clients (Debian
python3-azure: azure-identity with MSAL, azure-keyvault-keys) against the fake.

  fakes_azure_check.py PORT IMDS_PORT CONTROL_PORT CA OTHER_CA TENANT CLIENT_ID SECRET [restart]

Run by tests/integration/test_fakes_azure.sh.  Prints "ok - ..." per check, exits 1 on a failure.
"""

import base64
import json
import os
import sys
import urllib.request

from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError,  # noqa: E402
                                   ResourceNotFoundError, ServiceRequestError)
from azure.identity import ClientSecretCredential, ManagedIdentityCredential  # noqa: E402
from azure.keyvault.keys import KeyClient, KeyOperation  # noqa: E402
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

port, iport, cport, ca, other_ca, tenant, cid, secret = sys.argv[1:9]
phase = sys.argv[9] if len(sys.argv) > 9 else "main"
base = "https://127.0.0.1:%s" % port
fails = 0


def check(cond, what):
    global fails
    if cond:
        print("ok - %s" % what)
    else:
        fails += 1
        print("FAIL - %s" % what)


def ctl(path, obj=None):
    data = json.dumps(obj).encode() if obj is not None else None
    req = urllib.request.Request("http://127.0.0.1:%s%s" % (cport, path), data=data,
                                 method="POST" if data else "GET")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def raises(exc, fn, what, contains=None):
    try:
        fn()
    except exc as e:
        check(contains is None or contains in str(e), "%s (%s%s)" % (what, type(e).__name__,
                                                              "" if contains is None else ": " + contains))
        return e
    except Exception as e:  # noqa: BLE001
        check(False, "%s: raised %s: %s" % (what, type(e).__name__, e))
        return None
    check(False, "%s: no exception" % what)
    return None


def cred(sec=secret, verify=ca):
    kw = {"authority": base, "connection_verify": verify}
    # keep MSAL away from login.microsoftonline.com (instance discovery)
    kw["instance_discovery"] = False
    return ClientSecretCredential(tenant, cid, sec, **kw)


def client(c, verify=ca):
    return KeyClient(base, c, verify_challenge_resource=False, connection_verify=verify, retry_total=3,
                     retry_backoff_factor=0.1)


def crypto(key_or_id, c):
    return CryptographyClient(key_or_id, c, verify_challenge_resource=False, connection_verify=ca)


c = cred()
kc = client(c)

if phase == "restart":
    # the fake restarted on the same --state: the old key and its versions are still there
    st = json.load(open(os.environ["AZ_CHECK_STATE"]))
    key = kc.get_key("sdk-key", st["v1"])
    check(key.properties.version == st["v1"], "key version survives a restart")
    r = crypto(key.id, c).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, base64.b64decode(st["blob"]))
    check(r.key == b"k" * 32, "a value wrapped before the restart unwraps")
    sys.exit(1 if fails else 0)

# ---- identity platform: client credentials through MSAL
tok = c.get_token("https://vault.azure.net/.default")
check(tok.token.count(".") == 2 and tok.expires_on > 0, "ClientSecretCredential gets a token from the fake")
raises(ClientAuthenticationError, lambda: cred("wrong").get_token("https://vault.azure.net/.default"),
       "a wrong client secret is refused", "AADSTS7000215")
raises(ClientAuthenticationError,
       lambda: ClientSecretCredential("no-such-tenant", cid, secret, authority=base, connection_verify=ca,
                                      instance_discovery=False).get_token("https://vault.azure.net/.default"),
       "an unknown tenant is refused", "AADSTS90002")

# ---- Key Vault keys through the 401 challenge
key = kc.create_rsa_key("sdk-key", size=2048, key_operations=[KeyOperation.wrap_key, KeyOperation.unwrap_key])
check(key.key_type == "RSA" and key.properties.enabled, "create_rsa_key returns an enabled RSA key")
check(sorted(key.key_operations) == ["unwrapKey", "wrapKey"], "key_ops as created")
check(key.id == "%s/keys/sdk-key/%s" % (base, key.properties.version), "kid is https://VAULT/keys/NAME/VERSION")
check(key.properties.not_before is None and key.properties.expires_on is None, "no nbf or exp")
got = kc.get_key("sdk-key")
check(got.properties.version == key.properties.version, "get_key returns the latest version")
check(got.key.n == key.key.n and len(got.key.n) == 256, "the public key is a 2048-bit modulus")
pol = kc.get_key_rotation_policy("sdk-key")
check(all(a.action.lower() != "rotate" for a in pol.lifetime_actions), "default rotation policy only notifies")
ctl("/control", {"op": "set_rotation_policy", "name": "sdk-key", "rotate": True})
pol = kc.get_key_rotation_policy("sdk-key")
check(any(a.action.lower() == "rotate" for a in pol.lifetime_actions), "a Rotate lifetime action is reported")
ctl("/control", {"op": "set_rotation_policy", "name": "sdk-key", "rotate": False})
raises(ResourceNotFoundError, lambda: kc.get_key("no-such-key"), "a missing key is ResourceNotFoundError",
       "KeyNotFound")

# ---- wrap/unwrap RSA-OAEP-256, remote and against the public key
cc = crypto(key.id, c)
w = cc.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
check(w.key_id == key.id and len(w.encrypted_key) == 256, "wrap_key returns the kid and 256 bytes")
u = cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, w.encrypted_key)
check(u.key == b"k" * 32, "unwrap_key returns the wrapped key")
pub = rsa.RSAPublicNumbers(int.from_bytes(got.key.e, "big"), int.from_bytes(got.key.n, "big")).public_key()
local = pub.encrypt(b"local" * 6, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                                                label=None))
check(cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, local).key == b"local" * 6,
      "a value wrapped locally with the public key (standard RSA-OAEP-256) unwraps at the fake")
bad = bytearray(w.encrypted_key)
bad[10] ^= 1
e = raises(HttpResponseError, lambda: cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, bytes(bad)),
           "a modified value does not unwrap")
check(e is not None and e.status_code == 400, "... HTTP 400 BadParameter")
v1 = key.properties.version
rot = kc.rotate_key("sdk-key") if hasattr(kc, "rotate_key") else None
if rot is None or rot.properties.version == v1:
    ctl("/control", {"op": "rotate_key", "name": "sdk-key"})
latest = kc.get_key("sdk-key")
check(latest.properties.version != v1, "rotation makes a new version")
check(crypto("%s/keys/sdk-key/%s" % (base, v1), c).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, w.encrypted_key).key
      == b"k" * 32, "the old version still unwraps what it wrapped")

# ---- refusals, throttling, TLS
ctl("/control", {"op": "disable_key", "name": "sdk-key", "version": v1})
# (unwrap: the SDK may wrap locally with the public key it read)
e = raises(HttpResponseError, lambda: cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, w.encrypted_key),
           "a disabled key refuses unwrapKey", "disabled key")
check(e is not None and e.status_code == 403, "... HTTP 403")
ctl("/control", {"op": "enable_key", "name": "sdk-key", "version": v1})
ctl("/control", {"op": "deny", "who": cid, "ops": ["unwrapKey"]})
e = raises(HttpResponseError, lambda: cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, w.encrypted_key),
           "a denied permission is 403", "does not have keys unwrapKey permission")
ctl("/control", {"op": "allow", "who": cid})
ctl("/counters/reset", {})
ctl("/faults", {"throttle": 1, "action": "keys.unwrapkey"})
check(cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, w.encrypted_key).key == b"k" * 32,
      "the SDK retries a 429 with Retry-After and succeeds")
check(ctl("/counters")["responses_by_status"].get("429") == 1, "... after exactly one 429")
ctl("/faults/reset", {})
raises((ServiceRequestError, Exception), lambda: client(cred(verify=other_ca), verify=other_ca).get_key("sdk-key"),
       "a client trusting another CA refuses the fake")

# ---- managed identity through azure-identity's IMDS client
os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = "http://127.0.0.1:%s" % iport
mic = ManagedIdentityCredential()
mt = mic.get_token("https://vault.azure.net/.default")
check(mt.token and mt.expires_on > 0, "ManagedIdentityCredential gets a token from the fake IMDS")
reqs = ctl("/requests?server=imds")["requests"]
tokreq = [r for r in reqs if r["action"] == "imds.token" and r["status"] == 200][-1]
check(dict(tokreq["headers"]).get("Metadata") == "true", "the SDK sent Metadata: true")
check("resource=https" in tokreq["path"] and "api-version=" in tokreq["path"], "the SDK sent api-version and resource")
mkc = client(mic)
check(mkc.get_key("sdk-key").properties.version == latest.properties.version, "Key Vault accepts the IMDS token")
ctl("/control", {"op": "imds_config", "enabled": False})
raises(Exception, lambda: ManagedIdentityCredential().get_token("https://vault.azure.net/.default"),
       "no identity: the SDK reports the IMDS error")
ctl("/control", {"op": "imds_config", "enabled": True})

# for the restart phase
with open(os.environ["AZ_CHECK_STATE"], "w") as f:
    json.dump({"v1": v1, "blob": base64.b64encode(w.encrypted_key).decode()}, f)
sys.exit(1 if fails else 0)
