"""TLS for the job's cluster: credentials made for this run and known only to its ranks.

A scheduler listening on plain TCP on a shared compute node accepts anyone who can
reach the port, and ``client.run`` then runs their code as you. So by default the client
rank makes a fresh key and certificate in memory, hands them to the other ranks over MPI
(never through a file on shared disk), and every Dask server requires mutual TLS with
that certificate. Like ``distributed.Security.temporary()``, but with an elliptic-curve
key, which is made in a millisecond instead of the tenth of a second RSA needs.
"""

from __future__ import annotations

import datetime
from typing import Any

import dask

ROLES = ("client", "scheduler", "worker")


class TLSUnavailable(RuntimeError):
    """TLS was asked for, but this Python cannot make certificates."""


def make_credentials(days: int = 30) -> dict[str, str]:
    """A self-signed certificate and its key, as PEM text (nothing touches the disk)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise TLSUnavailable(
            "TLS (the default) needs the 'cryptography' package: install it in this "
            "environment (pip install cryptography), or run with --insecure for plain TCP"
        ) from None
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dask-launcher")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dask-launcher")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return {
        "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    }


def tls_config(credentials: dict[str, str], roles: tuple[str, ...] = ROLES) -> dict[str, Any]:
    """Dask config that makes every Dask server and client in this process (of these
    roles) use them.

    ``distributed.Security()`` reads these keys, and they accept PEM text as well as
    file names, so dask-mpi's workers, nannies (and the worker processes they start,
    which receive the config through a pipe) pick them up without any file.
    """
    config: dict[str, Any] = {
        "distributed.comm.require-encryption": True,
        "distributed.comm.default-scheme": "tls",
        "distributed.comm.tls.ca-file": credentials["cert"],
    }
    for role in roles:
        config[f"distributed.comm.tls.{role}.cert"] = credentials["cert"]
        config[f"distributed.comm.tls.{role}.key"] = credentials["key"]
    return config


def client_tls_keys() -> tuple[str, ...]:
    """The keys of ``tls_config`` a client uses (the servers' certificates aside)."""
    return tuple(tls_config({"cert": "", "key": ""}, roles=("client",)))


def apply(credentials: dict[str, str] | None) -> None:
    """Use the job's credentials in this process (None: plain TCP, ``--insecure``)."""
    if credentials is not None:
        dask.config.set(tls_config(credentials))
