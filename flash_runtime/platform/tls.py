"""The platform's TLS front: ``https://flash.localhost:<port + 1>``, for clients that insist on HTTPS.

The Runpod SDK 2.0 calls a load-balanced endpoint at ``https://{endpoint_id}.{host}{path}``,
where ``host`` is the host of its ``RUNPOD_ENDPOINT_BASE_URL``: the scheme is fixed, only the
host can be chosen. So the platform also listens with TLS, on the port after its own, under a
name every ``{id}.`` prefix can be put before: ``flash.localhost``. Names under ``localhost``
are loopback by definition (RFC 6761), and the 2.0 SDK's HTTP client (aiohttp with aiodns,
which the SDK requires) resolves them so without any system change; one wildcard certificate
(``*.flash.localhost``; ``*.localhost`` would not do: a wildcard needs two labels after it)
covers every endpoint.

The certificate comes from the platform's own CA, made on first use under
``FLASH_HOME/platform/tls`` (keys 0600): ``ca.pem``, and ``bundle.pem`` (this machine's trusted
CAs and the platform's), which a client names in ``SSL_CERT_FILE``. The front terminates TLS and
passes the bytes on to the platform's plain port, so everything behind it (keys, routing by
``Host``) is the same as for plain HTTP. ``FLASH_PLATFORM_TLS=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import ssl
from pathlib import Path

from ..protocol.local import PlatformConfig

log = logging.getLogger("flash_runtime.platform.tls")

HOST = "flash.localhost"
CA_DAYS = 3650
LEAF_DAYS = 397


def tls_dir(config: PlatformConfig) -> Path:
    return config.root / "tls"


def bundle_path(config: PlatformConfig) -> Path:
    return tls_dir(config) / "bundle.pem"


def ensure_certificates(config: PlatformConfig) -> tuple[Path, Path]:
    """The front's certificate chain and key, made (with the CA and the bundle) when missing or
    within a month of expiring."""
    from cryptography import x509

    folder = tls_dir(config)
    cert, key = folder / "cert.pem", folder / "key.pem"
    if cert.is_file() and key.is_file() and bundle_path(config).is_file():
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
        if leaf.not_valid_after_utc > soon:
            return cert, key
    _make(folder)
    return cert, key


def _private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def _make(folder: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    pem = serialization.Encoding.PEM
    ca_path, ca_key_path = folder / "ca.pem", folder / "ca-key.pem"
    if ca_path.is_file() and ca_key_path.is_file():
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flash local platform CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
            .sign(ca_key, hashes.SHA256())
        )
        _private(
            ca_key_path,
            ca_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        ca_path.write_bytes(ca.public_bytes(pem))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(HOST), x509.DNSName(f"*.{HOST}")]), False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _private(
        folder / "key.pem",
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    (folder / "cert.pem").write_bytes(leaf.public_bytes(pem))
    system = ssl.get_default_verify_paths().cafile
    trusted = Path(system).read_bytes() if system and Path(system).is_file() else b""
    (folder / "bundle.pem").write_bytes(trusted + b"\n" + ca.public_bytes(pem))


def client_environment(config: PlatformConfig) -> dict[str, str]:
    """What the Runpod SDK (2.0's ``rp`` and ``runpod.App``; 1.x's client too) needs to talk to
    this platform: GraphQL and REST at its URL, the data plane at the TLS front, its key, and
    the CA bundle that trusts the front (``flash platform env`` prints these)."""
    return {
        "RUNPOD_API_KEY": config.api_key,
        "RUNPOD_API_BASE_URL": config.url,
        "RUNPOD_ENDPOINT_BASE_URL": f"{config.tls_url}/v2",
        "SSL_CERT_FILE": str(bundle_path(config)),
    }


def enabled() -> bool:
    return os.environ.get("FLASH_PLATFORM_TLS", "1").strip() not in ("0", "false", "no")


async def serve_front(config: PlatformConfig) -> asyncio.Server | None:
    """Listen with TLS on ``config.tls_port`` and relay each connection to the platform's port;
    None (logged) when the port is taken."""
    cert, key = await asyncio.to_thread(ensure_certificates, config)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(config.host, config.port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                    if dst.can_write_eof():
                        dst.write_eof()
                    else:
                        dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()

    try:
        server = await asyncio.start_server(relay, config.host, config.tls_port, ssl=context)
    except OSError as err:
        log.warning("no TLS front on port %d: %s", config.tls_port, err.strerror or err)
        return None
    log.info("TLS front on %s (CA: %s)", config.tls_url, tls_dir(config) / "ca.pem")
    return server
