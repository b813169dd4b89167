"""How cluster commands reach the agents: timeout, TLS trust and basic-auth credentials from the flags."""

from __future__ import annotations

import argparse
import os

from hypermesh.errors import InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["make_client"]


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file is not None:
        from hypermesh._files import read_regular_file

        try:
            data = read_regular_file(args.password_file, 4096).data
        except Exception as exc:  # every way a file cannot be read: one line, the file named, never its content
            raise InvalidInput(f"--password-file: cannot read {args.password_file}: {exc}") from None
        return data.decode("utf-8", errors="replace").splitlines()[0] if data.strip() else ""
    return os.environ.get("HYPERMESH_PASSWORD")


def make_client(args: argparse.Namespace) -> Any:
    from hypermesh.cluster.fanout import Client

    auth = None
    if args.user is not None:
        password = _password(args)
        if password is None:
            raise InvalidInput("--user needs a password: --password-file FILE or HYPERMESH_PASSWORD")
        auth = (args.user, password)
    elif args.password_file is not None:
        raise InvalidInput("--password-file needs --user NAME")
    if args.cacert is not None and not os.path.isfile(args.cacert):
        raise InvalidInput(f"--cacert: {args.cacert} is not a file; give the CA certificate (PEM) of the agents")
    return Client(args.timeout, cafile=args.cacert, auth=auth)
