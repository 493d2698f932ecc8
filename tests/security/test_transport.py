"""TLS end to end: a real master serving HTTPS with a certificate of a test CA made here, and the
SDK, the CLI, the Core API and an agent that verify it; the security headers; the docs page that
loads nothing from another host.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from stalwart.cli.main import app as stalwart_cli
from stalwart.client import Client, MasterUnreachable
from stalwart.core._errors import MasterError
from stalwart.core._http import AllocationSession
from stalwart_agent.launcher import trial_env
from stalwart_agent.master import StartAction
from stalwart_master.api import docs_page, security_headers
from stalwart_master.local.process import free_port
from stalwart_master.settings import Settings

from support import (
    ManagedProcess,
    agent_argv,
    drop_database,
    one_error_line,
    recreate_database,
    spawn,
    start_master,
    wait_for,
)

pytestmark = pytest.mark.integration

CA_CERT_ENV = "STALWART_CA_CERT"
UNTRUSTED = "does not verify"


@dataclass(frozen=True)
class Pki:
    """A test CA and a server certificate it signed for 127.0.0.1 and localhost, as PEM files."""

    ca: Path
    cert: Path
    key: Path
    encrypted_key: Path
    other_key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def make_pki(root: Path) -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stalwart test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    root.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca=root / "ca.pem",
        cert=root / "server.pem",
        key=root / "server.key",
        encrypted_key=root / "server-encrypted.key",
        other_key=root / "other.key",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(_key_pem(server_key))
    pki.encrypted_key.write_bytes(_key_pem(server_key, b"a-passphrase"))
    pki.other_key.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1())))
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass(frozen=True)
class TLSMaster:
    url: str
    ca: Path
    admin_token: str
    process: ManagedProcess

    def http(self, headers: dict[str, str] | None = None) -> httpx.Client:
        """A client that trusts the test CA, without a token unless given one in ``headers``."""
        return httpx.Client(
            base_url=self.url, verify=ssl.create_default_context(cafile=self.ca), timeout=30, headers=headers
        )

    def admin(self) -> httpx.Client:
        return self.http({"Authorization": f"Bearer {self.admin_token}"})


@pytest.fixture(scope="module")
def tls_master(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSMaster]:
    """``stalwart-master serve --tls-cert --tls-key`` on a database of its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    database = f"stalwart_tls_{os.environ['STALWART_TEST_RUN']}_{worker}"
    database_url = recreate_database(database)
    port = free_port()
    process = start_master(
        port,
        tmp_path_factory.mktemp("tls-master"),
        {"STALWART_DATABASE_URL": database_url},
        extra_args=["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)],
        https_ca=pki.ca,
    )
    try:
        url = f"https://127.0.0.1:{port}"
        password = os.environ["STALWART_ADMIN_PASSWORD"]
        with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=pki.ca)) as http:
            login = http.post("/api/v1/auth/login", json={"username": "admin", "password": password})
        assert login.status_code == 200, login.text
        yield TLSMaster(url, pki.ca, str(login.json()["token"]), process)
    finally:
        process.stop()
        drop_database(database)


# --- the master's own TLS ---------------------------------------------------------------------


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``stalwart-master serve`` expected to refuse before it binds (so the port never matters)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STALWART_TLS_")}
    return subprocess.run(
        [sys.executable, "-m", "stalwart_master", "serve", "--port", str(free_port()), *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line_refusal(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_master_refuses_a_certificate_without_its_key(pki: Pki) -> None:
    _one_line_refusal(_serve("--tls-cert", str(pki.cert)), "--tls-key")


def test_master_refuses_a_key_from_the_environment_without_a_certificate(pki: Pki) -> None:
    _one_line_refusal(_serve(env={"STALWART_TLS_KEY": str(pki.key)}), "--tls-cert", "STALWART_TLS_CERT")


def test_master_refuses_an_unreadable_certificate(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    _one_line_refusal(_serve("--tls-cert", str(missing), "--tls-key", str(pki.key)), str(missing))


def test_master_refuses_a_key_of_another_certificate(pki: Pki) -> None:
    _one_line_refusal(_serve("--tls-cert", str(pki.cert), "--tls-key", str(pki.other_key)), "do not load")


def test_master_refuses_an_encrypted_key_instead_of_prompting_for_its_password(pki: Pki) -> None:
    _one_line_refusal(_serve("--tls-cert", str(pki.cert), "--tls-key", str(pki.encrypted_key)), "encrypted")


def test_master_serves_https_only(tls_master: TLSMaster) -> None:
    with tls_master.http() as http:
        assert http.get("/health").status_code == 200
    plain = tls_master.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/health", timeout=5)


# --- clients verify the master's certificate --------------------------------------------------


def test_sdk_verifies_the_master_against_the_ca_bundle(
    tls_master: TLSMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CA_CERT_ENV, str(tls_master.ca))
    with Client(tls_master.url, token=tls_master.admin_token) as client:
        assert client.master_info().cluster_name
        assert client.me().username == "admin"


def test_sdk_refuses_a_master_whose_ca_it_was_not_given(
    tls_master: TLSMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CA_CERT_ENV, raising=False)
    with (
        Client(tls_master.url, token=tls_master.admin_token) as client,
        pytest.raises(MasterUnreachable) as caught,
    ):
        client.master_info()
    assert UNTRUSTED in str(caught.value) and CA_CERT_ENV in str(caught.value)


def test_cli_reaches_an_https_master_with_the_ca_bundle(tls_master: TLSMaster, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        stalwart_cli,
        ["master", "info", "--json"],
        env={
            "STALWART_MASTER": tls_master.url,
            CA_CERT_ENV: str(tls_master.ca),
            "STALWART_CONFIG_DIR": str(tmp_path),
        },
    )
    assert result.exit_code == 0, result.stderr
    assert '"cluster_name"' in result.stdout


def test_cli_reports_an_untrusted_master_certificate_on_one_line(
    tls_master: TLSMaster, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        stalwart_cli,
        ["master", "info"],
        env={"STALWART_MASTER": tls_master.url, CA_CERT_ENV: None, "STALWART_CONFIG_DIR": str(tmp_path)},
    )
    one_error_line(result, UNTRUSTED, CA_CERT_ENV)


def test_cli_reports_an_unloadable_ca_bundle_on_one_line(tls_master: TLSMaster, tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    result = CliRunner().invoke(
        stalwart_cli,
        ["master", "info"],
        env={
            "STALWART_MASTER": tls_master.url,
            CA_CERT_ENV: str(not_pem),
            "STALWART_CONFIG_DIR": str(tmp_path),
        },
    )
    one_error_line(result, str(not_pem), "no PEM certificate")


def test_core_api_verifies_the_master_and_does_not_retry_an_untrusted_one(
    tls_master: TLSMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /master is public: the allocation token does not matter for the handshake under test.
    monkeypatch.setenv(CA_CERT_ENV, str(tls_master.ca))
    session = AllocationSession(tls_master.url, "no-allocation-token")
    try:
        assert session.request("GET", "/master").json()["cluster_name"]
    finally:
        session.close()
    monkeypatch.delenv(CA_CERT_ENV)
    session = AllocationSession(tls_master.url, "no-allocation-token")
    try:
        with pytest.raises(MasterError) as caught:
            session.request("GET", "/master")
    finally:
        session.close()
    assert not caught.value.retryable
    assert UNTRUSTED in str(caught.value) and CA_CERT_ENV in str(caught.value)


def _registered(log: Path) -> bool:
    try:
        return ": registered with " in log.read_text(errors="replace")
    except FileNotFoundError:
        return False


def test_agent_with_ca_cert_registers_with_an_https_master(
    tls_master: TLSMaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CA_CERT_ENV, raising=False)
    agent_id = "tls-agent"
    with tls_master.admin() as admin:
        created = admin.post("/api/v1/agents/tokens", json={"agent_id": agent_id})
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        untrusting = spawn(
            agent_argv(tls_master.url, token, agent_id, 1, "tls", tmp_path / "untrusting"),
            tmp_path / "untrusting.log",
        )
        agent = spawn(
            [
                *agent_argv(tls_master.url, token, agent_id, 1, "tls", tmp_path / "work"),
                "--ca-cert",
                str(tls_master.ca),
            ],
            tmp_path / "agent.log",
        )
        try:
            wait_for(lambda: _registered(tmp_path / "agent.log"), 30, "the agent to register over HTTPS")
            agents = admin.get("/api/v1/agents").json()
            assert agent_id in {a["id"] for a in agents}
            # The same agent without the CA never gets past the handshake, and says why.
            wait_for(
                lambda: UNTRUSTED in (tmp_path / "untrusting.log").read_text(errors="replace"),
                30,
                "the agent without the CA to log the untrusted certificate",
            )
            assert not _registered(tmp_path / "untrusting.log")
        finally:
            agent.stop()
            untrusting.stop()
            admin.post(f"/api/v1/agents/{agent_id}/disable", json={"drain": False})


def test_agent_refuses_an_unreadable_ca_cert_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    argv = agent_argv("https://127.0.0.1:9", "some-token", "tls-agent-x", 1, "tls", tmp_path / "work")
    result = subprocess.run([*argv, "--ca-cert", str(missing)], capture_output=True, text=True, timeout=60)
    _one_line_refusal(result, "--ca-cert", str(missing))


def test_agent_hands_its_ca_bundle_and_no_other_stalwart_variable_to_trials() -> None:
    action = StartAction(
        allocation_id="a1", allocation_token="alloc-secret", trial_id=1, experiment_id=2, slot_uuids=()
    )
    base = {CA_CERT_ENV: "/etc/stalwart/ca.pem", "STALWART_AGENT_TOKEN": "agent-secret", "HOME": "/root"}
    env = trial_env(base, master_url="https://master:8443", action=action, slots={})
    assert env[CA_CERT_ENV] == "/etc/stalwart/ca.pem"
    assert "STALWART_AGENT_TOKEN" not in env
    assert CA_CERT_ENV not in trial_env(
        {"HOME": "/root"}, master_url="https://master:8443", action=action, slots={}
    )


# --- security headers ---------------------------------------------------------------------------


def test_api_responses_carry_the_security_headers(tls_master: TLSMaster) -> None:
    with tls_master.admin() as admin:
        response = admin.get("/api/v1/me")
    assert response.status_code == 200, response.text
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert headers["Cache-Control"] == "no-store"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_the_login_answer_with_its_token_is_never_cached(tls_master: TLSMaster) -> None:
    password = os.environ["STALWART_ADMIN_PASSWORD"]
    with tls_master.http() as http:
        response = http.post("/api/v1/auth/login", json={"username": "admin", "password": password})
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"


def _headers_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None)

    @app.get("/api/v1/thing")
    def thing() -> dict[str, str]:
        return {"ok": "yes"}

    security_headers.install(app, Settings())
    return app


def test_hsts_is_sent_only_over_https() -> None:
    with TestClient(_headers_app()) as plain:
        response = plain.get("/api/v1/thing")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in response.headers
    with TestClient(_headers_app(), base_url="https://testserver") as secure:
        assert "Strict-Transport-Security" in secure.get("/api/v1/thing").headers


# --- API docs without third-party hosts ---------------------------------------------------------


class _Links(HTMLParser):
    """Every URL a page makes the browser load or follow: src, href and Swagger UI's spec url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls.extend(value for name, value in attrs if name in ("src", "href") and value)
        self._in_inline_script = tag == "script" and not values.get("src")

    def handle_endtag(self, tag: str) -> None:
        self._in_inline_script = False

    def handle_data(self, data: str) -> None:
        if self._in_inline_script and data.strip():
            self.inline_scripts.append(data)


def test_docs_page_loads_everything_from_the_master_without_a_token(tls_master: TLSMaster) -> None:
    with tls_master.http() as http:
        page = http.get("/docs")
        assert page.status_code == 200, page.text
        assert page.headers["Content-Type"].startswith("text/html")
        links = _Links()
        links.feed(page.text)
        assert links.inline_scripts, "Swagger UI's start-up script is missing"
        spec_urls = [
            line.split("'")[1]
            for script in links.inline_scripts
            for line in script.splitlines()
            if "url:" in line
        ]
        assert spec_urls, "Swagger UI is given no OpenAPI description"
        urls = [*links.urls, *spec_urls]
        assert any(url.endswith(".js") for url in urls) and any(url.endswith(".css") for url in urls)
        master_host = urlsplit(tls_master.url).netloc
        for url in urls:
            absolute = urljoin(tls_master.url + "/docs", url)
            assert urlsplit(absolute).netloc == master_host, f"/docs loads {url} from another host"
            assert http.get(absolute).status_code == 200, absolute
        # The page's own policy admits its inline script by hash, not every inline script.
        policy = page.headers["Content-Security-Policy"]
        assert "'sha256-" in policy and "unsafe-inline" not in policy
        assert http.get("/redoc").status_code == 404


def test_docs_script_hashes_cover_exactly_the_inline_scripts() -> None:
    html = '<script src="/a.js"></script><script>\nrun()\n</script><script type="module">x()</script>'
    # printf '\nrun()\n' | openssl dgst -sha256 -binary | base64
    assert docs_page.inline_script_hashes(html)[0] == "'sha256-X8AAKgaI44zC2JgsZRJ4adpbl777tdE6qoD0mpUQwV4='"
    assert len(docs_page.inline_script_hashes(html)) == 2
