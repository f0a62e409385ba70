"""Per-service identity and TLS of khala_common.grpc_server, against real servers:
each caller is known by its own token, a method refuses services it does not
list, tokens rotate without downtime, and TLS (mutual, with a CA) refuses
plaintext clients and certificates of another CA."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from khala_common.grpc_server import (
    ERROR_CODE_KEY,
    GrpcServer,
    ServiceCredentials,
    TlsFiles,
    channel,
    credentials_of,
    insecure_channel,
    service_metadata,
    tls_of,
)
from khala_common.settings import CommonSettings, SettingsError

WRITE = "/khala.test.Store/Write"
READ = "/khala.test.Store/Read"
CALLERS = {WRITE: frozenset({"projector"})}


def _store_server(
    credentials: ServiceCredentials | None, *, token: str = "", tls: TlsFiles | None = None
) -> GrpcServer:
    server = GrpcServer("127.0.0.1", 0, token, credentials=credentials, callers=CALLERS, tls=tls)
    handler = grpc.method_handlers_generic_handler(
        "khala.test.Store",
        {
            "Write": grpc.unary_unary_rpc_method_handler(lambda _r, _c: b"written"),
            "Read": grpc.unary_unary_rpc_method_handler(lambda _r, _c: b"read"),
        },
    )
    server.add(lambda _s, srv: srv.add_generic_rpc_handlers((handler,)), None, [])
    return server


async def _call(target: str, method: str, token: str, tls: TlsFiles | None = None) -> bytes:
    async with channel(target, tls) as ch:
        result: bytes = await ch.unary_unary(method)(
            b"", metadata=service_metadata(token), timeout=5
        )
        return result


async def _refusal(target: str, method: str, token: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(target, method, token)
    codes = dict(refused.value.trailing_metadata() or ())
    return refused.value.code(), str(codes.get(ERROR_CODE_KEY))


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    credentials = ServiceCredentials.parse("projector:p-token,gateway:g-token")
    server = _store_server(credentials, token="legacy-shared-token")
    await server.start()
    yield server
    await server.stop(0)


async def test_each_service_is_known_by_its_own_token_per_method(server: GrpcServer) -> None:
    target = f"127.0.0.1:{server.port}"
    assert await _call(target, WRITE, "p-token") == b"written"
    assert await _call(target, READ, "g-token") == b"read"  # an unlisted method: any caller
    assert await _refusal(target, WRITE, "g-token") == (
        grpc.StatusCode.PERMISSION_DENIED,
        "forbidden",
    )
    for unknown in ("nobody-token", "legacy-shared-token", ""):
        assert await _refusal(target, READ, unknown) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthorized",
        )


async def test_a_token_rotates_without_downtime() -> None:
    """Deploy both tokens, move the caller to the new one, then drop the old one."""
    steps = ["projector:old", "projector:old,projector:new", "projector:new"]
    results = []
    for step in steps:
        server = _store_server(ServiceCredentials.parse(step))
        await server.start()
        target = f"127.0.0.1:{server.port}"
        try:
            outcome = []
            for token in ("old", "new"):
                try:
                    outcome.append(await _call(target, WRITE, token) == b"written")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                    outcome.append(False)
            results.append(tuple(outcome))
        finally:
            await server.stop(0)
    assert results == [(True, False), (True, True), (False, True)]


async def test_the_single_shared_token_mode_allows_every_method() -> None:
    server = _store_server(None, token="shared")
    await server.start()
    try:
        assert await _call(f"127.0.0.1:{server.port}", WRITE, "shared") == b"written"
        assert (await _refusal(f"127.0.0.1:{server.port}", WRITE, "other"))[1] == "unauthorized"
    finally:
        await server.stop(0)


def test_settings_read_credentials_and_tls_paths() -> None:
    settings = CommonSettings.read(
        {
            "KHALA_SERVICE_CREDENTIALS": "runtime:a, runtime:b ,gateway:c",
            "KHALA_GRPC_TLS_CERT": "/tls/tls.crt",
            "KHALA_GRPC_TLS_KEY": "/tls/tls.key",
            "KHALA_GRPC_TLS_CA": "/tls/ca.crt",
        }
    )
    assert settings.service_credentials == (("runtime", "a"), ("runtime", "b"), ("gateway", "c"))
    credentials = credentials_of(settings)
    assert credentials is not None and credentials.names == {"runtime", "gateway"}
    assert tls_of(settings) == TlsFiles("/tls/tls.crt", "/tls/tls.key", "/tls/ca.crt")
    assert credentials_of(CommonSettings.read({})) is None
    assert tls_of(CommonSettings.read({})) is None
    for bad in ({"KHALA_SERVICE_CREDENTIALS": "runtime"}, {"KHALA_GRPC_TLS_CERT": "/x"}):
        with pytest.raises(SettingsError):
            CommonSettings.read(bad)


# --- TLS ---------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName(subject)]),
            False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _trusting(ca: str) -> grpc.ChannelCredentials:
    """Credentials that verify the server against `ca` and present no certificate."""
    return grpc.ssl_channel_credentials(Path(ca).read_bytes())


def _issue(directory: Path, ca_name: str, services: tuple[str, ...]) -> dict[str, TlsFiles]:
    """A CA and one certificate per service under `directory` (PEM files)."""
    ca_key = _key()
    ca_path = directory / f"{ca_name}.crt"
    ca_path.write_bytes(_cert(ca_name, ca_key).public_bytes(serialization.Encoding.PEM))
    files = {}
    for service in services:
        key = _key()
        cert = _cert(service, key, (ca_name, ca_key))
        (directory / f"{service}.key").write_bytes(_pem_key(key))
        (directory / f"{service}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[service] = TlsFiles(
            str(directory / f"{service}.crt"), str(directory / f"{service}.key"), str(ca_path)
        )
    return files


async def test_tls_serves_verified_peers_and_refuses_plaintext_and_another_ca(
    tmp_path: Path,
) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "rogue").mkdir()
    good = _issue(tmp_path / "good", "khala-ca", ("runtime", "projector"))
    rogue = _issue(tmp_path / "rogue", "rogue-ca", ("projector",))
    credentials = ServiceCredentials.parse("projector:p-token")
    server = _store_server(credentials, tls=good["runtime"])
    await server.start()
    target = f"localhost:{server.port}"
    try:
        assert await _call(target, WRITE, "p-token", good["projector"]) == b"written"
        async with insecure_channel(target) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await plain.unary_unary(WRITE)(b"", metadata=service_metadata("p-token"), timeout=2)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # another CA's client: it cannot verify the server; a client trusting the
        # right CA but presenting a rogue certificate: the server cannot verify it
        rogue_cert = TlsFiles(rogue["projector"].cert, rogue["projector"].key, good["runtime"].ca)
        for client in (rogue["projector"], rogue_cert):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _call(target, WRITE, "p-token", client)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # mutual TLS: verifying the server is not enough, a client certificate is required
        ca_only = _trusting(good["runtime"].ca)
        async with grpc.aio.secure_channel(target, ca_only) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await anonymous.unary_unary(WRITE)(
                    b"", metadata=service_metadata("p-token"), timeout=2
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
