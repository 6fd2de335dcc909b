"""The `switchdesk` command: init, account create, apikey, user (recovery), leads, report, serve.

gevent's monkey-patching happens here, once, before anything else is
imported, and only for `serve` (the other commands are plain scripts).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys

DEFAULT_LISTEN = "127.0.0.1:8080"


def _db_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=os.environ.get("SWITCHDESK_DB", "sqlite:///switchdesk.db"),
        help="database URL: sqlite:///FILE or postgresql://... (env SWITCHDESK_DB)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchdesk", description="Call-center control plane for FreeSWITCH")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create or upgrade the schema; on the first run create account 1 and its admin")
    _db_arg(p)
    p.add_argument("--domain", default=None, help="FreeSWITCH domain of account 1 (default: this host's name)")

    p = sub.add_parser("account", help="manage accounts")
    acc = p.add_subparsers(dest="account_command", required=True)
    pc = acc.add_parser("create", help="a further account with its own admin; prints that admin's API key")
    _db_arg(pc)
    pc.add_argument("name")
    pc.add_argument("--domain", required=True)
    pc.add_argument("--admin-username", required=True)

    p = sub.add_parser("apikey", help="issue a new API key for a user; prints the key")
    _db_arg(p)
    p.add_argument("username")

    p = sub.add_parser("user", help="recover a user on the box: new password, admin rights, end its credentials")
    usr = p.add_subparsers(dest="user_command", required=True)
    for name, text in (
        ("set-password", "set a new password, read from stdin or a prompt (never the command line); "
                         "ends the user's sessions and lifts a login lock-out"),
        ("make-admin", "make the user an active admin of its account"),
        ("revoke", "end every session of the user and delete all its API keys"),
    ):
        pu = usr.add_parser(name, help=text, description=text)
        _db_arg(pu)
        pu.add_argument("--account-domain", required=True, help="the FreeSWITCH domain of the user's account")
        pu.add_argument("username")

    p = sub.add_parser("leads", help="import or export the leads of a phone list as CSV")
    leads = p.add_subparsers(dest="leads_command", required=True)
    pi = leads.add_parser("import", help="add or update leads from a CSV file with a header row")
    _db_arg(pi)
    pi.add_argument("list_id", type=int)
    pi.add_argument("file", help="CSV file ('-' for stdin)")
    pe = leads.add_parser("export", help="write the list's leads as CSV to stdout")
    _db_arg(pe)
    pe.add_argument("list_id", type=int)

    from engine.stats import cli as stats_cli

    stats_cli.add_parser(sub, _db_arg)

    p = sub.add_parser("serve", help="serve the API and run the FreeSWITCH engine and the webhook sender")
    _db_arg(p)
    p.add_argument("--listen", default=os.environ.get("SWITCHDESK_LISTEN", DEFAULT_LISTEN),
                   help="HOST:PORT for the API (env SWITCHDESK_LISTEN; default 127.0.0.1:8080)")
    p.add_argument("--max-body", type=int, default=None, help="largest request body in bytes")
    p.add_argument("--hostname", default=os.environ.get("SWITCHDESK_HOSTNAME"),
                   help="this box's name in the box registry and on the recordings and media it holds "
                        "(env SWITCHDESK_HOSTNAME; default: the machine's host name); keep it stable")
    p.add_argument("--advertise-url", default=os.environ.get("SWITCHDESK_ADVERTISE_URL"),
                   help="the URL other boxes of the database reach this box's API at, to fetch the files it holds "
                        "(env SWITCHDESK_ADVERTISE_URL; default: http://<--listen> unless that is loopback, "
                        "else none)")
    p.add_argument("--esl", default=os.environ.get("SWITCHDESK_ESL", "127.0.0.1:8021"),
                   help="FreeSWITCH event socket HOST:PORT (env SWITCHDESK_ESL; default 127.0.0.1:8021)")
    p.add_argument("--esl-password", default=os.environ.get("SWITCHDESK_ESL_PASSWORD", "ClueCon"),
                   help="event socket password (env SWITCHDESK_ESL_PASSWORD)")
    p.add_argument("--no-esl", action="store_true", help="serve the API only, without the FreeSWITCH engine")
    p.add_argument("--outbound-listen", default=os.environ.get("SWITCHDESK_OUTBOUND_LISTEN", "127.0.0.1:8040"),
                   help="HOST:PORT where the engine takes FreeSWITCH's outbound-socket calls for check-in codes "
                        "(env SWITCHDESK_OUTBOUND_LISTEN; default 127.0.0.1:8040)")
    p.add_argument("--xml-curl-password", default=os.environ.get("SWITCHDESK_XMLCURL_PASSWORD"),
                   help="password FreeSWITCH's mod_xml_curl uses (user 'freeswitch'; env SWITCHDESK_XMLCURL_PASSWORD)")
    p.add_argument("--webhook-allow-private", action="store_true",
                   help="allow Event Push URLs on loopback, link-local and private addresses")
    p.add_argument("--webhook-concurrency", type=_positive_int,
                   default=os.environ.get("SWITCHDESK_WEBHOOK_CONCURRENCY", "8"),
                   help="webhook requests in flight per account; each call's and agent's events still go in order "
                        "(env SWITCHDESK_WEBHOOK_CONCURRENCY; default 8)")
    p.add_argument("--workers", type=_worker_count, default=os.environ.get("SWITCHDESK_WORKERS", "0"),
                   help="serve the API and FreeSWITCH's xml_curl lookups from this many worker processes, the "
                        "engine and webhooks staying in this one (env SWITCHDESK_WORKERS; default 0: all in one)")
    p.add_argument("--realtime", action="store_true",
                   help="run the event loops at the lowest real-time CPU priority (SCHED_RR 1), as FreeSWITCH "
                        "runs its threads: on a busy box FreeSWITCH's xml_curl lookups and the API no longer wait "
                        "for a CPU behind the switch's own threads; needs CAP_SYS_NICE or RLIMIT_RTPRIO >= 1 "
                        "(env SWITCHDESK_REALTIME=1)")
    p.add_argument("--domains", default=os.environ.get("SWITCHDESK_DOMAINS"), type=_domain_list,
                   help="comma-separated account domains whose agents, queues and webhooks this box drives "
                        "(env SWITCHDESK_DOMAINS; default: all accounts)")
    p.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("SWITCHDESK_LOG_FORMAT", "text"),
                   help="one line per event as text or as a JSON object (env SWITCHDESK_LOG_FORMAT)")
    p.add_argument("--log-level", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   default=os.environ.get("SWITCHDESK_LOG_LEVEL", "INFO").upper(),
                   help="DEBUG, INFO (default), WARNING or ERROR (env SWITCHDESK_LOG_LEVEL)")
    p.add_argument("--metrics-public", action="store_true",
                   help="serve GET /metrics to every client, not only to loopback ones")
    p.add_argument("--media-dir", default=os.environ.get("SWITCHDESK_MEDIA_DIR"),
                   help="folder for uploaded media (hold music, announcements), readable by FreeSWITCH "
                        "(env SWITCHDESK_MEDIA_DIR; default: 'media' beside a SQLite database, else "
                        "/var/lib/switchdesk/media)")
    p.add_argument("--media-max-bytes", type=_positive_int,
                   default=os.environ.get("SWITCHDESK_MEDIA_MAX_BYTES", str(20 * 1024 * 1024)),
                   help="largest media upload in bytes (env SWITCHDESK_MEDIA_MAX_BYTES; default 20 MiB)")
    p.add_argument("--media-max-seconds", type=_positive_int,
                   default=os.environ.get("SWITCHDESK_MEDIA_MAX_SECONDS", "1200"),
                   help="longest media upload in seconds of audio (env SWITCHDESK_MEDIA_MAX_SECONDS; default 1200)")
    p.add_argument("--recordings-dir", default=os.environ.get("SWITCHDESK_RECORDINGS_DIR"),
                   help="folder FreeSWITCH records calls into and switchdesk serves them from (FreeSWITCH must be "
                        "able to write it; default: `recordings` beside a SQLite database, else ./recordings)")
    p.add_argument("--recordings-min-free-mb", type=int,
                   default=os.environ.get("SWITCHDESK_RECORDINGS_MIN_FREE_MB", "500"),
                   help="refuse new recordings while the recordings' file system has less free space (MiB)")
    p.add_argument("--recording-days", type=_positive_int, default=os.environ.get("SWITCHDESK_RECORDING_DAYS", "90"),
                   help="days recordings are kept unless the account says otherwise")
    p.add_argument("--cdr-days", type=_positive_int, default=os.environ.get("SWITCHDESK_CDR_DAYS", "90"),
                   help="days call records are kept unless the account says otherwise")
    return parser


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError("from 0 (everything in one process) to 64")
    return value


def _env_flag(name: str) -> bool:
    """A yes/no setting from the environment: 1/true/yes/on or 0/false/no/off (unset: no)."""
    text = os.environ.get(name, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), not {text!r}")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {number}")
    return number


def _domain_list(value: str | None) -> list[str] | None:
    domains = [d.strip().lower() for d in (value or "").split(",") if d.strip()]
    return domains or None


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"switchdesk: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _fail(msg: str) -> int:
    print(f"switchdesk: {msg}", file=sys.stderr)
    return 2


def _ensure_secret_key(db_url: str) -> None:
    """The key that encrypts webhook secrets: created once, readable by the service's user alone."""
    from engine.directory import security

    if os.environ.get(security.SECRET_KEY_ENV):
        return
    path = security.default_key_file(db_url)
    if path is None:
        print(f"no {security.SECRET_KEY_ENV} or {security.SECRET_KEY_FILE_ENV}: webhook secrets cannot be "
              "stored until one is set", file=sys.stderr)
    elif security.create_key_file(path):
        print(f"created {path} (the key that encrypts webhook secrets; keep it with the database)", file=sys.stderr)


def cmd_init(args: argparse.Namespace) -> int:
    from engine.directory import accounts
    from engine.errors import ServiceError
    from engine.store import db, schema
    from engine.store.models import Account

    database = db.bind(args.db, command_line=True)
    _ensure_secret_key(args.db)
    with database.connection_context():
        fresh = schema.init_schema(database)
        if Account.select().exists():
            print("schema is up to date" if not fresh else "schema created", file=sys.stderr)
            return 0
        domain = (args.domain or socket.getfqdn() or "localhost").lower()
        try:
            new = accounts.create_account("Default", domain, "admin")
        except ServiceError as exc:
            return _fail(exc.msg)
    print(f"Created account 1 (domain {new.account.domain}) and its admin user.")
    print("These credentials are shown once; store them now:")
    print("  username: admin")
    print(f"  password: {new.password}")
    print(f"  api key:  {new.api_key}")
    return 0


def cmd_account_create(args: argparse.Namespace) -> int:
    from engine.directory import accounts
    from engine.errors import ServiceError
    from engine.store import db, schema

    database = db.bind(args.db, command_line=True)
    with database.connection_context():
        schema.init_schema(database)
        try:
            new = accounts.create_account(args.name, args.domain, args.admin_username)
        except ServiceError as exc:
            return _fail(exc.msg)
    print(f"account {new.account.id} created; admin {args.admin_username} password: {new.password}", file=sys.stderr)
    print(new.api_key)
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    from engine.directory import accounts
    from engine.errors import ServiceError
    from engine.store import db

    database = db.bind(args.db, command_line=True)
    with database.connection_context():
        try:
            key = accounts.issue_api_key_for(args.username)
        except ServiceError as exc:
            return _fail(exc.msg)
    print(key)
    return 0


def _read_password() -> str:
    """The new password from a prompt on a terminal (asked twice), else the first line of stdin."""
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_user(args: argparse.Namespace) -> int:
    from engine.directory import users
    from engine.errors import ServiceError
    from engine.store import db

    password = None
    if args.user_command == "set-password":
        try:
            password = _read_password()
        except (ValueError, EOFError, KeyboardInterrupt) as exc:
            return _fail(str(exc) or "no password given")
        if not password:
            return _fail("no password given (write it to stdin or type it at the prompt)")
    database = db.bind(args.db, command_line=True)
    with database.connection_context():
        try:
            user = users.find_in_account(args.account_domain, args.username)
            if args.user_command == "set-password":
                users.set_password(user, password)
                done = "password changed; its sessions are ended (its API keys stay: use `user revoke`)"
            elif args.user_command == "make-admin":
                users.make_admin(user)
                done = "is now an active admin"
            else:
                revoked = users.revoke_credentials(user.account_id, user.id, users.SYSTEM)
                done = f"{revoked['sessions']} session(s) ended, {revoked['api_keys']} API key(s) deleted"
        except ServiceError as exc:
            return _fail(exc.msg)
    print(f"user {user.username} (id {user.id}): {done}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.server import serve

    try:
        realtime = args.realtime or _env_flag("SWITCHDESK_REALTIME")
    except ValueError as exc:
        print(f"switchdesk: {exc}", file=sys.stderr)
        return 2
    host, port = split_hostport(args.listen)
    esl = None if args.no_esl else split_hostport(args.esl)
    outbound = None if args.no_esl else split_hostport(args.outbound_listen)
    return serve(args.db, host, port, max_body=args.max_body, webhook_allow_private=args.webhook_allow_private,
                 webhook_concurrency=args.webhook_concurrency,
                 esl=esl, esl_password=args.esl_password, xmlcurl_password=args.xml_curl_password,
                 domains=args.domains, log_format=args.log_format, log_level=args.log_level,
                 metrics_public=args.metrics_public, outbound=outbound, media_dir=args.media_dir,
                 media_max_bytes=args.media_max_bytes, media_max_seconds=args.media_max_seconds,
                 recordings=(args.recordings_dir, args.recordings_min_free_mb, args.recording_days, args.cdr_days),
                 box_name=args.hostname, advertise_url=args.advertise_url, workers=args.workers,
                 realtime=realtime)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        from gevent import monkey

        monkey.patch_all()
    args = build_parser().parse_args(argv)
    if args.command == "init":
        return cmd_init(args)
    if args.command == "account":
        return cmd_account_create(args)
    if args.command == "apikey":
        return cmd_apikey(args)
    if args.command == "user":
        return cmd_user(args)
    if args.command == "leads":
        from engine.leads import cli as leads_cli

        return leads_cli.run(args)
    if args.command == "report":
        from engine.stats import cli as stats_cli

        return stats_cli.run(args)
    return cmd_serve(args)


if __name__ == "__main__":
    sys.exit(main())
