#!/usr/bin/python3
"""Prove tests/fakes/fake_aws_kms.py speaks AWS KMS + IMDSv2 as boto3/botocore understand them.

usage: fakes_boto3_check.py --port P --control-port C --imds-port I --ca CA [--blob-out F | --blob-in F]

Every check() can fail; the script exits 1 listing the failures.  Loopback only.
"""

import argparse
import base64
import http.client
import json
import os
import ssl
import sys
import time
import urllib.request

import boto3
import botocore
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions
from botocore.utils import InstanceMetadataFetcher

AKID = "AKIAFAKEKMS000000001"
SECRET = "fakeSecretKeyForKmscryptTests0000000001"
REGION = "us-east-1"
ALIAS = "alias/kmscrypt-test-" + os.urandom(4).hex()
ALIAS2 = ALIAS + "-2"

failures = []
passed = 0
_session = None


def session():
    global _session  # one session: its loader caches the service model across clients
    if _session is None:
        _session = boto3.session.Session()
    return _session


def check(cond, what):
    global passed
    if cond:
        passed += 1
        print("ok   %s" % what)
    else:
        failures.append(what)
        print("FAIL %s" % what)
    return cond


def expect_error(fn, code, what, status=None, message_has=None):
    try:
        r = fn()
    except botocore.exceptions.ClientError as e:
        err = e.response["Error"]
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        ok = err.get("Code") == code and (status is None or got_status == status)
        if message_has is not None:
            ok = ok and message_has in (err.get("Message") or "")
        check(ok, "%s -> %s%s (got %s/%s: %r)" % (what, code, "" if status is None else " %d" % status,
                                                  err.get("Code"), got_status, err.get("Message")))
        return e
    check(False, "%s -> %s (no error; got %r)" % (what, code, r))
    return None


class Ctl:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port

    def _call(self, path, obj=None):
        data = None if obj is None else json.dumps(obj).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST" if data is not None else "GET")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as r:
            return json.loads(r.read())

    def op(self, op, **kw):
        kw["op"] = op
        return self._call("/control", kw)

    def faults(self, **kw):
        return self._call("/faults", kw)

    def counters(self):
        return self._call("/counters")

    def reset_counters(self):
        return self._call("/counters/reset", {})

    def requests(self, since=0):
        return self._call("/requests?since=%d" % since)["requests"]


def client(args, akid=AKID, secret=SECRET, token=None, region=REGION, attempts=None):
    cfg = botocore.config.Config(retries={"total_max_attempts": attempts, "mode": "standard"}
                                 if attempts else {"mode": "standard"})
    return session().client("kms", endpoint_url="https://127.0.0.1:%d" % args.port, verify=args.ca,
                        region_name=region, aws_access_key_id=akid, aws_secret_access_key=secret,
                        aws_session_token=token, config=cfg)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--imds-port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--other-ca", help="an unrelated CA: the client must refuse the server")
    p.add_argument("--blob-out", help="write key id + a ciphertext here (for the restart check)")
    p.add_argument("--blob-in", help="only check that this ciphertext still decrypts (after a restart)")
    args = p.parse_args()
    ctl = Ctl(args.control_port)
    kms = client(args)

    if args.blob_in:
        with open(args.blob_in) as f:
            saved = json.load(f)
        r = kms.decrypt(CiphertextBlob=base64.b64decode(saved["blob"]), EncryptionContext=saved["ec"])
        check(r["Plaintext"] == base64.b64decode(saved["plaintext"]), "ciphertext survives a restart with --state")
        r = kms.describe_key(KeyId=saved["alias"])
        check(r["KeyMetadata"]["KeyId"] == saved["key_id"], "alias survives a restart")
        return finish()

    # ---- CreateKey / DescribeKey / aliases
    md = kms.create_key(Description="kmscrypt fake check")["KeyMetadata"]
    kid, arn = md["KeyId"], md["Arn"]
    check(arn == "arn:aws:kms:%s:111122223333:key/%s" % (REGION, kid), "CreateKey returns a key ARN")
    check(md["KeyState"] == "Enabled" and md["Enabled"] is True, "new key is Enabled")
    check(md["KeySpec"] == "SYMMETRIC_DEFAULT" and md["KeyUsage"] == "ENCRYPT_DECRYPT", "key spec/usage")
    check(hasattr(md["CreationDate"], "year"), "CreationDate parses as a timestamp")
    kid2 = kms.create_key(Description="second")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=ALIAS, TargetKeyId=kid)
    for ref in (kid, arn, ALIAS, "arn:aws:kms:%s:111122223333:%s" % (REGION, ALIAS)):
        check(kms.describe_key(KeyId=ref)["KeyMetadata"]["KeyId"] == kid, "DescribeKey by %s" % ref)
    expect_error(lambda: kms.describe_key(KeyId="alias/does-not-exist"), "NotFoundException",
                 "DescribeKey unknown alias", 400)
    expect_error(lambda: kms.describe_key(KeyId="00000000-0000-0000-0000-000000000000"), "NotFoundException",
                 "DescribeKey unknown key id", 400)
    expect_error(lambda: kms.create_alias(AliasName=ALIAS, TargetKeyId=kid2),
                 "AlreadyExistsException", "CreateAlias twice")
    kms.create_alias(AliasName=ALIAS2, TargetKeyId=kid2)
    al = kms.list_aliases()["Aliases"]
    names = {a["AliasName"]: a for a in al}
    check(names.get(ALIAS, {}).get("TargetKeyId") == kid, "ListAliases shows alias -> key")
    check(names.get(ALIAS, {}).get("AliasArn", "").endswith(":" + ALIAS),
          "ListAliases AliasArn")
    pages = list(kms.get_paginator("list_aliases").paginate(PaginationConfig={"PageSize": 1}))
    check(len(pages) >= 2 and sum(len(pg["Aliases"]) for pg in pages) == len(al),
          "ListAliases pagination (Limit/Marker/Truncated) via boto3 paginator (%d pages)" % len(pages))
    only = kms.list_aliases(KeyId=kid2)["Aliases"]
    check([a["AliasName"] for a in only] == [ALIAS2], "ListAliases KeyId filter")

    # ---- Encrypt / Decrypt with EncryptionContext
    ec = {"kmscrypt:volume": "8c1e0d2a-uuid", "kmscrypt:slot": "1"}
    pt = os.urandom(32)
    enc = kms.encrypt(KeyId=ALIAS, Plaintext=pt, EncryptionContext=ec)
    blob = enc["CiphertextBlob"]
    check(enc["KeyId"] == arn, "Encrypt returns the key ARN")
    check(enc.get("EncryptionAlgorithm") == "SYMMETRIC_DEFAULT", "Encrypt EncryptionAlgorithm")
    check(pt not in blob, "ciphertext does not contain the plaintext")
    dec = kms.decrypt(CiphertextBlob=blob, EncryptionContext=dict(reversed(list(ec.items()))))
    check(dec["Plaintext"] == pt and dec["KeyId"] == arn, "Decrypt round trip (context order irrelevant)")
    dec = kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec, KeyId=ALIAS)
    check(dec["Plaintext"] == pt, "Decrypt with matching KeyId (alias)")
    expect_error(lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec, KeyId=kid2),
                 "IncorrectKeyException", "Decrypt with another KeyId", 400)
    expect_error(lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext=dict(ec, **{"kmscrypt:slot": "2"})),
                 "InvalidCiphertextException", "Decrypt with a different context value", 400)
    expect_error(lambda: kms.decrypt(CiphertextBlob=blob), "InvalidCiphertextException",
                 "Decrypt without the context", 400)
    expect_error(lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext=dict(ec, extra="x")),
                 "InvalidCiphertextException", "Decrypt with an extra context pair", 400)
    for i in (len(blob) - 1, len(blob) // 2, 8):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        expect_error(lambda: kms.decrypt(CiphertextBlob=bytes(bad), EncryptionContext=ec),
                     "InvalidCiphertextException", "Decrypt of a blob with byte %d flipped" % i, 400)
    # botocore validates lengths client-side: a raw request shows the server-side ValidationException
    st, body = raw_kms(args, "Encrypt", {"KeyId": kid, "Plaintext": base64.b64encode(b"x" * 4097).decode()})
    check(st == 400 and body.get("__type") == "ValidationException", "server-side Plaintext length validation "
          "(%s %s)" % (st, body))
    st, body = raw_kms(args, "Decrypt", {})
    check(st == 400 and body.get("__type") == "ValidationException" and "ciphertextBlob" in body.get("message", ""),
          "server-side required-parameter validation (%s %s)" % (st, body))

    # ---- GenerateDataKeyWithoutPlaintext / GenerateDataKey
    g = kms.generate_data_key_without_plaintext(KeyId=kid, KeySpec="AES_256", EncryptionContext=ec)
    check("Plaintext" not in g and g["KeyId"] == arn, "GenerateDataKeyWithoutPlaintext has no Plaintext")
    d = kms.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext=ec)["Plaintext"]
    check(len(d) == 32, "GenerateDataKeyWithoutPlaintext AES_256 -> 32 bytes")
    g = kms.generate_data_key_without_plaintext(KeyId=kid, NumberOfBytes=64)
    check(len(kms.decrypt(CiphertextBlob=g["CiphertextBlob"])["Plaintext"]) == 64, "NumberOfBytes=64")
    expect_error(lambda: kms.generate_data_key_without_plaintext(KeyId=kid), "ValidationException",
                 "GenerateDataKeyWithoutPlaintext without KeySpec/NumberOfBytes", 400)
    g = kms.generate_data_key(KeyId=kid, KeySpec="AES_128", EncryptionContext=ec)
    check(kms.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext=ec)["Plaintext"] == g["Plaintext"]
          and len(g["Plaintext"]) == 16, "GenerateDataKey plaintext matches its ciphertext")

    # ---- ReEncrypt
    ec2 = {"kmscrypt:volume": "other"}
    r = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ec, DestinationKeyId=kid2,
                       DestinationEncryptionContext=ec2)
    check(r["SourceKeyId"] == arn and r["KeyId"].endswith(kid2), "ReEncrypt SourceKeyId/KeyId")
    check(kms.decrypt(CiphertextBlob=r["CiphertextBlob"], EncryptionContext=ec2)["Plaintext"] == pt,
          "ReEncrypt result decrypts under the destination key and context")
    expect_error(lambda: kms.decrypt(CiphertextBlob=r["CiphertextBlob"], EncryptionContext=ec2, KeyId=kid),
                 "IncorrectKeyException", "re-encrypted blob with the source KeyId")
    expect_error(lambda: kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ec2, DestinationKeyId=kid2),
                 "InvalidCiphertextException", "ReEncrypt with the wrong source context")
    expect_error(lambda: kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ec, SourceKeyId=kid2,
                                        DestinationKeyId=kid2), "IncorrectKeyException",
                 "ReEncrypt with the wrong SourceKeyId")

    # ---- DisableKey / EnableKey
    kms.disable_key(KeyId=kid)
    md = kms.describe_key(KeyId=kid)["KeyMetadata"]
    check(md["KeyState"] == "Disabled" and md["Enabled"] is False, "DescribeKey after DisableKey")
    expect_error(lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec), "DisabledException",
                 "Decrypt with a disabled key", 400, message_has="is disabled")
    expect_error(lambda: kms.encrypt(KeyId=kid, Plaintext=b"x"), "DisabledException", "Encrypt with a disabled key")
    expect_error(lambda: kms.generate_data_key_without_plaintext(KeyId=kid, KeySpec="AES_256"),
                 "DisabledException", "GenerateDataKeyWithoutPlaintext with a disabled key")
    kms.enable_key(KeyId=kid)
    check(kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec)["Plaintext"] == pt, "Decrypt after EnableKey")
    ctl.op("set_key_state", key_id=kid, state="PendingDeletion")
    expect_error(lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec), "KMSInvalidStateException",
                 "Decrypt with a key pending deletion", 400)
    ctl.op("enable_key", key_id=kid)
    ctl.op("disable_key", key_id=ALIAS)
    expect_error(lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec), "DisabledException",
                 "control API disable_key")
    ctl.op("enable_key", key_id=kid)

    # ---- authentication (SigV4 verified with botocore's signer on the server)
    expect_error(lambda: client(args, secret="wrong" + SECRET).list_aliases(), "InvalidSignatureException",
                 "wrong secret key", 400, message_has="signature we calculated does not match")
    expect_error(lambda: client(args, akid="AKIAUNKNOWN000000000").list_aliases(), "UnrecognizedClientException",
                 "unknown access key id", 400)
    expect_error(lambda: client(args, region="us-west-2").list_aliases(), "InvalidSignatureException",
                 "credential scoped to another region")
    expect_error(lambda: client(args, token="not-a-session-token").list_aliases(), "UnrecognizedClientException",
                 "static key with a session token")
    tampered = client(args, attempts=1)

    def tamper(request, **kw):  # after signing: change the body
        request.body = request.body.replace(b"kmscrypt", b"kmscrypX")
    tampered.meta.events.register_last("before-send.kms.Encrypt", tamper)
    expect_error(lambda: tampered.encrypt(KeyId=kid, Plaintext=b"p", EncryptionContext={"kmscrypt": "1"}),
                 "InvalidSignatureException", "body changed after signing")
    st, body = raw_kms(args, "ListAliases", {}, sign=False)
    check(st == 400 and body.get("__type", "").endswith("MissingAuthenticationTokenException"),
          "unsigned request -> MissingAuthenticationTokenException (%s %s)" % (st, body))
    st, body = raw_kms(args, "ListAliases", {})
    check(st == 200 and "Aliases" in body, "request signed by botocore but sent over http.client (%s)" % st)
    st, body = raw_kms(args, "ListAliases", {}, extra_unsigned={"X-Extra": "1"})
    check(st == 200, "unsigned extra header does not break the signature")
    st, body = raw_kms(args, "ListAliases", {}, target_override="TrentService.NoSuchAction")
    check(st == 400 and body.get("__type", "").endswith("UnknownOperationException"),
          "unknown X-Amz-Target -> UnknownOperationException (%s %s)" % (st, body))
    ctl.op("clock", offset_s=3600)
    expect_error(lambda: client(args, attempts=1).list_aliases(), "InvalidSignatureException",
                 "request 1 h behind the server clock", message_has="Signature expired")
    ctl.op("clock", offset_s=0)

    ctl.op("error_style", style="namespaced")
    expect_error(lambda: kms.describe_key(KeyId="alias/does-not-exist"), "NotFoundException",
                 "namespaced __type (com.amazonaws.kms#...) parses as the same code")
    ctl.op("error_style", style="plain")

    # ---- access control
    ctl.op("revoke", access_key=AKID, actions=["Decrypt"])
    expect_error(lambda: kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec), "AccessDeniedException",
                 "revoked principal: Decrypt", 400, message_has="is not authorized to perform: kms:Decrypt")
    check(kms.encrypt(KeyId=kid, Plaintext=b"x")["KeyId"] == arn, "revocation limited to Decrypt")
    ctl.op("restore", access_key=AKID)
    check(kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec)["Plaintext"] == pt, "restored principal")

    # ---- faults: throttling, 5xx, malformed, dropped connections, latency
    ctl.faults(throttle=1)
    expect_error(lambda: client(args, attempts=1).list_aliases(), "ThrottlingException", "throttled call", 400)
    ctl.faults(throttle=2)
    r = client(args, attempts=5).describe_key(KeyId=kid)
    check(r["ResponseMetadata"]["RetryAttempts"] == 2, "botocore retries ThrottlingException (retries=%d)"
          % r["ResponseMetadata"]["RetryAttempts"])
    ctl.faults(error5xx=1)
    expect_error(lambda: client(args, attempts=1).list_aliases(), "KMSInternalException", "5xx fault", 500)
    ctl.faults(error5xx=1, action="Decrypt")
    check(client(args, attempts=1).list_aliases()["Aliases"] is not None, "fault limited to one action")
    r = client(args, attempts=3).decrypt(CiphertextBlob=blob, EncryptionContext=ec)
    check(r["ResponseMetadata"]["RetryAttempts"] == 1, "botocore retries KMSInternalException")
    ctl.faults(malformed=1)
    r = client(args, attempts=1).list_aliases()  # botocore tolerates a non-JSON body: no members parsed
    check("Aliases" not in r and r["ResponseMetadata"]["HTTPStatusCode"] == 200,
          "malformed (truncated) 200 body: botocore finds no Aliases member")
    ctl.faults(malformed=1, mode="garbage")
    st, data = raw_kms(args, "ListAliases", {}, raw=True)
    try:
        json.loads(data)
        check(False, "garbage body is not JSON (%r)" % data[:40])
    except ValueError:
        check(st == 200, "malformed (garbage) 200 body is not JSON")
    ctl.faults(malformed=0)
    ctl.faults(drop=1)
    try:
        client(args, attempts=1).list_aliases()
        check(False, "dropped connection must fail the call")
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.HTTPClientError) as e:
        check(True, "dropped connection fails the call (%s)" % type(e).__name__)
    ctl.faults(rate_limit_rps=2, burst=2)
    c_rl = client(args, attempts=1)
    outcomes = []
    for _ in range(6):
        try:
            c_rl.describe_key(KeyId=kid)
            outcomes.append("ok")
        except botocore.exceptions.ClientError as e:
            outcomes.append(e.response["Error"]["Code"])
    check(outcomes[:2] == ["ok", "ok"] and "ThrottlingException" in outcomes[2:],
          "rate limit 2/s burst 2: later calls throttled (%s)" % outcomes)
    ctl.faults(rate_limit_rps=0)
    ctl.faults(latency_ms=400)
    t0 = time.time()
    kms.list_aliases()
    check(time.time() - t0 >= 0.4, "latency injection")
    ctl.faults(latency_ms=0)
    ctl._call("/faults/reset", {})

    # ---- counters: connection reuse and TLS handshakes
    ctl.reset_counters()
    c1 = client(args)
    for _ in range(5):
        c1.describe_key(KeyId=kid)
    cnt = ctl.counters()
    check(cnt["requests_by_action"].get("DescribeKey") == 5, "per-action request counter")
    check(cnt["tcp_connections"] == 1 and cnt["tls_handshakes"] == 1,
          "keep-alive: 5 calls over %d TCP connection(s), %d TLS handshake(s)"
          % (cnt["tcp_connections"], cnt["tls_handshakes"]))
    client(args).describe_key(KeyId=kid)
    cnt = ctl.counters()
    check(cnt["tcp_connections"] == 2 and cnt["tls_handshakes"] == 2, "a second client opens a second connection")
    ctl.faults(close=1)
    c1.describe_key(KeyId=kid)
    c1.describe_key(KeyId=kid)
    cnt = ctl.counters()
    check(cnt["tcp_connections"] == 3, "'Connection: close' fault: botocore reconnects for the next call (%d)"
          % cnt["tcp_connections"])
    reqs = ctl.requests()
    check(reqs and reqs[-1]["action"] == "DescribeKey" and reqs[-1]["body"] == {"KeyId": kid},
          "request log records action and body")

    # ---- TLS: a client trusting another CA refuses the server
    if args.other_ca:
        before = ctl.counters()["tls_handshake_failures"]
        try:
            session().client("kms", endpoint_url="https://127.0.0.1:%d" % args.port, verify=args.other_ca,
                         region_name=REGION, aws_access_key_id=AKID, aws_secret_access_key=SECRET,
                         config=botocore.config.Config(retries={"total_max_attempts": 1})).list_aliases()
            check(False, "client with an unrelated CA must refuse the server")
        except botocore.exceptions.SSLError:
            check(True, "client with an unrelated CA refuses the server certificate")
        time.sleep(0.2)
        check(ctl.counters()["tls_handshake_failures"] > before, "server counts the failed handshake")

    # ---- IMDSv2 credentials through botocore's own fetcher
    imds = "http://127.0.0.1:%d/" % args.imds_port
    fetcher = InstanceMetadataFetcher(timeout=2, num_attempts=2, base_url=imds, env={})
    creds = fetcher.retrieve_iam_role_credentials()
    check(creds.get("access_key", "").startswith("ASIA") and creds.get("token") and creds.get("role_name"),
          "InstanceMetadataFetcher gets role credentials via IMDSv2")
    imds_reqs = ctl._call("/requests?server=imds")["requests"]
    put = [r for r in imds_reqs if r["method"] == "PUT"]
    check(put and any(k.lower() == "x-aws-ec2-metadata-token-ttl-seconds" for k, _ in put[0]["headers"]),
          "botocore sent PUT /latest/api/token with the TTL header")
    gets = [r for r in imds_reqs if r["method"] == "GET"]
    check(gets and all(any(k.lower() == "x-aws-ec2-metadata-token" for k, _ in r["headers"]) for r in gets),
          "every metadata GET carried the session token")
    tmp = client(args, akid=creds["access_key"], secret=creds["secret_key"], token=creds["token"])
    e2 = tmp.encrypt(KeyId=kid, Plaintext=b"imds", EncryptionContext=ec)
    check(tmp.decrypt(CiphertextBlob=e2["CiphertextBlob"], EncryptionContext=ec)["Plaintext"] == b"imds",
          "KMS accepts IMDS temporary credentials (session token verified)")
    expect_error(lambda: client(args, akid=creds["access_key"], secret=creds["secret_key"]).list_aliases(),
                 "UnrecognizedClientException", "temporary credentials without the session token")
    expect_error(lambda: client(args, akid=creds["access_key"], secret=creds["secret_key"],
                                token=creds["token"][:-4] + "AAAA").list_aliases(),
                 "UnrecognizedClientException", "temporary credentials with a wrong session token")
    provider_creds = botocore.credentials.InstanceMetadataProvider(fetcher).load()
    check(provider_creds is not None and provider_creds.access_key == creds["access_key"],
          "InstanceMetadataProvider loads the same credentials")
    st, _ = imds_raw(args.imds_port, "GET", "/latest/meta-data/iam/security-credentials/")
    check(st == 401, "IMDSv2: GET without a token -> 401 (got %s)" % st)
    st, _ = imds_raw(args.imds_port, "PUT", "/latest/api/token")
    check(st == 400, "IMDSv2: PUT token without the TTL header -> 400 (got %s)" % st)
    st, _ = imds_raw(args.imds_port, "GET", "/latest/meta-data/iam/security-credentials/",
                     {"X-aws-ec2-metadata-token": "bogus"})
    check(st == 401, "IMDSv2: GET with an unknown token -> 401 (got %s)" % st)
    ctl.op("imds_expire")
    expect_error(lambda: tmp.list_aliases(), "ExpiredTokenException", "expired IMDS credentials")
    ctl.op("imds_rotate")
    fresh = fetcher.retrieve_iam_role_credentials()
    check(fresh.get("access_key") not in (None, creds["access_key"]), "IMDS hands out rotated credentials")
    check(client(args, akid=fresh["access_key"], secret=fresh["secret_key"], token=fresh["token"])
          .list_aliases()["Aliases"] is not None, "rotated credentials work")

    if args.blob_out:
        with open(args.blob_out, "w") as f:
            json.dump({"blob": base64.b64encode(blob).decode(), "ec": ec, "plaintext": base64.b64encode(pt).decode(),
                       "alias": ALIAS, "key_id": kid}, f)
    return finish()


def raw_kms(args, action, payload, sign=True, extra_unsigned=None, target_override=None, raw=False):
    """Sign with botocore's SigV4Auth but send with http.client (a different transport and header order)."""
    body = json.dumps(payload).encode()
    host = "127.0.0.1:%d" % args.port
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService." + action,
               "Host": host}
    req = botocore.awsrequest.AWSRequest(method="POST", url="https://%s/" % host, data=body, headers=headers)
    if sign:
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(AKID, SECRET), "kms", REGION).add_auth(req)
    hdrs = dict(req.headers.items())
    if target_override:
        hdrs["X-Amz-Target"] = target_override  # x-amz-target is signed: re-sign
        req = botocore.awsrequest.AWSRequest(method="POST", url="https://%s/" % host, data=body,
                                             headers=dict(headers, **{"X-Amz-Target": target_override}))
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(AKID, SECRET), "kms", REGION).add_auth(req)
        hdrs = dict(req.headers.items())
    hdrs.update(extra_unsigned or {})
    ctx = ssl.create_default_context(cafile=args.ca)
    conn = http.client.HTTPSConnection("127.0.0.1", args.port, context=ctx, timeout=10)
    conn.request("POST", "/", body=body, headers=hdrs)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    if raw:
        return r.status, data
    check(r.getheader("x-amzn-RequestId") is not None and
          r.getheader("Content-Type") == "application/x-amz-json-1.1",
          "reply headers x-amzn-RequestId and Content-Type for raw %s" % action)
    return r.status, (json.loads(data) if data else {})


def imds_raw(port, method, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def finish():
    print("\n%d passed, %d failed" % (passed, len(failures)))
    for f in failures:
        print("  FAILED: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
