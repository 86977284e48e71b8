"""TLS and mutual TLS from settings, on a real registry server."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loraplex.client.base import ClientConfig, LoraplexClientError
from loraplex.client.registry import RegistryClient
from services.common.testing import TEST_TENANT_KEYS, server_thread
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings

pytestmark = pytest.mark.integration


def _write(path: Path, key, cert) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loraplex test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "ca", ca_key, ca)
    for name, san in (
        ("server", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("client", [x509.DNSName("inference.loraplex")]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(folder / name, key, cert)


def _list(config: ClientConfig) -> list:
    with RegistryClient(config=config) as client:
        return list(client.list())


def test_mutual_tls(tmp_path):
    make_pki(tmp_path)
    settings = RegistrySettings(
        data_dir=tmp_path / "data",
        tls_cert_file=tmp_path / "server.crt",
        tls_key_file=tmp_path / "server.key",
        tls_client_ca_file=tmp_path / "ca.crt",
    )
    with server_thread(settings, RegistryApp(settings)) as server:
        base = {
            "address": f"127.0.0.1:{server.port}",
            "api_key": TEST_TENANT_KEYS["acme"],
            "timeout": 5,
        }
        with_cert = ClientConfig(
            **base,
            tls_ca_file=tmp_path / "ca.crt",
            tls_cert_file=tmp_path / "client.crt",
            tls_key_file=tmp_path / "client.key",
        )
        assert _list(with_cert) == []
        for config in (
            ClientConfig(**base),  # plaintext to a TLS port
            ClientConfig(**base, tls_ca_file=tmp_path / "ca.crt"),  # TLS without a client cert
        ):
            with pytest.raises(LoraplexClientError) as err:
                _list(config)
            assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_half_configured_tls_refuses_to_start(tmp_path):
    from services.common.tls import server_credentials

    with pytest.raises(ValueError, match="both"):
        server_credentials(tmp_path / "server.crt", None, None)
    with pytest.raises(ValueError, match="client CA"):
        server_credentials(None, None, tmp_path / "ca.crt")
