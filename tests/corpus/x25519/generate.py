#!/usr/bin/env python3
"""Builds the X25519 corpus vectors WITHOUT Sealgate's engine (Python `cryptography` only).

An Ed25519 CA issues two recipient certificates, one RSA-2048 and one X25519. One
EnvelopedData is made for both (RFC 5652 §6, RFC 8418): the RSA recipient by PKCS#1 v1.5 key
transport, the X25519 recipient by ephemeral-static X25519, the X9.63 KDF with SHA-256
(dhSinglePass-stdDH-sha256kdf-scheme) over ECC-CMS-SharedInfo, and AES-128 key wrap; both
named by issuer and serial number. Content: AES-128-CBC. The DER is written by hand below.

Run from this directory: `python3 generate.py` (new randomness: commit the result). The
script also decrypts its own output for the X25519 recipient, independently, as a check.
"""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding as apad, rsa, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))

# --- minimal DER writer -------------------------------------------------------------------


def tlv(tag, body):
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + length + body


def seq(*parts):
    return tlv(0x30, b"".join(parts))


def set_of(*parts):
    return tlv(0x31, b"".join(sorted(parts)))


def integer(v):
    b = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=False)
    return tlv(0x02, b)


def octets(b):
    return tlv(0x04, b)


def bit_string(b):
    return tlv(0x03, b"\x00" + b)


def oid(dotted):
    arcs = [int(x) for x in dotted.split(".")]
    body = bytes([40 * arcs[0] + arcs[1]])
    for a in arcs[2:]:
        chunk = [a & 0x7F]
        a >>= 7
        while a:
            chunk.append(0x80 | (a & 0x7F))
            a >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, body)


def null():
    return b"\x05\x00"


def explicit(n, body):
    return tlv(0xA0 + n, body)


OID_DATA = "1.2.840.113549.1.7.1"
OID_ENVELOPED = "1.2.840.113549.1.7.3"
OID_RSA = "1.2.840.113549.1.1.1"
OID_X25519 = "1.3.101.110"
OID_SHA256_X963 = "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf-scheme
OID_AES128_WRAP = "2.16.840.1.101.3.4.1.5"
OID_AES128_CBC = "2.16.840.1.101.3.4.1.2"


def issuer_and_serial(cert):
    return seq(cert.issuer.public_bytes(), integer(cert.serial_number))


def x963_kdf_sha256(z, shared_info, length):
    out = b""
    counter = 1
    while len(out) < length:
        h = hashes.Hash(hashes.SHA256())
        h.update(z + counter.to_bytes(4, "big") + shared_info)
        out += h.finalize()
        counter += 1
    return out[:length]


def ecc_cms_shared_info(wrap_alg_der, kek_bits):
    # ECC-CMS-SharedInfo (RFC 5753 §7.2): keyInfo, no entityUInfo, suppPubInfo [2].
    return seq(wrap_alg_der, explicit(2, octets(kek_bits.to_bytes(4, "big"))))


# --- keys and certificates ----------------------------------------------------------------

NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2125, 1, 1, tzinfo=datetime.timezone.utc)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sealgate corpus")])


def issue(ca_key, ca_name, subject_cn, email, public_key, key_usage):
    b = (x509.CertificateBuilder()
         .subject_name(name(subject_cn))
         .issuer_name(ca_name)
         .public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOT_BEFORE)
         .not_valid_after(NOT_AFTER)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(key_usage, critical=True)
         .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                        critical=False)
         .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    return b.sign(ca_key, None)


def ku(**on):
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"]
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


def pem_key(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def main():
    ca_key = ed25519.Ed25519PrivateKey.generate()
    ca_name = name("Sealgate corpus Ed25519 CA")
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(ku(key_cert_sign=True, crl_sign=True), critical=True)
          .sign(ca_key, None))

    x_key = x25519.X25519PrivateKey.generate()
    x_cert = issue(ca_key, ca_name, "Dana X25519", "dana@example.test", x_key.public_key(),
                   ku(key_agreement=True))
    r_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    r_cert = issue(ca_key, ca_name, "Rosa RSA", "rosa@example.test", r_key.public_key(),
                   ku(key_encipherment=True, digital_signature=True))

    content = (b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
               b"X25519 corpus message: one RSA and one X25519 recipient, X9.63 KDF SHA-256.\r\n")
    cek = os.urandom(16)
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    enc = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()

    # RSA recipient: KeyTransRecipientInfo v0, issuer and serial, PKCS#1 v1.5.
    ktri = seq(integer(0), issuer_and_serial(r_cert), seq(oid(OID_RSA), null()),
               octets(r_key.public_key().encrypt(cek, apad.PKCS1v15())))

    # X25519 recipient: KeyAgreeRecipientInfo v3, ephemeral originator key, X9.63 SHA-256 KDF,
    # AES-128 key wrap, recipient named by issuer and serial.
    eph = x25519.X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    z = eph.exchange(x_key.public_key())
    wrap_alg = seq(oid(OID_AES128_WRAP))
    kek = x963_kdf_sha256(z, ecc_cms_shared_info(wrap_alg, 128), 16)
    wrapped = aes_key_wrap(kek, cek)
    originator = explicit(0, tlv(0xA1, seq(oid(OID_X25519)) + bit_string(eph_pub)))
    kari = tlv(0xA1, integer(3) + originator + seq(oid(OID_SHA256_X963), wrap_alg)
               + seq(seq(issuer_and_serial(x_cert), octets(wrapped))))

    eci = seq(oid(OID_DATA), seq(oid(OID_AES128_CBC), octets(iv)), tlv(0x80, ciphertext))
    enveloped = seq(integer(2), set_of(ktri, kari), eci)
    der = seq(oid(OID_ENVELOPED), explicit(0, enveloped))

    # Independent check of the X25519 path (recipient side).
    z2 = x_key.exchange(x25519.X25519PublicKey.from_public_bytes(eph_pub))
    kek2 = x963_kdf_sha256(z2, ecc_cms_shared_info(wrap_alg, 128), 16)
    assert aes_key_unwrap(kek2, wrapped) == cek

    cert_pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
    files = {
        "ca-ed25519.pem": cert_pem(ca),
        "dana-x25519.key": pem_key(x_key),
        "dana-x25519.pem": cert_pem(x_cert) + cert_pem(ca),
        "rosa-rsa.key": pem_key(r_key),
        "rosa-rsa.pem": cert_pem(r_cert) + cert_pem(ca),
        "enc-rsa-and-x25519-x963-sha256-aes128wrap.p7m": der,
        "enc-rsa-and-x25519-x963-sha256-aes128wrap.expected": content,
        "enc-rsa-and-x25519-x963-sha256-aes128wrap.args":
            b"smime decrypt --key x25519/dana-x25519.key --cert x25519/dana-x25519.pem\n",
        "enc-rsa-and-x25519-rsa-side.p7m": der,
        "enc-rsa-and-x25519-rsa-side.expected": content,
        "enc-rsa-and-x25519-rsa-side.args":
            b"smime decrypt --key x25519/rosa-rsa.key --cert x25519/rosa-rsa.pem\n",
    }
    for n, data in files.items():
        with open(os.path.join(HERE, n), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
