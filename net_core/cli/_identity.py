"""``net identity`` and ``net token``: make and inspect identities, issue and check tokens.

* ``net identity new [--seed-file F]`` makes an ed25519 identity. With ``--seed-file`` the
  secret seed goes to F (64 hex digits and a newline, mode 0600, never overwriting an
  existing file) and only the public values are printed; without it the seed is printed,
  marked secret.
* ``net identity show --seed-file F`` prints the entity id (hex), node id and origin hash.
* ``net token issue --seed-file F --subject HEX --scope publish,subscribe --channel NAME
  --ttl SECONDS`` prints a 161-byte token as hex. A TTL of 0 is an error (the fallible
  issue path: a CLI user gets a diagnostic, not a silently clamped token).
* ``net token verify HEX`` checks the signature and the time window; it exits 0 when the
  token is valid and 1 when it is not, printing why.

Seed files hold either 32 raw bytes or 64 hex digits. Output follows the CLI conventions
(``--json``: one JSON document; library errors exit 1; usage errors exit 2). This module
never prints a seed that it read from a file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from net_core.cli._common import add_json_flag, command, emit_json
from net_core.identity import (
    EntityId,
    EntityKeypair,
    InvalidSeedError,
    PermissionToken,
    TokenError,
    TokenScope,
)

__all__ = ["register"]


def _read_seed(path: str) -> EntityKeypair:
    raw = Path(path).read_bytes()
    if len(raw) != 32:
        text = raw.decode("ascii", "replace").strip()
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise InvalidSeedError(len(raw)) from None
    return EntityKeypair.from_seed(raw)


def _write_seed(path: str, seed: bytes) -> None:
    # O_EXCL: never clobber an existing identity; 0600: the seed is the secret.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(seed.hex() + "\n")


def _identity_document(keypair: EntityKeypair) -> dict[str, Any]:
    return {
        "entity_id": keypair.entity_id.hex(),
        "node_id": keypair.node_id,
        "origin_hash": keypair.origin_hash,
    }


def _print_identity(document: dict[str, Any]) -> None:
    sys.stdout.write(f"entity_id:   {document['entity_id']}\n")
    sys.stdout.write(f"node_id:     0x{document['node_id']:016x} ({document['node_id']})\n")
    origin = document["origin_hash"]
    sys.stdout.write(f"origin_hash: 0x{origin:016x} ({origin})\n")


@command
def _run_identity_new(args: argparse.Namespace) -> int:
    """Make a new identity."""
    keypair = EntityKeypair.generate()
    document = _identity_document(keypair)
    if args.seed_file is not None:
        _write_seed(args.seed_file, keypair.seed())
        document["seed_file"] = args.seed_file
    else:
        document["seed"] = keypair.seed().hex()
    if args.json:
        emit_json(document)
        return 0
    _print_identity(document)
    if args.seed_file is not None:
        sys.stdout.write(f"seed written to {args.seed_file}\n")
    else:
        sys.stdout.write(f"seed (SECRET): {document['seed']}\n")
    return 0


@command
def _run_identity_show(args: argparse.Namespace) -> int:
    """Show an identity's public values."""
    document = _identity_document(_read_seed(args.seed_file))
    if args.json:
        emit_json(document)
    else:
        _print_identity(document)
    return 0


def _scope_argument(text: str) -> TokenScope:
    names = [part for part in text.split(",") if part.strip()]
    try:
        return TokenScope.from_names(names)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _entity_argument(text: str) -> EntityId:
    try:
        return EntityId.from_hex(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bounded(maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not 0 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be in [0, {maximum}], got {value}")
        return value

    return parse


_u8 = _bounded(0xFF)
_u32 = _bounded(0xFFFF_FFFF)
_u64 = _bounded(0xFFFF_FFFF_FFFF_FFFF)


def _token_document(token: PermissionToken) -> dict[str, Any]:
    return {
        "issuer": token.issuer.hex(),
        "subject": token.subject.hex(),
        "scope": token.scope.names(),
        "channel_hash": token.channel_hash,
        "not_before": token.not_before,
        "not_after": token.not_after,
        "delegation_depth": token.delegation_depth,
    }


@command
def _run_token_issue(args: argparse.Namespace) -> int:
    """Issue a token."""
    issuer = _read_seed(args.seed_file)
    channel: int | str = args.channel if args.channel is not None else args.channel_hash
    token = PermissionToken.try_issue(
        issuer, args.subject, args.scope, channel, args.ttl, args.depth
    )
    wire = token.to_bytes().hex()
    if args.json:
        emit_json({"token": wire, **_token_document(token), "nonce": token.nonce})
    else:
        sys.stdout.write(wire + "\n")
    return 0


_EMPTY_FIELDS: dict[str, Any] = dict.fromkeys(
    (
        "issuer",
        "subject",
        "scope",
        "channel_hash",
        "not_before",
        "not_after",
        "delegation_depth",
    )
)


@command
def _run_token_verify(args: argparse.Namespace) -> int:
    """Verify a token."""
    text = sys.stdin.read() if args.token == "-" else args.token
    document: dict[str, Any]
    try:
        raw = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        document = {"valid": False, "error": "invalid_format", **_EMPTY_FIELDS}
    else:
        try:
            token = PermissionToken.from_bytes(raw)
        except TokenError as exc:
            document = {"valid": False, "error": exc.kind, **_EMPTY_FIELDS}
        else:
            try:
                token.check_valid(now=args.now)
            except TokenError as exc:
                document = {"valid": False, "error": exc.kind, **_token_document(token)}
            else:
                document = {"valid": True, "error": None, **_token_document(token)}
    if args.json:
        emit_json(document)
    elif document["valid"]:
        sys.stdout.write("valid\n")
    else:
        sys.stdout.write(f"invalid: {document['error']}\n")
    if not args.json and document["issuer"] is not None:
        for key in ("issuer", "subject", "scope", "channel_hash", "not_before", "not_after"):
            value = document[key]
            shown = ",".join(value) if isinstance(value, list) else value
            sys.stdout.write(f"  {key}: {shown}\n")
        sys.stdout.write(f"  delegation_depth: {document['delegation_depth']}\n")
    return 0 if document["valid"] else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``identity`` and ``token`` command groups."""
    identity = subparsers.add_parser(
        "identity",
        help="make and inspect ed25519 identities",
        description="Make and inspect ed25519 entity identities (seed files).",
    )
    identity_commands = identity.add_subparsers(title="commands", metavar="COMMAND", required=True)
    new = identity_commands.add_parser(
        "new",
        help="make a new identity",
        description=(
            "Make a new identity. With --seed-file the secret seed is written to FILE "
            "(created with mode 0600; an existing file is never overwritten); without it "
            "the seed is printed."
        ),
    )
    new.add_argument("--seed-file", metavar="FILE", default=None, help="write the seed here")
    add_json_flag(new)
    new.set_defaults(func=_run_identity_new)
    show = identity_commands.add_parser(
        "show",
        help="show an identity's entity id, node id and origin hash",
        description="Print the public values of the identity in a seed file.",
    )
    show.add_argument("--seed-file", metavar="FILE", required=True, help="the seed file")
    add_json_flag(show)
    show.set_defaults(func=_run_identity_show)

    token = subparsers.add_parser(
        "token",
        help="issue and verify permission tokens",
        description="Issue and verify 161-byte permission tokens (hex).",
    )
    token_commands = token.add_subparsers(title="commands", metavar="COMMAND", required=True)
    issue = token_commands.add_parser(
        "issue",
        help="issue a token",
        description=(
            "Issue a token signed by the identity in --seed-file and print it as hex. "
            "A TTL of 0 is refused (zero_ttl)."
        ),
    )
    issue.add_argument("--seed-file", metavar="FILE", required=True, help="the issuer's seed")
    issue.add_argument(
        "--subject", metavar="HEX", required=True, type=_entity_argument, help="entity id"
    )
    issue.add_argument(
        "--scope",
        metavar="NAMES",
        required=True,
        type=_scope_argument,
        help="comma-separated: publish, subscribe, admin, delegate, wildcard",
    )
    where = issue.add_mutually_exclusive_group(required=True)
    where.add_argument("--channel", metavar="NAME", default=None, help="channel name")
    where.add_argument(
        "--channel-hash", metavar="N", type=_u32, default=None, help="canonical hash"
    )
    issue.add_argument("--ttl", metavar="SECONDS", type=_u64, required=True)
    issue.add_argument(
        "--depth", metavar="N", type=_u8, default=0, help="delegation depth (0..255)"
    )
    add_json_flag(issue)
    issue.set_defaults(func=_run_token_issue)
    verify = token_commands.add_parser(
        "verify",
        help="verify a token",
        description=("Check a hex token's signature and time window; exit 0 if valid, 1 if not."),
    )
    verify.add_argument("token", metavar="HEX", help="the token in hex ('-' reads stdin)")
    verify.add_argument(
        "--now",
        metavar="UNIX_SECONDS",
        type=_u64,
        default=None,
        help="judge the time window at this unix time instead of now",
    )
    add_json_flag(verify)
    verify.set_defaults(func=_run_token_verify)
