"""Browse the artifact store from a shell: `python -m jobs.artifacts ls|get|url|cat` (no MinIO console needed).

    python -m jobs.artifacts --store s3://scenebench/nightly ls runs/
    python -m jobs.artifacts ls -l results/
    python -m jobs.artifacts get runs/RUN/mobilenet_v2/int8/model.tflite ./model.tflite
    python -m jobs.artifacts get runs/RUN/ ./RUN            # a whole prefix
    python -m jobs.artifacts url runs/RUN/report.html --expires 3600
    python -m jobs.artifacts cat results/latest.json

The store comes from --store or SCENEBENCH_STORE (default file://./artifacts); S3 endpoint and
credentials from SCENEBENCH_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (see
common.store_s3). Every download is checked against the object's recorded sha256.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from common.errors import ConfigError, NotFoundError, ScenebenchError
from common.logging import configure, get_logger
from common.store import ArtifactStore, open_store

DEFAULT_STORE = "file://./artifacts"


def build_parser() -> argparse.ArgumentParser:
    # --store is accepted before or after the command; SUPPRESS keeps the sub-parser's
    # absent flag from overwriting one given before the command.
    store_flag = argparse.ArgumentParser(add_help=False)
    store_flag.add_argument("--store", default=argparse.SUPPRESS, metavar="URI",
                            help="file://PATH or s3://bucket/prefix. Env: SCENEBENCH_STORE. "
                                 f"Default: {DEFAULT_STORE}.")
    parser = argparse.ArgumentParser(
        prog="python -m jobs.artifacts", parents=[store_flag],
        description="List, download, print or share artifacts of scenebench runs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("ls", parents=[store_flag], help="list keys under a prefix (recursive)")
    ls.add_argument("prefix", nargs="?", default="", help="e.g. runs/ or runs/RUN-ID/")
    ls.add_argument("-l", "--long", action="store_true", help="also show size and sha256")

    get = sub.add_parser("get", parents=[store_flag],
                         help="download a key (or, ending in '/', a prefix), verifying sha256")
    get.add_argument("key")
    get.add_argument("dest", nargs="?", default=None,
                     help="file or folder; default: the key's last part in the current folder")

    url = sub.add_parser("url", parents=[store_flag],
                         help="a URL that fetches the key without credentials (presigned on S3)")
    url.add_argument("key")
    url.add_argument("--expires", type=int, default=24 * 3600, metavar="SECONDS",
                     help="lifetime of a presigned URL, 1..604800. Default: 86400.")

    cat = sub.add_parser("cat", parents=[store_flag], help="write an object's bytes to stdout")
    cat.add_argument("key")
    return parser


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def cmd_ls(store: ArtifactStore, args: argparse.Namespace, out) -> int:
    keys = store.list(args.prefix)
    for key in keys:
        if args.long:
            info = store.stat(key)
            size = _human(info.size) if info else "?"
            digest = (info.sha256 if info and info.sha256 else "-")
            out.write(f"{size:>10}  {digest:<64}  {key}\n")
        else:
            out.write(key + "\n")
    if not keys:
        # An empty answer to stdout looks like success; say on stderr where we looked.
        get_logger().warning("artifacts_no_keys", under=store.describe(args.prefix))
    return 0


def cmd_get(store: ArtifactStore, args: argparse.Namespace, out) -> int:
    key = args.key
    if key.endswith("/"):
        dest = Path(args.dest or Path(key.rstrip("/")).name or ".")
        paths = store.get_prefix(key, dest)
        if not paths:
            raise NotFoundError(f"nothing under {store.describe(key)}")
        for p in paths:
            out.write(f"{p}\n")
        return 0
    dest = Path(args.dest) if args.dest else Path(Path(key).name)
    if dest.is_dir():
        dest = dest / Path(key).name
    path = store.get_file(key, dest)
    out.write(f"{path}\n")
    return 0


def cmd_url(store: ArtifactStore, args: argparse.Namespace, out) -> int:
    if not store.exists(args.key):
        raise NotFoundError(f"{store.describe(args.key)} does not exist")
    out.write(store.url(args.key, expires_s=args.expires) + "\n")
    return 0


def cmd_cat(store: ArtifactStore, args: argparse.Namespace, out) -> int:
    data = store.get_bytes(args.key)
    out.flush()
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:
        out.write(data.decode("utf-8", errors="replace"))
    return 0


COMMANDS = {"ls": cmd_ls, "get": cmd_get, "url": cmd_url, "cat": cmd_cat}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    # stdout carries what people asked for (keys, paths, bytes); logs must not mix into it,
    # even in JSON mode where the other jobs log to stdout.
    configure(stdout_is_data=True)
    log = get_logger(command=args.command)
    uri = getattr(args, "store", None) or os.environ.get("SCENEBENCH_STORE") or DEFAULT_STORE
    try:
        store = open_store(uri)
        return COMMANDS[args.command](store, args, sys.stdout)
    except ConfigError as exc:
        log.error("artifacts_bad_config", store=uri, error=str(exc))
        return 2
    except ScenebenchError as exc:
        log.error("artifacts_failed", store=uri, error=str(exc))
        return 1
    except BrokenPipeError:  # `... | head` closed the pipe: not an error
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
