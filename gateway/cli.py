"""The ``drehscheibe`` command: run a node, make a development PKI, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from .config import ConfigError, load_config
from .ids import ParticipantId


def _node_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    if config.workers > 1:
        from .workers import prepare_process_metrics

        # Before anything imports prometheus_client: every process counts into files here.
        prepare_process_metrics(config)
    from .logs import config_identifiers, configure_logging
    from .server import serve

    # SECURITY: a running node logs JSON lines through the scrubbing filter (docs/observability.md).
    configure_logging(config.node_id, level=logging.INFO if args.verbose else logging.WARNING,
                      identifiers=config_identifiers(config))  # fmt: skip
    asyncio.run(serve(config, verbose=args.verbose))
    return 0


def _node_worker(args: argparse.Namespace) -> int:
    """One worker process of a node with ``[node] workers > 1``; started by ``node run``, not by hand."""
    from .logs import config_identifiers, configure_logging
    from .workers import serve_worker

    # A SIGHUP passed on while this worker still starts must not end it: it reads the files now anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(config.node_id, level=logging.INFO if args.verbose else logging.WARNING,
                      identifiers=config_identifiers(config))  # fmt: skip
    asyncio.run(serve_worker(config, args.index, args.notify_fd))
    return 0


def _config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    print(f"{config.source}: node {config.node_id}, {len(config.participants)} hosted participants, {len(config.routes)} routes")
    return 0


def _pki_init(args: argparse.Namespace) -> int:
    from .pki import DevelopmentCA

    ca = DevelopmentCA(Path(args.dir))
    print(f"federation CA: {ca.cert_path}")
    return 0


def _pki_node(args: argparse.Namespace) -> int:
    from .pki import DevelopmentCA

    issued = DevelopmentCA(Path(args.dir)).issue_node(args.id, Path(args.dir) / "nodes", tuple(args.host))
    print(f"node {args.id}: {issued.certificate} (key {issued.private_key}, mode 0600)")
    return 0


def _pki_participant(args: argparse.Namespace) -> int:
    from .pki import DevelopmentCA

    signing, encryption = DevelopmentCA(Path(args.dir)).issue_participant(ParticipantId.parse(args.id), Path(args.dir) / "participants")
    print(f"participant {args.id}: signing {signing.certificate}, encryption {encryption.certificate} (keys mode 0600)")
    return 0


def _pki_revoke(args: argparse.Namespace) -> int:
    from .pki import DevelopmentCA, load_certificate

    ca = DevelopmentCA(Path(args.dir))
    path = ca.revoke(load_certificate(Path(args.cert)), next_update_days=args.next_update_days)
    print(f"revoked {args.cert}; revocation list {path} (nodes read it at the next SIGHUP or within the hour)")
    return 0


def _pki_ocsp_responder(args: argparse.Namespace) -> int:
    """Issue the delegated OCSP responder certificate if needed, then answer OCSP requests until Ctrl-C."""
    from datetime import timedelta

    from .ocsp_responder import DevelopmentOcspResponder, serving
    from .pki import DevelopmentCA, IssuedIdentity, load_certificate

    ca = DevelopmentCA(Path(args.dir))
    identity = IssuedIdentity(ca.directory / "ocsp-responder.pem", ca.directory / "ocsp-responder-key.pem")
    if not identity.certificate.exists() or load_certificate(identity.certificate).not_valid_after_utc <= ca.now + timedelta(days=1):
        identity = ca.issue_ocsp_responder()
        print(f"OCSP responder certificate: {identity.certificate} (key {identity.private_key}, mode 0600)")
    if args.issue_only:
        return 0
    responder = DevelopmentOcspResponder(ca, responder=identity, validity=timedelta(minutes=args.validity_minutes))

    async def run() -> None:
        async with serving(responder, args.host, args.port) as url:
            print(f"OCSP responder for {ca.cert_path} on {url} (answers from {ca.crl_path}); Ctrl-C stops it", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    """Issue a participant's next encryption key beside the current one and say how to switch."""
    from .pki import DevelopmentCA

    participant = ParticipantId.parse(args.participant)
    identity = DevelopmentCA(Path(args.pki)).rotate_encryption(participant, Path(args.pki) / "participants")
    print(f"new encryption key for {participant}: {identity.certificate} (key {identity.private_key}, mode 0600)")
    print("1. on the participant's node, make it current and keep the old one until nothing queued needs it:")
    print(f'     encryption_key = "{identity.private_key}"\n     encryption_certificate = "{identity.certificate}"')
    print("     [[participants.previous_encryption]]\n     key = \"<the old encryption_key>\"\n     certificate = \"<the old encryption_certificate>\"")
    print("2. publish the new certificate (drehscheibe directory add-certificate … --use encryption; then publish),")
    print("   or update known_participants on the senders' nodes; new messages are then sealed for the new key.")
    print("3. restart the participant's node; retire the old key once no message sealed for it is queued anywhere.")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import demo_up, run_demo

    if args.action == "up":
        return asyncio.run(demo_up(Path(args.dir), schemas=Path(args.schemas)))
    return asyncio.run(run_demo(Path(args.dir), samples=Path(args.samples), schemas=Path(args.schemas)))


def build_parser() -> argparse.ArgumentParser:
    from .federation import DEFAULT_SCHEMAS

    parser = argparse.ArgumentParser(prog="drehscheibe", description="Secured eCH/sedex data-exchange gateway")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    node = commands.add_parser("node", help="run or check a node").add_subparsers(dest="node_command", required=True)
    run = node.add_parser("run", help="run a node until SIGTERM")
    run.add_argument("--config", required=True)
    run.set_defaults(func=_node_run)
    worker = node.add_parser("worker", help="one worker process of a node with [node] workers > 1 (started by node run)")
    worker.add_argument("--config", required=True)
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--notify-fd", type=int, required=True, help="the primary's pipe for forwarder wake-ups")
    worker.set_defaults(func=_node_worker)
    check = node.add_parser("check-config", help="load a node configuration and report errors")
    check.add_argument("--config", required=True)
    check.set_defaults(func=_config_check)

    pki = commands.add_parser("pki", help="development PKI (never for production)").add_subparsers(dest="pki_command", required=True)
    init = pki.add_parser("init", help="create the federation CA")
    init.add_argument("--dir", default="certs/dev")
    init.set_defaults(func=_pki_init)
    pnode = pki.add_parser("node", help="issue a node TLS certificate")
    pnode.add_argument("--dir", default="certs/dev")
    pnode.add_argument("--id", required=True)
    pnode.add_argument("--host", action="append", default=["localhost", "127.0.0.1"])
    pnode.set_defaults(func=_pki_node)
    ppart = pki.add_parser("participant", help="issue participant signing and encryption certificates")
    ppart.add_argument("--dir", default="certs/dev")
    ppart.add_argument("--id", required=True)
    ppart.set_defaults(func=_pki_participant)
    prevoke = pki.add_parser("revoke", help="revoke a certificate: add it to the CA's revocation list (crl.pem)")
    prevoke.add_argument("--dir", default="certs/dev")
    prevoke.add_argument("--cert", required=True)
    prevoke.add_argument("--next-update-days", type=int, default=7)
    prevoke.set_defaults(func=_pki_revoke)
    pocsp = pki.add_parser("ocsp-responder", help="issue the delegated OCSP responder certificate and serve OCSP over HTTP")
    pocsp.add_argument("--dir", default="certs/dev")
    pocsp.add_argument("--host", default="127.0.0.1")
    pocsp.add_argument("--port", type=int, default=8889)
    pocsp.add_argument("--validity-minutes", type=int, default=60, help="nextUpdate of each response, after thisUpdate")
    pocsp.add_argument("--issue-only", action="store_true", help="issue the responder certificate, do not serve")
    pocsp.set_defaults(func=_pki_ocsp_responder)

    keys = commands.add_parser("keys", help="participant keys").add_subparsers(dest="keys_command", required=True)
    rotate = keys.add_parser("rotate", help="issue a participant's next encryption key (development PKI) and print the steps")
    rotate.add_argument("--pki", default="certs/dev")
    rotate.add_argument("--participant", required=True)
    rotate.set_defaults(func=_keys_rotate)

    demo = commands.add_parser("demo", help="run the demo scenario on localhost (or: demo up, keep the federation running)")
    demo.add_argument("action", nargs="?", choices=["run", "up"], default="run",
                      help="run: the scenario, then stop (default); up: start the federation and keep it running")
    demo.add_argument("--dir", default=".demo")
    demo.add_argument("--samples", default=str(DEFAULT_SCHEMAS.parent / "samples"))
    demo.add_argument("--schemas", default=str(DEFAULT_SCHEMAS))
    demo.set_defaults(func=_demo)

    for module in _command_modules():
        module.register(commands)
    return parser


def _command_modules():
    """Command groups contributed by subsystems, registered explicitly."""
    from . import operator_cli
    from .audit import cli as audit_cli
    from .directory import cli as directory_cli
    from .policy import cli as policy_cli

    return [policy_cli, audit_cli, directory_cli, operator_cli]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
