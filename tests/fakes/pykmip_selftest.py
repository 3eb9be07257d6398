#!/usr/bin/python3
"""Prove the PyKMIP test server with PyKMIP's own client (kmip.pie.client.ProxyKmipClient).

  pykmip_selftest.py --port PORT --certs DIR

Steps (each prints "ok <step>"; any failure exits 1):
  create AES-256 (Encrypt|Decrypt, Name) -> activate -> locate by name -> get attributes (Active)
  -> encrypt AES-CBC/PKCS5 without IV (the server picks one) -> decrypt round trip
  -> decrypt by another client of the same CA refused (not the owner)
  -> revoke (Cessation of Operation) -> decrypt refused (Permission Denied)
  -> destroy -> get refused (Item Not Found)
  -> a client certificate from another CA is refused during the TLS handshake
  -> a client that trusts another CA refuses the server.
Run with /usr/bin/python3.
"""

import argparse
import os
import ssl
import sys
import tempfile

from kmip.core import enums
from kmip.pie import client as pie_client
from kmip.pie import exceptions as pie_exc

PARAMS = {
    "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
    "block_cipher_mode": enums.BlockCipherMode.CBC,
    "padding_method": enums.PaddingMethod.PKCS5,
}


def make_client(port, certs, cert, key, ca, conf):
    return pie_client.ProxyKmipClient(
        hostname="127.0.0.1", port=port,
        cert=os.path.join(certs, cert), key=os.path.join(certs, key), ca=os.path.join(certs, ca),
        ssl_version="PROTOCOL_TLSv1_2", config_file=conf,
        kmip_version=enums.KMIPVersion.KMIP_1_2)


def expect_failure(fn, reason, what):
    try:
        fn()
    except pie_exc.KmipOperationFailure as e:
        if e.reason != reason:
            sys.exit("FAIL %s: expected %s, got %s (%s)" % (what, reason, e.reason, e.message))
        print("ok %s refused: %s (%s)" % (what, e.reason.name, e.message))
        return
    sys.exit("FAIL %s: succeeded" % what)


def expect_tls_refusal(port, certs, cert, key, ca, conf, what):
    c = make_client(port, certs, cert, key, ca, conf)
    try:
        c.open()
        c.locate(attributes=[])  # the server may accept the TCP connection and fail the handshake
    except (ssl.SSLError, OSError, pie_exc.ClientConnectionFailure, Exception) as e:  # noqa: B014
        print("ok %s refused: %s" % (what, type(e).__name__))
        return
    finally:
        try:
            c.close()
        except Exception:
            pass
    sys.exit("FAIL %s: connection worked" % what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--certs", required=True)
    ap.add_argument("--name", default="kmscrypt-kmip-selftest")
    a = ap.parse_args()

    # ProxyKmipClient reads /etc/pykmip/pykmip.conf unless given a file: give it an empty section.
    conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
    conf.write("[client]\n")
    conf.close()

    with make_client(a.port, a.certs, "client.pem", "client.key", "ca.pem", conf.name) as c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 256, name=a.name,
                       cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                                 enums.CryptographicUsageMask.DECRYPT])
        print("ok create uid=%s" % uid)
        c.activate(uid)
        print("ok activate")
        found = c.locate(attributes=[c.attribute_factory.create_attribute(
            enums.AttributeType.NAME, a.name)])
        if uid not in found:
            sys.exit("FAIL locate: %r does not contain %s" % (found, uid))
        print("ok locate by name: %s" % found)
        attrs = c.get_attributes(uid, ["State", "Cryptographic Length"])[1]
        state = [x.attribute_value.value for x in attrs if x.attribute_name.value == "State"]
        if state != [enums.State.ACTIVE]:
            sys.exit("FAIL get_attributes: state %r" % state)
        print("ok get_attributes State=ACTIVE")

        plain = bytes(range(32))  # a stand-in volume key; fixed so that captures are reproducible
        ct, iv = c.encrypt(plain, uid=uid, cryptographic_parameters=PARAMS)
        if not iv or len(iv) != 16 or len(ct) != 48:
            sys.exit("FAIL encrypt: ct %d bytes, iv %r" % (len(ct), iv))
        print("ok encrypt: %d bytes, server IV %s" % (len(ct), iv.hex()))
        back = c.decrypt(ct, uid=uid, cryptographic_parameters=PARAMS, iv_counter_nonce=iv)
        if back != plain:
            sys.exit("FAIL decrypt: round trip mismatch")
        print("ok decrypt round trip")

        # Another client of the same CA: PyKMIP's default policy lets only the owner (the CN of
        # the certificate that created the object) use it.
        with make_client(a.port, a.certs, "client2.pem", "client2.key", "ca.pem", conf.name) as c2:
            expect_failure(lambda: c2.decrypt(ct, uid=uid, cryptographic_parameters=PARAMS,
                                              iv_counter_nonce=iv),
                           enums.ResultReason.PERMISSION_DENIED, "decrypt by another client")

        c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
        print("ok revoke")
        expect_failure(lambda: c.decrypt(ct, uid=uid, cryptographic_parameters=PARAMS,
                                         iv_counter_nonce=iv),
                       enums.ResultReason.PERMISSION_DENIED, "decrypt with revoked key")
        c.destroy(uid)
        print("ok destroy")
        expect_failure(lambda: c.get(uid), enums.ResultReason.ITEM_NOT_FOUND, "get destroyed key")

    expect_tls_refusal(a.port, a.certs, "other-client.pem", "other-client.key", "ca.pem",
                       conf.name, "client certificate from another CA")
    expect_tls_refusal(a.port, a.certs, "client.pem", "client.key", "other-ca.pem", conf.name,
                       "server certificate not from the trusted CA")
    os.unlink(conf.name)
    print("ok all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
