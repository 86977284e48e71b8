"""TLS and mutual TLS credentials for servers and channels, from settings."""

from __future__ import annotations

from pathlib import Path

import grpc


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


def server_credentials(
    cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None
) -> grpc.ServerCredentials | None:
    """TLS when a cert and key are set; mTLS (client certs required) when a client CA is too."""
    if not cert_file and not key_file:
        if client_ca_file:
            raise ValueError("a TLS client CA needs a server certificate and key too")
        return None
    if not (cert_file and key_file):
        raise ValueError("TLS needs both a certificate file and a key file")
    return grpc.ssl_server_credentials(
        [(key_file.read_bytes(), cert_file.read_bytes())],
        root_certificates=_read(client_ca_file),
        require_client_auth=client_ca_file is not None,
    )


def channel_credentials(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials | None:
    """None for plaintext; otherwise TLS, with a client certificate for mTLS when given."""
    if not ca_file and not cert_file:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file),
        private_key=_read(key_file),
        certificate_chain=_read(cert_file),
    )
