"""Stream a file over HTTP(S) into a partial file that survives interruptions and resumes with a Range request.

The partial file is only ever appended to with bytes the server sent for exactly that offset, so whatever it
holds after a cut connection, Ctrl-C or a full disk is a correct prefix of the file.
"""

from __future__ import annotations

import errno
import re
import time
from pathlib import Path

import requests
from tqdm import tqdm

from .errors import HubError, hub_error_from

CHUNK_BYTES = 1 << 16  # a cut connection loses the chunk being read, so keep it small
MAX_ATTEMPTS = 5  # per download; each attempt resumes where the previous one stopped
RETRY_DELAY_S = 1.0  # doubled after each failed attempt
TIMEOUT_S = (15, 60)  # connect, read (between bytes)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class _Retry(Exception):
    """A failure worth another attempt (cut connection, server error); the partial file is kept."""


def _status_error(url: str, response: requests.Response) -> None:
    code = response.status_code
    if code >= 500 or code == 429:
        raise _Retry(f"HTTP {code} from {url}")
    raise HubError(f"HTTP {code} {response.reason or ''} from {url}".replace("  ", " ").strip())


def _resume_offset(response: requests.Response, have: int) -> tuple[int, int | None]:
    """(offset the body starts at, total size or None) for a 200 or 206 response to a request from `have`."""
    if response.status_code == 206:
        found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if found and int(found.group(1)) == have:
            total = found.group(3)
            return have, (int(total) if total != "*" else None)
        return -1, None  # a range we did not ask for: start over
    length = response.headers.get("Content-Length")
    return 0, (int(length) if length and length.isdigit() else None)


def _write_body(
    response: requests.Response, part: Path, offset: int, total: int | None, label: str, progress: bool | None
) -> int:
    """Append the body to `part` (truncated to `offset` first); the bytes now in `part`."""
    with (
        open(part, "r+b" if part.exists() else "wb") as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            disable=None if progress is None else not progress,
            leave=False,
        ) as bar,
    ):
        out.truncate(offset)
        out.seek(offset)
        for chunk in response.iter_content(CHUNK_BYTES):
            out.write(chunk)
            bar.update(len(chunk))
        return out.tell()


def _attempt(
    session: requests.Session, url: str, part: Path, expected_size: int | None, label: str, progress: bool | None
) -> int:
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()  # longer than the file can be: not a prefix of it
        have = 0
    if have and have == expected_size:
        return have  # finished earlier (e.g. the conversion after it failed)
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with session.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as response:
            if response.status_code == 416 and have:
                if response.headers.get("Content-Range", "").strip() == f"bytes */{have}":
                    return have  # we already hold the whole file
                part.unlink()  # the server holds less than we have: start over
                raise _Retry(f"the server refused to resume at byte {have}; restarting")
            if response.status_code not in (200, 206):
                _status_error(url, response)
            offset, total = _resume_offset(response, have)
            if offset < 0:
                part.unlink()
                raise _Retry("the server answered another byte range than asked for; restarting")
            if expected_size is not None and total is not None and total != expected_size:
                raise HubError(
                    f"{url} is {total} bytes; the released file is {expected_size}: not the right file "
                    f"(check {label}'s mirror)"
                )
            size = _write_body(response, part, offset, total, label, progress)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise _Retry(f"connection to {url} failed: {type(exc).__name__}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise HubError(
                f"no space left on the device while writing {part} ({part.stat().st_size} bytes so "
                f"far); free some space and run again to resume"
            ) from None
        raise hub_error_from(exc, part) from None
    if total is not None and size != total:
        raise _Retry(f"the connection closed after {size} of {total} bytes")
    return size


def download(
    url: str,
    part: Path,
    *,
    expected_size: int | None = None,
    label: str = "",
    progress: bool | None = None,
    session: requests.Session | None = None,
) -> int:
    """Complete `part` from `url`, resuming what it already holds; the file's size in bytes.

    Retries cut connections and server errors (MAX_ATTEMPTS, growing delays); other HTTP errors, a wrong size
    and local write errors raise HubError at once. `progress` None shows a bar only on a terminal.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    if session is None:
        with requests.Session() as own:
            return download(url, part, expected_size=expected_size, label=label, progress=progress, session=own)
    delay = RETRY_DELAY_S
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            size = _attempt(session, url, part, expected_size, label or url, progress)
        except _Retry as exc:
            if attempt == MAX_ATTEMPTS:
                raise HubError(f"download of {url} failed after {MAX_ATTEMPTS} attempts: {exc}") from None
            time.sleep(delay)
            delay *= 2
            continue
        if expected_size is not None and size != expected_size:
            part.unlink()
            raise HubError(f"{url} gave {size} bytes; the released file is {expected_size}")
        return size
    raise AssertionError("unreachable")
