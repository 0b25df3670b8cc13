"""FFHQ downloader and `sgilo.fetch` against a local HTTP server that can inject faults.

The server (127.0.0.1, ephemeral port) serves a tiny FFHQ-shaped tree built in memory per test: six 8x8 PNGs at
`/mirror/thumbnails128x128/00000/0000k.png` and, Drive-style, at `/uc?id=k`, plus the metadata JSON at
`/mirror/ffhq-dataset-v1.json` and `/uc?id=meta`. `FakeServer.faults[resource]` is a queue of faults consumed one
per request; every request is logged with its headers so tests can assert what the client asked for.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sgilo.fetch import DownloadError, download_file, make_session
from sgilo.ffhq import (
    MetadataError,
    download_ffhq,
    load_metadata,
    pixel_md5,
    select_files,
)

CATEGORIES = ["training", "training", "validation", "training", "validation", "training"]
SPLITS = ["train" if c == "training" else "test" for c in CATEGORIES]
PNG_TYPE = "image/png"


# ------------------------------------------------------------------------------------------- fake server
@dataclass
class Hit:
    resource: str
    target: str
    headers: dict[str, str]


@dataclass
class FakeServer:
    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self, resource: str) -> str | None:
        with self.lock:
            queue = self.faults.get(resource)
            return queue.pop(0) if queue else None

    def hits_for(self, resource: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.resource == resource]


def _resource(target: str) -> str:
    """The file a request is for: the path, or for Drive-style `/uc?id=X` the path plus its id."""
    parts = urlsplit(target)
    if parts.path == "/uc":
        return "/uc?id=" + dict(parse_qsl(parts.query)).get("id", "")
    return parts.path


def _confirm_form(target: str, base: str) -> str:
    parts = urlsplit(target)
    file_id = dict(parse_qsl(parts.query)).get("id", "x")
    return (
        "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
        "<p>Google Drive can't scan this file for viruses.</p>"
        f'<form id="download-form" action="{base}{parts.path}" method="get">'
        '<input type="submit" id="uc-download-link" value="Download anyway"/>'
        f'<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" value="download">'
        '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="5e1f-77aa">'
        "</form></body></html>"
    )


def _confirm_link(target: str, base: str) -> str:
    parts = urlsplit(target)
    file_id = dict(parse_qsl(parts.query)).get("id", "x")
    href = f"{parts.path}?export=download&amp;confirm=Zx9_q&amp;id={file_id}"
    return f'<html><body><a id="uc-download-link" href="{href}">Download anyway</a></body></html>'


_PAGES: dict[str, Callable[[str, str], str]] = {
    "confirm_form": _confirm_form,
    "confirm_link": _confirm_link,
    "quota": lambda target, base: (
        "<html><head><title>Google Drive - Quota exceeded</title></head><body>Sorry, you can't view or download "
        "this file at this time. Too many users have viewed or downloaded this file recently.</body></html>"
    ),
    "html": lambda target, base: "<html><body>Please sign in</body></html>",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with Content-Length framing, like real servers
    timeout = 5

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        resource = _resource(self.path)
        fake.hits.append(Hit(resource, self.path, dict(self.headers)))
        fault = fake.next_fault(resource)
        body = fake.files.get(resource)
        if body is None:
            return self._reply(404, b"not found", "text/plain")
        if fault in _PAGES:
            return self._reply(200, _PAGES[fault](self.path, fake.base).encode(), "text/html; charset=utf-8")
        if fault == "503":
            return self._reply(503, b"busy", "text/plain")
        if fault == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        if fault == "drop":
            return self._drop(body)
        start = None if fault == "ignore_range" else _range_start(self.headers.get("Range"))
        self._serve(body, start)

    def _serve(self, body: bytes, start: int | None) -> None:
        ctype = PNG_TYPE if body.startswith(b"\x89PNG") else "application/json"
        if start is None:
            return self._reply(200, body, ctype)
        if start >= len(body):
            return self._reply(416, b"", "text/plain", {"Content-Range": f"bytes */{len(body)}"})
        self._reply(206, body[start:], ctype, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})

    def _reply(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _drop(self, body: bytes) -> None:
        # Promise the whole body, send half, hang up: the client sees the connection die mid-file.
        self.send_response(200)
        self.send_header("Content-Type", PNG_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


def _range_start(header: str | None) -> int | None:
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    return int(header[len("bytes=") : -1])


class _Server(ThreadingHTTPServer):
    block_on_close = False  # idle keep-alive threads must not hold up teardown


@pytest.fixture
def server() -> Iterator[FakeServer]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    fake = FakeServer(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.fake = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


# ------------------------------------------------------------------------------------------ dataset tree
@dataclass
class Tree:
    base: str
    pngs: dict[str, bytes]  # file_path -> bytes
    metadata: dict[str, Any]
    meta_bytes: bytes

    @property
    def meta_md5(self) -> str:
        return hashlib.md5(self.meta_bytes).hexdigest()

    def path(self, idx: int) -> str:
        return f"thumbnails128x128/00000/{idx:05d}.png"


def _png(seed: int, side: int = 8) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _record(base: str, idx: int, data: bytes, folder: str, side: int) -> dict[str, Any]:
    with Image.open(io.BytesIO(data)) as image:
        pixels = hashlib.md5(np.array(image).tobytes()).hexdigest()
    return {
        "file_url": f"{base}/uc?id={idx}",
        "file_path": f"{folder}/00000/{idx:05d}.png",
        "file_size": len(data),
        "file_md5": hashlib.md5(data).hexdigest(),
        "pixel_size": [side, side],
        "pixel_md5": pixels,
    }


def publish(server: FakeServer, tweak: Callable[[dict[str, Any]], None] | None = None) -> Tree:
    """Build the tree, let `tweak` edit the metadata, and put everything on the server."""
    pngs = {f"thumbnails128x128/00000/{i:05d}.png": _png(i) for i in range(len(CATEGORIES))}
    metadata: dict[str, Any] = {}
    for i, (path, data) in enumerate(pngs.items()):
        thumb = _record(server.base, i, data, "thumbnails128x128", 8)
        image = {**thumb, "file_url": f"{server.base}/uc?id=big{i}", "file_path": f"images1024x1024/00000/{i:05d}.png"}
        metadata[str(i)] = {"category": CATEGORIES[i], "image": image, "thumbnail": thumb}
        server.files[f"/mirror/{path}"] = data
        server.files[f"/uc?id={i}"] = data
    if tweak:
        tweak(metadata)
    meta_bytes = json.dumps(metadata).encode()
    server.files["/mirror/ffhq-dataset-v1.json"] = meta_bytes
    server.files["/uc?id=meta"] = meta_bytes
    return Tree(server.base, pngs, metadata, meta_bytes)


def fetch(tree: Tree, out: Path, *, mirror: bool = True, **overrides: Any) -> pd.DataFrame:
    kwargs: dict[str, Any] = {
        "metadata_url": f"{tree.base}/uc?id=meta",
        "metadata_md5": tree.meta_md5,
        "metadata_size": len(tree.meta_bytes),
        "kind": "thumbnails",
        "index_start": 0,
        "index_stop": len(CATEGORIES),
        "mirror_url": f"{tree.base}/mirror/" if mirror else "",
        "workers": 3,
        "retries": 3,
        "timeout": 10.0,
        "progress": False,
    }
    return download_ffhq(out, **{**kwargs, **overrides})


def assert_files_ok(tree: Tree, out: Path, ids: range | list[int]) -> None:
    for i in ids:
        assert (out / tree.path(i)).read_bytes() == tree.pngs[tree.path(i)], f"file {i} differs"
        assert not (out / (tree.path(i) + ".part")).exists()


# ---------------------------------------------------------------------------------------------- ffhq
def test_full_download_via_mirror(server: FakeServer, tmp_path: Path) -> None:
    tree = publish(server)
    df = fetch(tree, tmp_path, progress=True)
    assert_files_ok(tree, tmp_path, range(6))
    on_disk = pd.read_csv(tmp_path / "index.csv")
    assert list(on_disk.columns) == ["id", "split", "path"]
    pd.testing.assert_frame_equal(on_disk, df)
    assert on_disk["id"].tolist() == list(range(6))
    assert on_disk["split"].tolist() == SPLITS
    assert on_disk["path"].tolist() == [tree.path(i) for i in range(6)]
    assert (tmp_path / "ffhq-dataset-v1.json").read_bytes() == tree.meta_bytes
    assert server.hits_for("/mirror/ffhq-dataset-v1.json") and not server.hits_for("/uc?id=meta")
    assert all(hit.resource.startswith("/mirror/") for hit in server.hits)
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.tmp"))


def test_download_from_file_urls_without_mirror(server: FakeServer, tmp_path: Path) -> None:
    tree = publish(server)
    df = fetch(tree, tmp_path, mirror=False, index_start=2, index_stop=5)
    assert df["id"].tolist() == [2, 3, 4]
    assert_files_ok(tree, tmp_path, [2, 3, 4])
    assert not (tmp_path / tree.path(0)).exists()
    assert {hit.resource for hit in server.hits} == {"/uc?id=meta", "/uc?id=2", "/uc?id=3", "/uc?id=4"}


def test_content_wrong_once_is_downloaded_again(server: FakeServer, tmp_path: Path) -> None:
    tree = publish(server)
    server.faults["/mirror/" + tree.path(2)] = ["corrupt"]
    fetch(tree, tmp_path)
    assert_files_ok(tree, tmp_path, range(6))
    assert len(server.hits_for("/mirror/" + tree.path(2))) == 2


def test_always_wrong_md5_fails_that_file_only(server: FakeServer, tmp_path: Path) -> None:
    def break_md5(metadata: dict[str, Any]) -> None:
        metadata["3"]["thumbnail"]["file_md5"] = "0" * 32

    tree = publish(server, break_md5)
    with pytest.raises(DownloadError) as info:
        fetch(tree, tmp_path)
    message = str(info.value)
    assert tree.path(3) in message and "0" * 32 in message
    assert hashlib.md5(tree.pngs[tree.path(3)]).hexdigest() in message  # what was actually got
    assert "1 of 6 files failed" in message
    assert len(server.hits_for("/mirror/" + tree.path(3))) == 2  # one fresh retry, then give up
    assert_files_ok(tree, tmp_path, [0, 1, 2, 4, 5])
    assert not (tmp_path / tree.path(3)).exists() and not (tmp_path / (tree.path(3) + ".part")).exists()
    assert not (tmp_path / "index.csv").exists()


def test_wrong_pixel_md5_is_reported(server: FakeServer, tmp_path: Path) -> None:
    def break_pixels(metadata: dict[str, Any]) -> None:
        metadata["5"]["thumbnail"]["pixel_md5"] = "f" * 32

    tree = publish(server, break_pixels)
    with pytest.raises(DownloadError, match="pixel md5") as info:
        fetch(tree, tmp_path)
    assert tree.path(5) in str(info.value)
    assert pixel_md5(tmp_path / tree.path(0)) == tree.metadata["0"]["thumbnail"]["pixel_md5"]


def test_dropped_connection_in_ffhq_download_recovers(server: FakeServer, tmp_path: Path) -> None:
    tree = publish(server)
    server.faults["/mirror/" + tree.path(1)] = ["drop"]
    server.faults["/mirror/ffhq-dataset-v1.json"] = ["drop"]
    fetch(tree, tmp_path)
    assert_files_ok(tree, tmp_path, range(6))
    assert len(server.hits_for("/mirror/" + tree.path(1))) == 2


def test_503_on_first_request_is_retried(server: FakeServer, tmp_path: Path) -> None:
    tree = publish(server)
    server.faults["/mirror/" + tree.path(4)] = ["503"]
    server.faults["/mirror/ffhq-dataset-v1.json"] = ["503"]
    fetch(tree, tmp_path)
    assert_files_ok(tree, tmp_path, range(6))
    assert len(server.hits_for("/mirror/" + tree.path(4))) == 2


def test_drive_pages_in_ffhq_download(server: FakeServer, tmp_path: Path) -> None:
    tree = publish(server)
    server.faults["/uc?id=meta"] = ["confirm_form"]
    server.faults["/uc?id=1"] = ["confirm_link"]
    server.faults["/uc?id=4"] = ["quota"]
    with pytest.raises(DownloadError) as info:
        fetch(tree, tmp_path, mirror=False)
    message = str(info.value)
    assert "quota" in message.lower() and tree.path(4) in message and "1 of 6" in message
    assert_files_ok(tree, tmp_path, [0, 1, 2, 3, 5])


def test_resume_from_part_file_after_kill(server: FakeServer, tmp_path: Path) -> None:
    tree = publish(server)
    data = tree.pngs[tree.path(2)]
    part = tmp_path / (tree.path(2) + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: len(data) // 2])
    fetch(tree, tmp_path)
    assert_files_ok(tree, tmp_path, range(6))
    (hit,) = server.hits_for("/mirror/" + tree.path(2))
    assert hit.headers.get("Range") == f"bytes={len(data) // 2}-"


def test_rerun_with_everything_present_makes_no_request(server: FakeServer, tmp_path: Path) -> None:
    tree = publish(server)
    first = fetch(tree, tmp_path)
    server.hits.clear()
    second = fetch(tree, tmp_path)
    assert server.hits == []
    pd.testing.assert_frame_equal(first, second)


def test_invalid_selection_fails_before_any_request(server: FakeServer, tmp_path: Path) -> None:
    tree = publish(server)
    with pytest.raises(ValueError, match="kind"):
        fetch(tree, tmp_path, kind="faces")
    with pytest.raises(ValueError, match="index_start"):
        fetch(tree, tmp_path, index_start=4, index_stop=4)
    assert server.hits == []


# --------------------------------------------------------------------------------------------- fetch
@pytest.fixture
def blob(server: FakeServer) -> tuple[str, bytes]:
    """A 4 KiB binary file at /blob.bin, big enough to be cut in the middle of many small chunks."""
    data = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    server.files["/blob.bin"] = data
    return f"{server.base}/blob.bin", data


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_dropped_connection_resumes_with_range(server: FakeServer, blob: tuple[str, bytes], tmp_path: Path) -> None:
    url, data = blob
    server.faults["/blob.bin"] = ["drop"]
    dest = download_file(url, tmp_path / "blob.bin", size=len(data), md5=md5(data), chunk_size=64)
    assert dest.read_bytes() == data
    first, second = server.hits_for("/blob.bin")
    assert "Range" not in first.headers
    start = _range_start(second.headers.get("Range"))
    assert start is not None and 0 < start <= len(data) // 2


def test_server_ignoring_range_restarts_from_zero(server: FakeServer, blob: tuple[str, bytes], tmp_path: Path) -> None:
    url, data = blob
    dest = tmp_path / "blob.bin"
    Path(f"{dest}.part").write_bytes(data[:1000])
    server.faults["/blob.bin"] = ["ignore_range"]
    download_file(url, dest, size=len(data), md5=md5(data))
    assert dest.read_bytes() == data
    (hit,) = server.hits_for("/blob.bin")  # one request: the 200 body replaced the part, no second try needed
    assert hit.headers.get("Range") == "bytes=1000-"


def test_drop_then_range_ignored(server: FakeServer, blob: tuple[str, bytes], tmp_path: Path) -> None:
    url, data = blob
    server.faults["/blob.bin"] = ["drop", "ignore_range"]
    dest = download_file(
        url, tmp_path / "blob.bin", size=len(data), sha256=hashlib.sha256(data).hexdigest(), chunk_size=64
    )
    assert dest.read_bytes() == data
    assert len(server.hits_for("/blob.bin")) == 2


def test_too_many_drops_keeps_part_and_raises(server: FakeServer, blob: tuple[str, bytes], tmp_path: Path) -> None:
    url, data = blob
    server.faults["/blob.bin"] = ["drop"] * 10
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="broke off 3 times") as info:
        download_file(url, dest, size=len(data), md5=md5(data), chunk_size=64, max_resumes=2)
    assert url in str(info.value) and str(dest) in str(info.value)
    assert len(server.hits_for("/blob.bin")) == 3
    assert not dest.exists() and Path(f"{dest}.part").stat().st_size > 0


def test_503_exhausting_retries_raises(server: FakeServer, blob: tuple[str, bytes], tmp_path: Path) -> None:
    url, data = blob
    server.faults["/blob.bin"] = ["503"] * 10
    with make_session(retries=2, backoff=0.01) as session, pytest.raises(DownloadError, match="503"):
        download_file(url, tmp_path / "blob.bin", size=len(data), session=session)
    assert len(server.hits_for("/blob.bin")) == 3


def test_503_retry_with_backoff_succeeds(server: FakeServer, blob: tuple[str, bytes], tmp_path: Path) -> None:
    url, data = blob
    server.faults["/blob.bin"] = ["503", "503"]
    with make_session(retries=3, backoff=0.01) as session:
        dest = download_file(url, tmp_path / "blob.bin", md5=md5(data), session=session)
    assert dest.read_bytes() == data
    assert len(server.hits_for("/blob.bin")) == 3


@pytest.mark.parametrize("page", ["confirm_form", "confirm_link"])
def test_drive_confirm_page_is_followed(server: FakeServer, tmp_path: Path, page: str) -> None:
    data = _png(99)
    server.files["/uc?id=abc"] = data
    server.faults["/uc?id=abc"] = [page]
    dest = download_file(f"{server.base}/uc?id=abc&export=download", tmp_path / "x.png", size=len(data), md5=md5(data))
    assert dest.read_bytes() == data
    _first, second = server.hits_for("/uc?id=abc")
    query = parse_qs(urlsplit(second.target).query)
    assert query["id"] == ["abc"] and query["confirm"] == (["t"] if page == "confirm_form" else ["Zx9_q"])
    if page == "confirm_form":
        assert query["uuid"] == ["5e1f-77aa"]


def test_drive_quota_page_raises(server: FakeServer, tmp_path: Path) -> None:
    server.files["/uc?id=abc"] = _png(1)
    server.faults["/uc?id=abc"] = ["quota"]
    dest = tmp_path / "x.png"
    with pytest.raises(DownloadError, match="quota") as info:
        download_file(f"{server.base}/uc?id=abc", dest)
    assert "mirror" in str(info.value) and not dest.exists()


def test_unexpected_html_raises(server: FakeServer, tmp_path: Path) -> None:
    server.files["/uc?id=abc"] = _png(1)
    server.faults["/uc?id=abc"] = ["html"]
    with pytest.raises(DownloadError, match="HTML page"):
        download_file(f"{server.base}/uc?id=abc", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_404_names_url_and_fix(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404") as info:
        download_file(f"{server.base}/nothing.png", tmp_path / "x.png")
    assert "/nothing.png" in str(info.value) and "Fix:" in str(info.value)


def test_valid_destination_needs_no_request(server: FakeServer, blob: tuple[str, bytes], tmp_path: Path) -> None:
    url, data = blob
    dest = tmp_path / "blob.bin"
    dest.write_bytes(data)
    assert download_file(url, dest, size=len(data), md5=md5(data)) == dest
    assert server.hits == []
    dest.write_bytes(data[::-1])  # same size, wrong content: must be replaced
    download_file(url, dest, size=len(data), md5=md5(data))
    assert dest.read_bytes() == data and len(server.hits) == 1


# ----------------------------------------------------------------------------------- metadata helpers
def _entry(idx: int, category: str | None = "training") -> dict[str, Any]:
    rec = {"file_url": f"https://drive.example/uc?id={idx}", "file_size": 10, "file_md5": "A" * 32}
    entry: dict[str, Any] = {
        "thumbnail": {**rec, "file_path": f"thumbnails128x128/{idx - idx % 1000:05d}/{idx:05d}.png"},
        "image": {**rec, "file_path": f"images1024x1024/{idx - idx % 1000:05d}/{idx:05d}.png", "pixel_md5": "B" * 32},
    }
    if category:
        entry["category"] = category
    return entry


def test_select_files_range_splits_and_urls() -> None:
    meta = {str(i): _entry(i, c) for i, c in enumerate(CATEGORIES)}
    specs = select_files(meta, "thumbnails", 1, 4)
    assert [s.id for s in specs] == [1, 2, 3]
    assert [s.split for s in specs] == SPLITS[1:4]
    assert specs[0].url == "https://drive.example/uc?id=1" and specs[0].md5 == "a" * 32
    assert specs[0].path == "thumbnails128x128/00000/00001.png" and specs[0].pixel_md5 is None
    mirrored = select_files(meta, "images", 5, 6, mirror_url="http://m.example/ffhq/")
    assert mirrored[0].url == "http://m.example/ffhq/images1024x1024/00000/00005.png"
    assert mirrored[0].pixel_md5 == "b" * 32 and mirrored[0].size == 10


def test_select_files_split_by_index_without_category() -> None:
    meta = {"59999": _entry(59999, None), "60000": _entry(60000, None), "69999": _entry(69999, None)}
    specs = select_files(meta, "images", 59999, 60001)
    assert [(s.id, s.split) for s in specs] == [(59999, "train"), (60000, "test")]
    assert select_files(meta, "images", 69999, 70000)[0].path == "images1024x1024/69000/69999.png"


def test_select_files_errors() -> None:
    meta = {str(i): _entry(i) for i in range(3)}
    with pytest.raises(MetadataError, match=r"\[3, 4\]"):
        select_files(meta, "thumbnails", 0, 5)
    with pytest.raises(ValueError, match="kind"):
        select_files(meta, "faces", 0, 1)  # type: ignore[arg-type]
    meta["1"]["thumbnail"]["file_path"] = "../../etc/passwd"
    with pytest.raises(MetadataError, match="'1'"):
        select_files(meta, "thumbnails", 0, 3)
    meta["2"]["category"] = "holdout"
    with pytest.raises(MetadataError, match="holdout"):
        select_files(meta, "thumbnails", 2, 3)


def test_load_metadata_rejects_bad_files(tmp_path: Path) -> None:
    broken = tmp_path / "ffhq-dataset-v1.json"
    broken.write_text('{"0": {"category": ')
    with pytest.raises(MetadataError, match="ffhq-dataset-v1.json"):
        load_metadata(broken)
    wrong = tmp_path / "list.json"
    wrong.write_text("[1, 2]")
    with pytest.raises(MetadataError, match="list.json"):
        load_metadata(wrong)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"0": _entry(0)}))
    assert load_metadata(good)["0"]["category"] == "training"
