"""Who may use the studio and which of its files the web server may hand out.

Credentials come from the environment (``AUTOCOMICS_STUDIO_AUTH=user:password``) or a file of
``user:password`` lines, never from a command-line flag (flags show up in ``ps`` and shell history).
A studio reachable from other machines refuses to start without them.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from data_pipeline.errors import UserError

if TYPE_CHECKING:
    from .service import StudioConfig

log = logging.getLogger(__name__)

AUTH_ENV = "AUTOCOMICS_STUDIO_AUTH"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # the studio takes no uploads today; the cap bounds Gradio's upload route
LOOPBACK_NAMES = ("localhost",)
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


class AccessError(UserError, ValueError):
    """Credentials missing or malformed; the message says what to do (and never echoes a password)."""


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    name = str(host).strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # any other host name may resolve to a public address
        return False


def parse_credential(line: str, where: str) -> tuple[str, str]:
    """``user:password`` (the password may contain colons) -> (user, password)."""
    user, colon, password = line.partition(":")
    if not colon or not user.strip() or not password:
        raise AccessError(f"{where}: expected user:password with a non-empty user and password")
    return user.strip(), password


def read_auth_file(path: Path) -> list[tuple[str, str]]:
    """The ``user:password`` lines of ``path`` (blank lines and ``#`` comments skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessError(
            f"cannot read the auth file {path}: {exc.strerror if isinstance(exc, OSError) else exc}"
        ) from None
    credentials = [
        parse_credential(line.rstrip("\r"), f"auth file {path}, line {number}")
        for number, line in enumerate(text.split("\n"), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not credentials:
        raise AccessError(f"the auth file {path} holds no user:password line")
    if Path(path).stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("the auth file %s is readable by other users; chmod 600 it", path)
    return credentials


def load_credentials(auth_file: Path | None, environ: Mapping[str, str] = os.environ) -> list[tuple[str, str]]:
    """Credentials from ``auth_file`` if given, else from ``$AUTOCOMICS_STUDIO_AUTH``; [] when neither is set."""
    if auth_file is not None:
        return read_auth_file(auth_file)
    value = environ.get(AUTH_ENV, "")
    return [parse_credential(value, f"${AUTH_ENV}")] if value else []


def require_credentials(host: str, credentials: list[tuple[str, str]]) -> None:
    """Refuse to serve other machines without a login."""
    if credentials or is_loopback(host):
        return
    raise AccessError(
        f"refusing to listen on {host} (reachable from other machines) without a login: set "
        f"{AUTH_ENV}=user:password or pass --auth-file FILE (lines user:password)"
    )


def password_checker(credentials: list[tuple[str, str]]) -> Callable[[str, str], bool]:
    """Gradio's ``auth`` callable: compares in constant time, so timing reveals no password."""
    table = {user: password.encode() for user, password in credentials}

    def check(user: str, password: str) -> bool:
        expected = table.get(user)
        given = str(password).encode()
        if expected is None:
            hmac.compare_digest(given, given)  # same work for unknown users
            return False
        return hmac.compare_digest(given, expected)

    return check


def served_paths(config: StudioConfig) -> list[str]:
    """The only workdir files the web server may hand out: what the pages show and offer for download."""
    return [str(path) for path in (config.outputs_dir, config.downloads_dir, config.images_dir, config.missing_image)]


def private_paths(config: StudioConfig) -> list[str]:
    """Never served, whatever else allows it: the catalogue database, the fine-tune runs and the adapters."""
    paths = [config.runs_dir, config.adapters_root]
    if config.database_file is not None:
        paths += [config.database_file] + [
            config.database_file.with_name(config.database_file.name + suffix) for suffix in SQLITE_SIDE_FILES
        ]
    return [str(path) for path in paths]
