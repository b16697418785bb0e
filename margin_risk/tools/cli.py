"""Command line (spec section 6): ``python -m margin_risk what-if|replay|rebuild-state|desk|
backtest|demo``.

Every input error ends with a non-zero exit and one line on stderr, never a traceback. A file
argument of ``-`` reads standard input; output piped into a reader that stops early (``| head``)
ends quietly.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import ValidationError
from pydantic_settings import SettingsError

from margin_risk import untrusted
from margin_risk.house import HouseBook, parse_house_entries
from margin_risk.models import (
    AccountSnapshot,
    AuditEvent,
    EnforcementInput,
    describe_error,
    parse_enforcement_input,
)
from margin_risk.money import cents, dumps
from margin_risk.params import HouseRates, PolicyParams
from margin_risk.rules import Holding, InvalidBook, compute_margin
from margin_risk.settings import (
    HouseSettings,
    PolicySettings,
    check_move,
    load_house_settings,
)
from margin_risk.stress import stress_table


class InputError(Exception):
    """A problem with the user's input, reported as one line."""


STDIN = "-"
EXIT_INPUT = 1
# A bug, not bad input: still one line (the help promises no traceback), but told apart.
EXIT_INTERNAL = 70
# The reader of our output went away (``| head``): the status a tool killed by SIGPIPE has.
EXIT_BROKEN_PIPE = 141


def _name(path: str) -> str:
    return "<stdin>" if path == STDIN else path


@contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """The file (or standard input for ``-``) as a byte stream; an InputError if unreadable."""
    if path == STDIN:
        yield sys.stdin.buffer
        return
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the caller is done
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from e
    with f:
        yield f


def _read_bytes(path: str, max_bytes: int) -> bytes:
    """At most ``max_bytes + 1`` bytes: enough for the boundary to tell that it is too large."""
    with open_input(path) as f:
        try:
            return f.read(max_bytes + 1)
        except OSError as e:
            raise InputError(f"{_name(path)}: cannot read: {e.strerror or e}") from e


def read_document(path: str) -> dict[str, Any]:
    """A JSON object from a file or standard input, within `untrusted`'s bounds."""
    data = _read_bytes(path, untrusted.MAX_DOCUMENT_BYTES)
    try:
        return untrusted.load_object(data)
    except untrusted.Rejected as e:
        raise InputError(f"{_name(path)}: {e.reason}") from e


def load_settings() -> HouseSettings:
    """The house settings from the environment; a malformed ``MR_*`` variable is one line."""
    try:
        return load_house_settings()
    except ValidationError as e:
        raise InputError(f"invalid settings: {describe_error(e)}") from e
    except SettingsError as e:
        cause = e.__cause__ or e.__context__
        why = f": {cause}" if cause is not None else ""
        raise InputError(f"invalid settings ({_mr_vars()}): {e}{why}") from e
    except RecursionError as e:
        raise InputError(f"invalid settings ({_mr_vars()}): nested too deep") from e


def _mr_vars() -> str:
    return ", ".join(sorted(k for k in os.environ if k.upper().startswith("MR_"))) or "MR_*"


def parse_scenarios(text: str) -> list[Decimal]:
    """``--scenarios`` as exact SPY moves, held to the settings' own limits (`check_move`)."""
    moves: list[Decimal] = []
    for part in text.split(","):
        part = part.strip()
        if len(part) > untrusted.MAX_NUMBER_CHARS:
            raise InputError(f"--scenarios: a move of {len(part)} characters is not a SPY move")
        try:
            move = Decimal(part)
        except InvalidOperation:
            raise InputError(f"--scenarios: {part!r} is not a number") from None
        try:
            moves.append(check_move(move))
        except ValueError as e:
            raise InputError(f"--scenarios: {e}") from None
    return moves


def what_if(
    snapshot: AccountSnapshot,
    house: HouseSettings,
    scenarios: Sequence[Decimal] | None,
    rates: Mapping[str, HouseRates] | None = None,
) -> dict[str, Any]:
    """The account's margin and its stress table, rounded to cents for presentation.

    ``rates``: the house requirements per symbol in force (section 7), applied at the mark and
    at every shocked price.
    """
    p = house.margin.to_params()
    holdings = [Holding(x.symbol, x.quantity, x.price, x.beta) for x in snapshot.positions]
    base = compute_margin(snapshot.cash, holdings, p, rates)
    rows = stress_table(snapshot.cash, holdings, p, scenarios, rates)
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


def read_house(path: str) -> HouseBook:
    """A house file (spec section 7): a JSON list of entries, every one valid or none used."""
    data = _read_bytes(path, untrusted.MAX_DOCUMENT_BYTES)
    try:
        raw = untrusted.loads(data)
    except untrusted.Rejected as e:
        raise InputError(f"{_name(path)}: {e.reason}") from e
    if not isinstance(raw, list):
        raise InputError(f"{_name(path)}: expected a JSON list of house entries")
    try:
        return HouseBook(parse_house_entries(raw))
    except ValidationError as e:
        raise InputError(f"{_name(path)}: entry {describe_error(e)}") from e


def parse_at(text: str | None, option: str = "--at") -> datetime:
    """An ISO-8601 time with a zone given on the command line (None: now)."""
    if text is None:
        return datetime.now(UTC)
    try:
        return untrusted.parse_timestamp(text)
    except ValueError as e:
        raise InputError(f"{option}: {e}") from None


def _cmd_what_if(args: argparse.Namespace) -> int:
    house = load_settings()
    scenarios = None
    if args.scenarios is not None:
        scenarios = parse_scenarios(args.scenarios)
    at = parse_at(args.at)
    book = read_house(args.house) if args.house is not None else None
    raw = read_document(args.snapshot)
    try:
        snap = AccountSnapshot.model_validate(raw)
    except ValidationError as e:
        raise InputError(f"{_name(args.snapshot)}: {describe_error(e)}") from e
    rates = None
    if book is not None:
        rates = book.in_force(at, [x.symbol for x in snap.positions])
    try:
        doc = what_if(snap, house, scenarios, rates)
    except InvalidBook as e:  # rows of one symbol at two prices or betas
        raise InputError(f"{_name(args.snapshot)}: {e}") from e
    if book is not None:
        doc["house"] = {
            "at": at,
            "in_force": [
                {"symbol": s, "as_of": entry.as_of, "updated_by": entry.updated_by}
                for s in sorted(rates or {})
                if (entry := book.entry_at(s, at)) is not None
            ],
        }
    sys.stdout.write(dumps(doc, compact=False) + "\n")
    return 0


def iter_events(path: str) -> Iterator[EnforcementInput]:
    """The events of a JSON-lines file (``-``: standard input), validated one line at a time."""
    name = _name(path)
    with open_input(path) as f:
        for n, line in untrusted.iter_lines(f):
            try:
                raw = untrusted.load_object(line, untrusted.MAX_RECORD_BYTES)
                yield parse_enforcement_input(raw)
            except untrusted.Rejected as e:
                raise InputError(f"{name}:{n}: {e.reason}") from e
            except ValidationError as e:
                raise InputError(f"{name}:{n}: {describe_error(e)}") from e


def _cmd_replay(args: argparse.Namespace) -> int:
    """Stream the events through `apply_event`, one account state each in memory.

    The decisions wait in a temporary file (in memory up to a megabyte, then on disk) until the
    last line has been validated: a bad line anywhere still means no output at all, and memory
    stays bounded by the number of accounts, not by the size of the input.
    """
    from margin_risk.enforcement import AccountState, Outcome, apply_event

    policy = load_settings().policy.to_params()
    states: dict[str, AccountState] = {}
    counts = dict.fromkeys(Outcome, 0)
    with tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+", encoding="utf-8") as spool:
        for ev in iter_events(args.events):
            st = states.get(ev.account_id) or AccountState.new(ev.account_id)
            t = apply_event(st, ev, policy)
            counts[t.outcome] += 1
            states[ev.account_id] = t.state
            for d in t.decisions:
                spool.write(d.to_json() + "\n")
        spool.seek(0)
        shutil.copyfileobj(spool, sys.stdout)
    total = sum(counts.values())
    print(
        f"replay: {total} events, {counts[Outcome.APPLIED]} applied,"
        f" {counts[Outcome.STALE]} stale, {counts[Outcome.DUPLICATE]} duplicate"
        " (stale and duplicate events change nothing)",
        file=sys.stderr,
    )
    return 0


def read_trail(source: str) -> list[AuditEvent]:
    """The audit events of a local directory, an ``s3://bucket/prefix`` or ``-`` (stdin)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from margin_risk.audit import BadAuditTrail, read_audit_dir, read_audit_stream

    try:
        if source == STDIN:
            events = read_audit_stream(sys.stdin.buffer, "<stdin>")
            if not events:
                raise InputError("<stdin>: no audit events")
            return events
        if source.startswith("s3://"):
            from margin_risk.adapters.audit_reader import read_audit_s3

            return read_audit_s3(source)
        root = Path(source)
        if not root.is_dir():
            raise InputError(
                f"{source}: not a directory (give a local audit dir, s3://bucket/prefix or -)"
            )
        return read_audit_dir(root)
    except BadAuditTrail as e:
        raise InputError(str(e)) from e
    except ValueError as e:  # not an s3://bucket/prefix URI
        raise InputError(str(e)) from e
    except OSError as e:
        raise InputError(f"{e.filename or source}: cannot read: {e.strerror or e}") from e
    except (BotoCoreError, ClientError) as e:
        raise InputError(f"{source}: cannot read: {e}") from e


def _cmd_rebuild_state(args: argparse.Namespace) -> int:
    from margin_risk.audit import dumps_views, rebuild_state

    sys.stdout.write(dumps_views(rebuild_state(read_trail(args.source))) + "\n")
    return 0


def load_policy(path: str) -> PolicyParams:
    """A policy file: a JSON object of ``MR_POLICY__*`` settings (``warning_cushion`` or
    ``MR_POLICY__WARNING_CUSHION``); a setting it leaves out keeps the house's current value."""
    raw = read_document(path)
    current = load_settings().policy.model_dump()
    given: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.lower().removeprefix("mr_policy__")
        if name not in current:
            known = ", ".join(sorted(current))
            raise InputError(f"{_name(path)}: {key} is not a policy setting (one of: {known})")
        given[name] = value
    try:
        return PolicySettings.model_validate({**current, **given}).to_params()
    except ValidationError as e:
        raise InputError(f"{_name(path)}: {describe_error(e)}") from e


def _cmd_backtest(args: argparse.Namespace) -> int:
    """Replay the archive with ``--policy`` and diff against ``--audit`` (see tools.backtest).

    Output, one JSON object per line: every decision the policy would take (as ``replay``), then
    one line per account whose decisions differ from the trail's, then the totals. Written only
    once the whole archive has been read (a bad row means no output), spooled to disk beyond a
    megabyte, so memory stays bounded by the number of accounts.
    """
    from botocore.exceptions import BotoCoreError, ClientError
    from pydantic import ValidationError as Invalid

    from margin_risk.tools.backtest import Backtest, in_period
    from margin_risk.tools.history import BadHistory, iter_history, open_history

    policy = load_policy(args.policy) if args.policy else load_settings().policy.to_params()
    start = parse_at(args.start, "--from") if args.start else None
    end = parse_at(args.end, "--to") if args.end else None
    try:
        source = open_history(args.history)
        hours = source.hours()
    except BadHistory as e:
        raise InputError(str(e)) from e
    except (BotoCoreError, ClientError) as e:
        raise InputError(f"{args.history}: cannot read: {e}") from e
    if not hours:
        raise InputError(f"{args.history}: no history partitions (<kind>/event_date=/hour=)")
    period_start = max(hours[0].start, start) if start else hours[0].start
    period_end = min(hours[-1].end, end) if end else hours[-1].end
    trail = in_period(read_trail(args.audit), period_start, period_end) if args.audit else []
    bt = Backtest(policy, trail)
    with tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+", encoding="utf-8") as spool:
        try:
            for d in bt.run(iter_history(source, start, end)):
                spool.write(d.to_json() + "\n")
        except (BadHistory, Invalid) as e:
            why = describe_error(e) if isinstance(e, Invalid) else str(e)
            raise InputError(f"{args.history}: bad archived result: {why}") from e
        except (BotoCoreError, ClientError) as e:
            raise InputError(f"{args.history}: cannot read: {e}") from e
        report = bt.report
        if args.audit:
            for account in sorted(report.diffs):
                spool.write(dumps(report.diffs[account].to_dict(account)) + "\n")
        spool.write(dumps(report.summary(policy)) + "\n")
        spool.seek(0)
        shutil.copyfileobj(spool, sys.stdout)
    return 0


def _cmd_desk(args: argparse.Namespace) -> int:
    """Publish an EXTEND_CALL or WAIVE_CALL signed by the caller's AWS identity."""
    from botocore.exceptions import BotoCoreError, ClientError

    from margin_risk.tools import desk
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
    kind: Literal["EXTEND_CALL", "WAIVE_CALL"] = (
        "EXTEND_CALL" if args.desk_action == "extend" else "WAIVE_CALL"
    )
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
    from margin_risk.tools.local.demo import run_demo

    return int(run_demo(args))


def _cmd_health(args: argparse.Namespace) -> int:
    from margin_risk.tools.health import run_health

    return run_health(args.metrics_dir, aws=args.aws, as_json=args.json)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboards.html_render import run_dashboard

    return run_dashboard(args.out, args.metrics_dir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m margin_risk", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("what-if", help="margin and stress table of one account snapshot")
    w.add_argument("snapshot", help="a snapshot JSON file, or - for standard input")
    w.add_argument("--scenarios", help="comma-separated SPY moves, e.g. -0.05,-0.10")
    w.add_argument("--house", help="house requirements per symbol: a JSON list (spec section 7)")
    w.add_argument(
        "--at",
        help="the calculation's time, ISO-8601 with a zone (default: now): the house entry in"
        " force for a symbol is the latest whose as_of is not after it",
    )
    w.set_defaults(func=_cmd_what_if)

    r = sub.add_parser("replay", help="enforcement decisions for a JSONL file of results")
    r.add_argument("events", help="a JSON-lines file, or - for standard input")
    r.set_defaults(func=_cmd_replay)

    b = sub.add_parser("rebuild-state", help="rebuild enforcement state from the audit trail")
    b.add_argument(
        "source", help="a local directory, s3://bucket/prefix, or - (audit JSON lines on stdin)"
    )
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

    t = sub.add_parser("backtest", help="the archived results through another policy")
    t.add_argument("history", help="the margin history: a local directory or s3://bucket/prefix")
    t.add_argument("--policy", help="a JSON object of MR_POLICY__* settings (default: current)")
    t.add_argument("--audit", help="the audit trail to diff against (dir, s3://bucket/prefix, -)")
    t.add_argument("--from", dest="start", help="first event time, ISO-8601 (default: all)")
    t.add_argument("--to", dest="end", help="end of the period, exclusive, ISO-8601")
    t.set_defaults(func=_cmd_backtest)

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
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except ValidationError as e:
        print(f"error: invalid settings: {describe_error(e)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still the promised one line, with a status of its own
        print(f"error: internal error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return EXIT_INTERNAL


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:500]


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
