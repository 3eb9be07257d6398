#!/usr/bin/env bash
# Generate test PKI for the fake KMS servers (idempotent: existing valid files are kept).
#   DIR/ca.pem, ca.key                 test CA
#   DIR/server.pem, server.key         server cert, SAN IP:127.0.0.1, DNS:localhost (signed by ca)
#   DIR/server-chain.pem               server cert + CA
#   DIR/client.pem, client.key         client cert (clientAuth, signed by ca) for mTLS (KMIP)
#   DIR/other-ca.pem, other-ca.key     unrelated CA (negative tests)
#   DIR/other-server.pem, .key         server cert for 127.0.0.1 signed by other-ca (negative tests)
#   DIR/other-client.pem, .key         client cert signed by other-ca (negative tests)
# Usage: mkcerts.sh DIR   (EC P-256 keys, valid 30 days; regenerated when missing or expiring within 1 day)
set -euo pipefail
dir=${1:?usage: mkcerts.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077

valid() { [[ -s $1 ]] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1; }

mkca() { # name cn
	if valid "$1.pem" && [[ -s $1.key ]]; then return 0; fi
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$1.key" -out "$1.pem" -days 30 -subj "/O=kmscrypt tests/CN=$2" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	rm -f "${1%ca}"*.srl
	return 1 # signals "CA (re)generated"
}

mkleaf() { # name ca cn eku san
	if [[ ${force:-0} == 0 ]] && valid "$1.pem" && [[ -s $1.key ]] &&
		openssl verify -CAfile "$2.pem" "$1.pem" >/dev/null 2>&1; then return 0; fi
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$1.key" -out "$1.csr" -subj "/O=kmscrypt tests/CN=$3" 2>/dev/null
	local ext
	ext=$(mktemp)
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$4"
		[[ -n $5 ]] && echo "subjectAltName=$5"
	} >"$ext"
	openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -set_serial "0x$(openssl rand -hex 16)" \
		-days 29 -extfile "$ext" -out "$1.pem" 2>/dev/null
	rm -f "$1.csr" "$ext"
}

force=0
mkca ca "kmscrypt test CA" || force=1
mkleaf server ca localhost serverAuth "IP:127.0.0.1,DNS:localhost"
mkleaf client ca "kmscrypt test client" clientAuth ""
cat server.pem ca.pem >server-chain.pem
force=0
mkca other-ca "unrelated test CA" || force=1
mkleaf other-server other-ca localhost serverAuth "IP:127.0.0.1,DNS:localhost"
mkleaf other-client other-ca "unrelated client" clientAuth ""
chmod 644 ./*.pem
