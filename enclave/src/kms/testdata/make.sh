#!/bin/sh
# Makes the CMS envelopes the KMS tests open, with OpenSSL (an independent
# implementation of RFC 5652), in the shapes KMS sends: BER with
# indefinite lengths and chunked content (-stream), and plain DER. The RSA
# key is a throwaway made for these tests and nothing else.
# Run from this directory; it overwrites the files.
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/key.pem" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$tmp/key.pem" -outform DER -out recipient.pk8.der
openssl req -new -x509 -key "$tmp/key.pem" -subj /CN=recipient -days 1 -out "$tmp/cert.pem"
head -c 32 /dev/urandom > "$tmp/datakey"
xxd -p -c 64 "$tmp/datakey" > datakey.hex
oaep="-keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256 -keyopt rsa_mgf1_md:sha256"
# shellcheck disable=SC2086
openssl cms -encrypt -binary -aes256 -keyid -recip "$tmp/cert.pem" $oaep -stream -outform DER -in "$tmp/datakey" -out ber.cms
# shellcheck disable=SC2086
openssl cms -encrypt -binary -aes256 -keyid -recip "$tmp/cert.pem" $oaep -outform DER -in "$tmp/datakey" -out der.cms
# Wrong content cipher, wrong key transport: both must be refused.
# shellcheck disable=SC2086
openssl cms -encrypt -binary -aes128 -keyid -recip "$tmp/cert.pem" $oaep -outform DER -in "$tmp/datakey" -out aes128.cms
openssl cms -encrypt -binary -aes256 -keyid -recip "$tmp/cert.pem" -outform DER -in "$tmp/datakey" -out pkcs1.cms
