"""Command line (spec section 6): ``python -m margin_risk what-if|replay|rebuild-state|demo``.

Every input error ends with a non-zero exit and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from margin_risk.models import (
    AccountSnapshot,
    EnforcementInput,
    describe_error,
    parse_enforcement_input,
)
from margin_risk.money import cents, dumps
from margin_risk.rules import Holding, InvalidBook, compute_margin
from margin_risk.settings import HouseSettings, check_move, load_house_settings
from margin_risk.stress import stress_table


class InputError(Exception):
    """A problem with the user's input, reported as one line."""


def read_text(path: str) -> str:
    """The file as UTF-8 text, or an InputError naming what is wrong with it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from e


def _read_json(path: str) -> Any:
    text = read_text(path)
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except _NonFinite as e:
        raise InputError(f"{path}: {e}") from e
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from e


class _NonFinite(ValueError):
    """JSON's NaN/Infinity extensions: Python accepts them, money must not."""


def _reject_constant(name: str) -> float:
    raise _NonFinite(f"{name} is not allowed: numbers must be finite")


def parse_scenarios(text: str) -> list[Decimal]:
    """SPY moves as exact decimals, held to the same limits as the settings' grid."""
    moves = []
    for part in text.split(","):
        part = part.strip()
        try:
            s = Decimal(part)
        except InvalidOperation:
            raise InputError(f"--scenarios: {part!r} is not a number") from None
        try:
            moves.append(check_move(s))
        except ValueError as e:
            raise InputError(f"--scenarios: {e}") from None
    return moves


def what_if(
    snapshot: AccountSnapshot, house: HouseSettings, scenarios: Sequence[Decimal] | None
) -> dict[str, Any]:
    """The account's margin and its stress table, rounded to cents for presentation."""
    p = house.margin.to_params()
    holdings = [Holding(x.symbol, x.quantity, x.price, x.beta) for x in snapshot.positions]
    try:
        base = compute_margin(snapshot.cash, holdings, p)
        rows = stress_table(snapshot.cash, holdings, p, scenarios)
    except InvalidBook as e:
        raise InputError(str(e)) from e
    return {
        "account_id": snapshot.account_id,
        "long_market_value": cents(base.long_market_value),
        "short_market_value": cents(base.short_market_value),
        "equity": cents(base.equity),
        "maintenance_req": cents(base.maintenance_req),
        "excess": cents(base.excess),
        "deficiency": cents(base.deficiency),
        "stress": [
            {
                "scenario": r.scenario,
                "equity": cents(r.result.equity),
                "maintenance_req": cents(r.result.maintenance_req),
                "deficiency": cents(r.result.deficiency),
            }
            for r in rows
        ],
    }


def _cmd_what_if(args: argparse.Namespace) -> int:
    raw = _read_json(args.snapshot)
    try:
        snap = AccountSnapshot.model_validate(raw)
    except ValidationError as e:
        raise InputError(f"{args.snapshot}: {describe_error(e)}") from e
    scenarios = parse_scenarios(args.scenarios) if args.scenarios else None
    print(dumps(what_if(snap, load_house_settings(), scenarios), compact=False))
    return 0


def read_events(path: str) -> list[EnforcementInput]:
    """Validate every line first, so a bad file produces no output at all."""
    lines = read_text(path).splitlines()
    events: list[EnforcementInput] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line, parse_float=Decimal, parse_constant=_reject_constant)
        except _NonFinite as e:
            raise InputError(f"{path}:{n}: {e}") from e
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: invalid JSON: {e.msg}") from e
        if not isinstance(raw, dict):
            raise InputError(f"{path}:{n}: expected a JSON object")
        try:
            events.append(parse_enforcement_input(raw))
        except ValidationError as e:
            raise InputError(f"{path}:{n}: {describe_error(e)}") from e
    return events


def _cmd_replay(args: argparse.Namespace) -> int:
    from margin_risk.enforcement import replay

    events = read_events(args.events)
    result = replay(events, load_house_settings().policy.to_params())
    out = sys.stdout
    for d in result.decisions:
        out.write(d.to_json() + "\n")
    return 0


def _cmd_rebuild_state(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from margin_risk.audit import dumps_views, read_audit_dir, rebuild_state
    from margin_risk.models import AuditEvent

    source: str = args.source
    events: list[AuditEvent]
    try:
        if source.startswith("s3://"):
            from margin_risk.adapters.audit_reader import read_audit_s3

            events = read_audit_s3(source)
        else:
            root = Path(source)
            if not root.is_dir():
                raise InputError(
                    f"{source}: not a directory (give a local audit dir or s3://bucket/prefix)"
                )
            events = read_audit_dir(root)
    except ValidationError as e:
        raise InputError(f"{source}: bad audit record: {describe_error(e)}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{source}: an audit file is not UTF-8 text ({e.reason})") from e
    except ValueError as e:  # not an s3://bucket/prefix URI
        raise InputError(str(e)) from e
    except OSError as e:
        raise InputError(f"{e.filename or source}: cannot read: {e.strerror or e}") from e
    except (BotoCoreError, ClientError) as e:
        raise InputError(f"{source}: cannot read: {e}") from e
    print(dumps_views(rebuild_state(events)))
    return 0


def _cmd_desk(args: argparse.Namespace) -> int:
    """Publish an EXTEND_CALL or WAIVE_CALL signed by the caller's AWS identity."""
    from botocore.exceptions import BotoCoreError, ClientError

    from margin_risk import desk, names
    from margin_risk.untrusted import parse_timestamp

    until = None
    if args.desk_action == "extend":
        try:
            until = parse_timestamp(args.until)
        except ValueError as e:
            raise InputError(f"--until: {e}") from None
    settings = desk.DeskSettings()
    publisher = desk.DeskPublisher(
        bootstrap=args.bootstrap or settings.bootstrap,
        auth=args.auth or settings.auth,
        topic=settings.topic,
    )
    try:
        operator = desk.operator_identity()
    except (BotoCoreError, ClientError) as e:
        raise InputError(f"cannot tell who you are (STS GetCallerIdentity): {e}") from e
    kind = names.DESK_ACTION_EXTEND if args.desk_action == "extend" else names.DESK_ACTION_WAIVE
    try:
        action = desk.build_action(
            args.account, kind, operator=operator, reason=args.reason, until=until
        )
        publisher.publish(action)
    except ValidationError as e:
        raise InputError(describe_error(e)) from e
    except desk.DeskError as e:
        raise InputError(str(e)) from e
    print(action.to_json())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from margin_risk.local.demo import run_demo
    except ImportError:
        print("demo: not built yet (see the open demo issue)", file=sys.stderr)
        return 3
    return int(run_demo(args))


def _cmd_health(args: argparse.Namespace) -> int:
    from margin_risk.health import run_health

    return run_health(args.metrics_dir, aws=args.aws, as_json=args.json)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboards.html_render import run_dashboard

    return run_dashboard(args.out, args.metrics_dir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m margin_risk", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("what-if", help="margin and stress table of one account snapshot")
    w.add_argument("snapshot")
    w.add_argument("--scenarios", help="comma-separated SPY moves, e.g. -0.05,-0.10")
    w.set_defaults(func=_cmd_what_if)

    r = sub.add_parser("replay", help="enforcement decisions for a JSONL file of results")
    r.add_argument("events")
    r.set_defaults(func=_cmd_replay)

    b = sub.add_parser("rebuild-state", help="rebuild enforcement state from the audit trail")
    b.add_argument("source", help="a local directory or s3://bucket/prefix")
    b.set_defaults(func=_cmd_rebuild_state)

    k = sub.add_parser("desk", help="the risk desk: extend or waive an account's open call")
    k_sub = k.add_subparsers(dest="desk_action", required=True)
    for name, helptext in (
        ("extend", "move the open call's liquidation deadline to --until"),
        ("waive", "close the open call without payment (lifts a restriction)"),
    ):
        a = k_sub.add_parser(name, help=helptext)
        a.add_argument("account")
        if name == "extend":
            a.add_argument("--until", required=True, help="new deadline, ISO-8601 with a zone")
        a.add_argument("--reason", required=True, help="why, for the audit trail")
        a.add_argument("--bootstrap", help="Kafka bootstrap servers (else MR_DESK_BOOTSTRAP)")
        a.add_argument("--auth", choices=("iam", "none"), help="MSK IAM (default) or none")
        a.set_defaults(func=_cmd_desk)

    d = sub.add_parser("demo", help="the whole pipeline on this machine")
    d.add_argument("--accounts", type=int, default=300)
    d.add_argument("--symbols", type=int, default=40)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--summary-json")
    d.set_defaults(func=_cmd_demo)

    h = sub.add_parser("health", help="pipeline health report: is every stage still moving?")
    src = h.add_mutually_exclusive_group(required=True)
    src.add_argument("--metrics-dir", help="a local run dir (or its metrics/ dir of EMF .jsonl)")
    src.add_argument("--aws", action="store_true", help="read CloudWatch (default credentials)")
    h.add_argument("--json", action="store_true", help="print the report as JSON")
    h.set_defaults(func=_cmd_health)

    g = sub.add_parser("dashboard", help="render the dashboards from local metrics to HTML")
    g.add_argument("--out", required=True, help="output directory (index.html)")
    g.add_argument("--metrics-dir", help="a local run dir (or its metrics/ dir of EMF .jsonl)")
    g.set_defaults(func=_cmd_dashboard)
    return p


def _glue_option_values(argv: Sequence[str]) -> list[str]:
    """Let ``--scenarios -0.05,-0.10`` work: argparse would read the value as an option."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "--scenarios":
            nxt = next(it, None)
            out.append(a if nxt is None else f"{a}={nxt}")
        else:
            out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_glue_option_values(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValidationError as e:
        print(f"error: invalid settings: {describe_error(e)}", file=sys.stderr)
        return 1
