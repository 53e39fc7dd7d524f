"""Reading a Key Vault certificate's backing secret into MSAL's certificate credential."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from emulator.tls import make_client_certificate
from graphusers.credentials import parse_certificate


@pytest.mark.parametrize("as_pkcs12", [False, True], ids=["pem", "pkcs12"])
def test_backing_secret_becomes_key_and_chain(as_pkcs12: bool) -> None:
    """PEM and PKCS#12 backing secrets both give a PKCS#8 key and the PEM certificate chain."""
    cert, value, content_type = make_client_certificate(pkcs12=as_pkcs12)
    cred = parse_certificate(value, content_type)
    assert set(cred) == {"private_key", "public_certificate"}
    assert cred["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    loaded = x509.load_pem_x509_certificate(cred["public_certificate"].encode())
    assert loaded.fingerprint(hashes.SHA256()) == cert.fingerprint(hashes.SHA256())


def test_ec_keys_and_garbage_are_refused() -> None:
    """A non-RSA key, a PEM without a key, and random bytes are clear errors."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ec")])
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    blob = base64.b64encode(pkcs12.serialize_key_and_certificates(None, key, cert, None, serialization.NoEncryption())).decode()
    with pytest.raises(ValueError, match="RSA"):
        parse_certificate(blob, "application/x-pkcs12")
    with pytest.raises(ValueError, match="private key"):
        parse_certificate(cert.public_bytes(serialization.Encoding.PEM).decode(), "application/x-pem-file")
    with pytest.raises(ValueError, match="PKCS#12"):
        parse_certificate(base64.b64encode(b"not a bundle").decode(), "application/x-pkcs12")
