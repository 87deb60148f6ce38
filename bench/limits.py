"""B1-limit — the floors a hop is compared with, measured in the same run as B1.

(a) **Transport floor**: a bare aiohttp server with mutual TLS on loopback (the
    federation's certificates, client certificate required) that reads the same multipart
    request as the local API (envelope part, then the payload in 256 KiB chunks) and answers
    200. It runs in its own process and is driven by the same load generator, so the
    figure is what HTTP + TLS + multipart alone allow on this machine.
(b) **Primitives floor**: CPU per operation of the primitives a message cannot avoid, as
    the node calls them (lxml with the compiled official XSDs, joserfc ES256 and
    ECDH-ES+A256KW as in ``gateway.crypto.seal``, AES-256-GCM from pyca/cryptography,
    hashlib SHA-256, and the node's own ``AuditLog`` appending with group commit).

Run the server alone: ``python -m bench.limits serve CERT KEY CA PORT``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from .common import REPO, log

# ------------------------------------------------------------------------- (a) bare server


async def _serve(cert: str, key: str, ca: str, port: int) -> None:
    from aiohttp import web

    async def accept(request: web.Request) -> web.Response:
        reader = await request.multipart()
        envelope = await reader.next()
        await envelope.read(decode=False)
        payload = await reader.next()
        size = 0
        while chunk := await payload.read_chunk(256 * 1024):
            size += len(chunk)
        return web.json_response({"received": size})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS, as between nodes
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/api/v1/messages", accept)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


class BareServer:
    """The bare mTLS server as a child process."""

    def __init__(self, cert: Path, key: Path, ca: Path, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.limits", "serve", str(cert), str(key), str(ca), str(port)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"bare server did not start: {line}")

    def cpu_seconds(self) -> float:
        import psutil

        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ---------------------------------------------------------------------- (b) primitives


def _per_op(function, *, min_seconds: float, batch: int = 20) -> tuple[float, float]:
    """CPU and wall seconds per call of ``function`` (run for at least ``min_seconds``)."""
    for _ in range(3):
        function()  # warm caches, compile nothing on the clock
    calls = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while True:
        for _ in range(batch):
            function()
        calls += batch
        if time.perf_counter() - wall0 >= min_seconds:
            break
    return (time.process_time() - cpu0) / calls, (time.perf_counter() - wall0) / calls


def primitives(payload: bytes, envelope_xml: bytes, *, runs: int, min_seconds: float) -> dict:
    """Microseconds of CPU per operation, median/min/max over ``runs`` runs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.x509.oid import NameOID
    from joserfc import jwe, jws
    from joserfc.jwk import ECKey
    from lxml import etree

    from gateway.audit import AuditLog
    from gateway.crypto.seal import KEY_ALGORITHMS, SigningIdentity, _jws_registry, canonical_json
    from gateway.schemas import SchemaCatalog

    from .common import SCHEMAS

    sys.path.insert(0, str(REPO / "bench"))
    from audit_bench import record as audit_record  # the audit benchmark's realistic record

    catalog = SchemaCatalog(SCHEMAS)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    envelope_schema = catalog.schema_for(etree.QName(etree.fromstring(envelope_xml, parser)).namespace)
    payload_schema = catalog.schema_for(etree.QName(etree.fromstring(payload, parser)).namespace)

    def parse_validate(data: bytes, schema) -> None:
        tree = etree.fromstring(data, parser).getroottree()
        if not schema.validate(tree):
            raise AssertionError("benchmark document does not validate")

    # A self-signed P-256 certificate is enough for signing cost (the chain check is not a primitive).
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "1-1061-1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now.replace(year=now.year + 1))
            .sign(key, hashes.SHA256()))  # fmt: skip
    signer = SigningIdentity.from_key("1-1061-1", key, cert)
    manifest = {
        "messageId": "m" * 24, "sender": "1-1061-1", "node": "node-luzern", "sealedAt": now.isoformat(timespec="seconds"),
        "envelopeSha256": "0" * 64,
        "payload": {"name": "data.xml", "ciphertextSha256": "0" * 64, "ciphertextLength": len(payload) + 16,
                    "plaintextLength": len(payload), "segmentSize": 65536, "noncePrefix": "AAAAAAAAAA"},
        "keys": {"2-LU-1": "x" * 560},  # about the size of one wrapped content key
    }  # fmt: skip
    token = signer.sign("drehscheibe-seal+json;v=1", manifest)
    registry = _jws_registry()
    public = ECKey.import_key(key.public_key())
    recipient_private = ECKey.generate_key("P-256")
    recipient_public = ECKey.import_key(recipient_private.as_dict(private=False))
    record = canonical_json({"typ": "drehscheibe-key+json;v=1", "cek": "A" * 43, "sender": "1-1061-1", "messageId": "m" * 24,
                             "recipient": "2-LU-1"})  # fmt: skip
    wrapped = jwe.encrypt_compact({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}, record, recipient_public, algorithms=KEY_ALGORITHMS)
    aes = AESGCM(os.urandom(32))
    nonce, aad = os.urandom(12), b"drehscheibe-seal+json;v=1\x001-1061-1\x00m"
    ciphertext = aes.encrypt(nonce, payload, aad)

    folder = tempfile.mkdtemp(dir=os.environ.get("BENCH_DIR"))
    audit = AuditLog.open(Path(folder) / "audit.db", node="node-bench", signing_key=key)
    records = [audit_record(n) for n in range(200)]
    group = 200

    def audit_group() -> None:
        audit.append(records)  # one transaction (one fsync) for 200 records

    operations = {
        "envelope parse + XSD (eCH-0090)": lambda: parse_validate(envelope_xml, envelope_schema),
        "payload parse + XSD (eCH-0020 3.0, 20 KB)": lambda: parse_validate(payload, payload_schema),
        "AES-256-GCM encrypt 20 KB": lambda: aes.encrypt(nonce, payload, aad),
        "AES-256-GCM decrypt 20 KB": lambda: aes.decrypt(nonce, ciphertext, aad),
        "SHA-256 of 20 KB": lambda: hashlib.sha256(payload).digest(),
        "JWS sign ES256 (joserfc)": lambda: signer.sign("drehscheibe-seal+json;v=1", manifest),
        "JWS verify ES256 (joserfc)": lambda: jws.deserialize_compact(token, public, registry=registry),
        "JWE key wrap ECDH-ES+A256KW (joserfc)": lambda: jwe.encrypt_compact({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}, record,
                                                                             recipient_public, algorithms=KEY_ALGORITHMS),
        "JWE key unwrap ECDH-ES+A256KW (joserfc)": lambda: jwe.decrypt_compact(wrapped, recipient_private, algorithms=KEY_ALGORITHMS),
    }  # fmt: skip
    out: dict = {}
    try:
        for label, operation in operations.items():
            cpu, wall = [], []
            for _ in range(runs):
                c, w = _per_op(operation, min_seconds=min_seconds)
                cpu.append(c * 1e6)
                wall.append(w * 1e6)
            out[label] = {"cpu_us": statistics.median(cpu), "min": min(cpu), "max": max(cpu), "wall_us": statistics.median(wall)}
        cpu, wall = [], []
        for _ in range(runs):
            c, w = _per_op(audit_group, min_seconds=min_seconds, batch=2)
            cpu.append(c * 1e6 / group)
            wall.append(w * 1e6 / group)
        out["audit append, 1 record (group commit of 200, synchronous=FULL)"] = {
            "cpu_us": statistics.median(cpu), "min": min(cpu), "max": max(cpu), "wall_us": statistics.median(wall)}  # fmt: skip
    finally:
        audit.close()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    log("primitives: " + ", ".join(f"{k.split(' (')[0]} {v['cpu_us']:.0f} µs" for k, v in out.items()))
    return out


# What one message needs of each primitive, per role (the design in docs/architecture.md:
# the origin validates and seals, the destination verifies, authenticates and signs a
# receipt, the origin verifies that receipt; each hop appends its audit records).
PARSE_ENV, PARSE_PAYLOAD = "envelope parse + XSD (eCH-0090)", "payload parse + XSD (eCH-0020 3.0, 20 KB)"
AES_ENC, AES_DEC, SHA = "AES-256-GCM encrypt 20 KB", "AES-256-GCM decrypt 20 KB", "SHA-256 of 20 KB"
SIGN, VERIFY = "JWS sign ES256 (joserfc)", "JWS verify ES256 (joserfc)"
WRAP, UNWRAP = "JWE key wrap ECDH-ES+A256KW (joserfc)", "JWE key unwrap ECDH-ES+A256KW (joserfc)"
AUDIT = "audit append, 1 record (group commit of 200, synchronous=FULL)"

ISSUE_SET = {PARSE_ENV: 1, PARSE_PAYLOAD: 1, SIGN: 1, AES_ENC: 1, AES_DEC: 1, SHA: 1, AUDIT: 1}
ORIGIN_SET = {PARSE_ENV: 1, PARSE_PAYLOAD: 1, AES_ENC: 1, SHA: 1, WRAP: 1, SIGN: 1, AUDIT: 2}
DESTINATION_SET = {VERIFY: 1, PARSE_ENV: 1, UNWRAP: 1, AES_DEC: 1, SHA: 1, SIGN: 1, AUDIT: 2}
RECEIPT_SET = {VERIFY: 1, AUDIT: 2}


def cost_us(prims: dict, recipe: dict) -> float:
    return sum(prims[name]["cpu_us"] * count for name, count in recipe.items())


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "serve":
        asyncio.run(_serve(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
    else:
        raise SystemExit("usage: python -m bench.limits serve CERT KEY CA PORT")
