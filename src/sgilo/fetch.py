"""Robust HTTP(S) download of one file.

`download_file` can be called again after a kill, a dropped connection or a bad transfer, and does the least work
needed to end with a verified file:

* a destination that already has the expected size and hashes is returned without any request;
* bytes go to `<dest>.part` and only reach `dest` through `os.replace` once size and hashes check out, so a file
  at `dest` is always a verified one, whatever happens to the process;
* an existing `.part` file, or a body that breaks off mid-file, is continued with a `Range: bytes=N-` request; a
  server that ignores `Range` (answers 200) makes it start over from byte zero;
* refused connections and 429/5xx replies are retried with exponential back-off by urllib3's `Retry`, mounted on
  the session by `make_session` (urllib3 only retries up to the response headers, hence the resume loop here);
* Google Drive's "can't scan this file for viruses" page is followed to the file, and its quota page is reported
  as such instead of being saved as the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry

RETRY_STATUSES = (429, 500, 502, 503, 504)
_HTML_PEEK_BYTES = 1 << 18  # far more than any Drive interstitial; bounds memory if a huge page comes instead
_MAX_CONFIRM_HOPS = 3
# Raised while the body streams in: the bytes written so far are good, so the transfer can resume after them.
_MID_STREAM_ERRORS = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError, ProtocolError)
_QUOTA_RE = re.compile(r"quota (?:has been )?exceeded|too many users have viewed or downloaded", re.IGNORECASE)
_CONFIRM_TOKEN_RE = re.compile(r"confirm=([0-9A-Za-z_-]+)")


class DownloadError(RuntimeError):
    """A file that could not be fetched or verified; the message names URL, destination, expected/got and the fix."""


# ------------------------------------------------------------------------------------------------- public
def make_session(retries: int, backoff: float = 0.5, pool_size: int = 8) -> requests.Session:
    """A session that retries connection errors and 429/5xx replies with exponential back-off.

    `pool_size` should be at least the number of threads sharing the session, or connections get discarded.
    """
    retry = Retry(
        total=retries,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        # Hand back the last 5xx instead of raising RetryError, so the error message can name the status.
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def download_file(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    session: requests.Session | None = None,
    timeout: float = 60.0,
    max_resumes: int = 5,
    chunk_size: int = 1 << 17,
    progress: bool = False,
) -> Path:
    """Download `url` to `dest`, verified against whichever of `size`, `md5`, `sha256` are given; return `dest`.

    `timeout` applies to connecting and to each read, not to the whole transfer. Without `session` a private one
    with 3 retries is used. `progress` shows a byte-level tqdm bar on stderr.
    """
    dest = Path(dest)
    want = _Expected(size, {name: hexd.lower() for name, hexd in (("md5", md5), ("sha256", sha256)) if hexd})
    if dest.is_file() and not want.problems(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    own_session = session is None
    session = session or make_session(retries=3)
    part = dest.with_name(dest.name + ".part")
    try:
        return _download_verified(_Job(url, dest, part, want, session, timeout, max_resumes, chunk_size, progress))
    finally:
        if own_session:
            session.close()


# --------------------------------------------------------------------------------------------- internals
@dataclass(frozen=True)
class _Expected:
    size: int | None
    hashes: dict[str, str] = field(default_factory=dict)  # hashlib name -> lowercase hex digest

    def problems(self, path: Path) -> list[str]:
        """Human-readable mismatches of `path` against the expectations; empty when it checks out."""
        have = path.stat().st_size
        if self.size is not None and have != self.size:
            return [f"size: expected {self.size} bytes, got {have}"]  # no point hashing a file of the wrong size
        got = _digests(path, list(self.hashes))
        return [f"{name}: expected {hexd}, got {got[name]}" for name, hexd in self.hashes.items() if got[name] != hexd]


@dataclass(frozen=True)
class _Job:
    url: str
    dest: Path
    part: Path
    want: _Expected
    session: requests.Session
    timeout: float
    max_resumes: int
    chunk_size: int
    progress: bool

    def error(self, problem: str, fix: str) -> DownloadError:
        return DownloadError(f"download of {self.url} -> {self.dest} failed: {problem}. Fix: {fix}")


def _digests(path: Path, names: list[str]) -> dict[str, str]:
    hashers = {name: hashlib.new(name, usedforsecurity=False) for name in names}
    if hashers:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                for hasher in hashers.values():
                    hasher.update(block)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _download_verified(job: _Job) -> Path:
    # A mismatch may come from a stale .part of an older run or a one-off bad transfer: one fresh try is worth it.
    for _ in range(2):
        _fetch_part(job)
        problems = job.want.problems(job.part)
        if not problems:
            os.replace(job.part, job.dest)
            return job.dest
        job.part.unlink(missing_ok=True)
    raise job.error(
        f"the file still does not match after a fresh second download: {'; '.join(problems)}",
        "the server sends other content than expected; check the URL (or mirror) and the expected size/hash",
    )


def _fetch_part(job: _Job) -> None:
    """Bring `job.part` to the whole payload, resuming after each mid-stream drop."""
    drops: list[str] = []
    bar = tqdm(
        total=job.want.size,
        unit="B",
        unit_scale=True,
        desc=job.dest.name,
        file=sys.stderr,
        disable=not job.progress,
        leave=False,
    )
    with bar:
        while (offset := _usable_offset(job)) is not None:
            try:
                reason = _request_into_part(job, offset, bar)
            except _MID_STREAM_ERRORS as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if reason is None:
                return
            drops.append(reason)
            if len(drops) > job.max_resumes:
                raise _too_many_drops(job, drops)


def _too_many_drops(job: _Job, drops: list[str]) -> DownloadError:
    have = job.part.stat().st_size if job.part.exists() else 0
    return job.error(
        f"the transfer broke off {len(drops)} times (last: {drops[-1]}); expected {job.want.size or '?'} bytes, "
        f"got {have}, kept in {job.part}",
        "rerun to resume from the .part file, raise max_resumes, or use a steadier network or a mirror",
    )


def _usable_offset(job: _Job) -> int | None:
    """Where to resume `job.part`; None when it already holds `size` bytes and only needs verifying."""
    have = job.part.stat().st_size if job.part.exists() else 0
    if job.want.size is None or have < job.want.size:
        return have
    if have == job.want.size:
        return None
    job.part.unlink()  # longer than the file: not a prefix of it
    return 0


def _request_into_part(job: _Job, offset: int, bar: tqdm) -> str | None:
    """One request appending to `job.part` from `offset`; None when the part is complete, else why not."""
    # Offsets and sizes must count the file's bytes, not those of a gzip stream.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with _open(job, headers) as resp:
        if resp.status_code == 416:
            return None  # nothing after `offset`: the part already is the whole file; verification judges it
        return _write_body(job, resp, offset, bar)


def _write_body(job: _Job, resp: requests.Response, offset: int, bar: tqdm) -> str | None:
    if resp.status_code == 200:
        offset = 0  # the server ignored Range and sends the whole file: start over
    elif _range_start(resp) != offset:
        job.part.unlink(missing_ok=True)
        return f"server sent bytes from {_range_start(resp)} instead of {offset}; starting over"
    expected = _content_length(resp)
    bar.reset(total=job.want.size or (offset + expected if expected is not None else None))
    bar.update(offset)
    got = 0
    with open(job.part, "ab" if offset else "wb") as fh:
        for chunk in resp.iter_content(job.chunk_size):
            fh.write(chunk)
            got += len(chunk)
            bar.update(len(chunk))
    if expected is not None and got < expected:
        return f"body ended after {got} of {expected} bytes"
    return None


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def _range_start(resp: requests.Response) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------------------------ requests and Drive
def _open(job: _Job, headers: dict[str, str]) -> requests.Response:
    """GET the file as a streamed response, following Google Drive confirmation pages."""
    url, seen = job.url, {job.url}
    for _ in range(_MAX_CONFIRM_HOPS + 1):
        resp = _get(job, url, headers)
        if not _is_html_stand_in(resp, job.dest):
            return resp
        with resp:
            page = _read_page(resp)
        url = _next_url(job, page, resp.url, url)
        if url in seen:
            break
        seen.add(url)
    raise job.error(
        "Google Drive keeps answering with a confirmation page instead of the file",
        "open the URL in a browser to see why, or set a mirror",
    )


def _get(job: _Job, url: str, headers: dict[str, str]) -> requests.Response:
    try:
        resp = job.session.get(url, headers=headers, stream=True, timeout=job.timeout)
    except requests.RequestException as exc:
        # Already retried with back-off by the session's Retry: resuming would only repeat that.
        raise job.error(
            f"no usable response ({type(exc).__name__}: {exc})",
            "check the network and that the host is up, then rerun; or set a reachable mirror",
        ) from exc
    if resp.status_code in (200, 206) or (resp.status_code == 416 and "Range" in headers):
        return resp
    resp.close()
    raise job.error(
        f"expected HTTP 200/206, got {resp.status_code} {resp.reason} from {resp.url}", _status_fix(resp.status_code)
    )


def _status_fix(status: int) -> str:
    if status in (404, 410):
        return "the file is not at this URL; check the URL, or that the mirror has the same layout"
    if status in (401, 403):
        return "access was refused (Google Drive also says 403 when its quota is used up); retry later or set a mirror"
    if status in RETRY_STATUSES:
        return "the server kept failing after all retries; rerun later or raise the retry count"
    return "check the URL and the server"


def _is_html_stand_in(resp: requests.Response, dest: Path) -> bool:
    """An HTML reply for a file that is not HTML is a web page standing in for the file (Drive, login, error)."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return ctype == "text/html" and dest.suffix.lower() not in (".html", ".htm")


def _read_page(resp: requests.Response) -> str:
    body = bytearray()
    for chunk in resp.iter_content(1 << 14):
        body += chunk
        if len(body) >= _HTML_PEEK_BYTES:
            break
    return body.decode(resp.encoding or "utf-8", errors="replace")


def _next_url(job: _Job, page: str, page_url: str, url: str) -> str:
    if _QUOTA_RE.search(page):
        raise job.error(
            "Google Drive says the download quota of this file is exceeded",
            "retry later (the quota resets within a day) or set mirror_url to a copy with the same layout",
        )
    target = _drive_confirm_url(page, page_url, url)
    if target is None:
        raise job.error(
            f"expected the file, got an HTML page ({len(page)} characters) with no download link",
            "the URL points at a web page (login, preview, error), not the file; check it or set a mirror",
        )
    return target


def _drive_confirm_url(page: str, page_url: str, url: str) -> str | None:
    """The download URL behind a Drive virus-scan page: its form, an export=download link, or a bare token."""
    links = _PageLinks()
    links.feed(page)
    links.close()
    for action, fields in links.forms:
        if "confirm" in fields or "id" in fields:
            return _with_query(urljoin(page_url, action), fields)
    for href in links.hrefs:
        if "export=download" in href or "confirm=" in href:
            return urljoin(page_url, href)
    token = _CONFIRM_TOKEN_RE.search(page)
    return _with_query(url, {"confirm": token.group(1)}) if token else None


def _with_query(url: str, fields: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(fields)
    return urlunsplit(parts._replace(query=urlencode(query)))


class _PageLinks(HTMLParser):
    """Collects link targets and forms (action plus hidden inputs); attribute values arrive unescaped."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.forms: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {name: value or "" for name, value in attrs}
        if tag == "a" and attr.get("href"):
            self.hrefs.append(attr["href"])
        elif tag == "form":
            self.forms.append((attr.get("action", ""), {}))
        elif tag == "input" and self.forms and attr.get("type", "").lower() == "hidden" and attr.get("name"):
            self.forms[-1][1][attr["name"]] = attr.get("value", "")
