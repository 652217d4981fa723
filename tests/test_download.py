"""layersweep.download against a real HTTP server on 127.0.0.1 (stdlib), and tars built here.

Checksums are compared with hashlib run directly on the bytes the test served.
"""
from __future__ import annotations

import hashlib
import io
import random
import re
import socket
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from layersweep.download import check_weights_file, extract_tar, fetch, md5sum, sha256sum
from layersweep.errors import LayersweepError

FAST = dict(retries=2, timeout=3, backoff=0, progress=False)  # every test bounded to seconds


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


# ---------------------------------------------------------------------------------- HTTP server
@dataclass
class Route:
    body: bytes
    fail_first: list[int] = field(default_factory=list)  # statuses answered before serving
    honor_range: bool = True
    cut_after: int | None = None  # first body response: send this many bytes, then hang up


@dataclass
class Server:
    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)

    def url(self, path: str) -> str:
        return self.base + path


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a hang-up ends the transfer

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        state: Server = self.server.state
        rng = self.headers.get("Range")
        state.requests.append((self.path, rng))
        route = state.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        if route.fail_first:
            self.send_error(route.fail_first.pop(0))
            return
        body, start = route.body, 0
        if rng and route.honor_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        data = body[start:]
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if route.cut_after is not None:
            n, route.cut_after = route.cut_after, None
            self.wfile.write(data[:n])
            return  # HTTP/1.0: the server closes the socket short of Content-Length
        self.wfile.write(data)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = Server(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def closed_url():
    """A URL on 127.0.0.1 whose port is bound but not listening: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/file.tar"
    sock.close()


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


# ---------------------------------------------------------------------------------- fetch
def test_fetch_success_verifies_and_leaves_no_part(server, tmp_path):
    body = payload(300_000)
    server.routes["/a.tar"] = Route(body)
    dest = tmp_path / "sub" / "a.tar"
    out = fetch([server.url("/a.tar")], dest, md5=md5(body),
                sha256_prefix=hashlib.sha256(body).hexdigest()[:8], config_key="data.voc_root",
                retries=2, timeout=3, backoff=0, progress=True)
    assert out == dest
    assert dest.read_bytes() == body
    assert md5sum(dest) == md5(body)
    assert not part_of(dest).exists()
    assert list(dest.parent.iterdir()) == [dest]


@pytest.mark.parametrize("first", ["404", "refused"])
def test_fetch_falls_back_to_second_mirror(server, closed_url, tmp_path, first):
    body = payload(50_000)
    server.routes["/b.tar"] = Route(body)
    bad = server.url("/missing.tar") if first == "404" else closed_url
    dest = tmp_path / "b.tar"
    fetch([bad, server.url("/b.tar")], dest, md5=md5(body), config_key="k", **FAST)
    assert dest.read_bytes() == body
    paths = [p for p, _ in server.requests]
    if first == "404":
        assert paths == ["/missing.tar", "/b.tar"]  # a 404 is not retried on the same mirror
    else:
        assert paths == ["/b.tar"]


def test_fetch_retries_5xx_on_same_mirror(server, tmp_path):
    body = payload(10_000)
    server.routes["/c"] = Route(body, fail_first=[500, 503])
    dest = tmp_path / "c.bin"
    fetch([server.url("/c")], dest, md5=md5(body), config_key="k",
          retries=3, timeout=3, backoff=0, progress=False)
    assert dest.read_bytes() == body
    assert [p for p, _ in server.requests] == ["/c"] * 3


def test_fetch_5xx_exhausts_retries_then_fails(server, tmp_path):
    server.routes["/c"] = Route(b"x", fail_first=[500] * 10)
    dest = tmp_path / "c.bin"
    with pytest.raises(LayersweepError, match=r"HTTP 500"):
        fetch([server.url("/c")], dest, config_key="k", **FAST)
    assert len(server.requests) == FAST["retries"]
    assert not dest.exists() and not part_of(dest).exists()


def test_checksum_mismatch_everywhere_leaves_nothing(server, tmp_path):
    body = payload(40_000)
    server.routes["/m1"] = Route(body)
    server.routes["/m2"] = Route(body)
    dest = tmp_path / "VOCtest_06-Nov-2007.tar"
    with pytest.raises(LayersweepError) as info:
        fetch([server.url("/m1"), server.url("/m2")], dest, md5=md5(body + b"!"),
              config_key="data.voc_root", **FAST)
    msg = str(info.value)
    assert "VOCtest_06-Nov-2007.tar" in msg and "md5 mismatch" in msg
    assert "no network" not in msg
    assert [p for p, _ in server.requests] == ["/m1", "/m2"]  # a mismatch moves on, no retry
    assert not dest.exists() and not part_of(dest).exists()
    assert list(tmp_path.iterdir()) == []


def test_sha256_prefix_mismatch(server, tmp_path):
    body = payload(5_000)
    server.routes["/w.pth"] = Route(body)
    wrong = format((int(hashlib.sha256(body).hexdigest()[:8], 16) + 1) % 16**8, "08x")
    dest = tmp_path / f"vgg11-{wrong}.pth"
    with pytest.raises(LayersweepError, match="sha256 mismatch") as info:
        fetch([server.url("/w.pth")], dest, sha256_prefix=wrong, config_key="model.weights", **FAST)
    assert dest.name in str(info.value) and "'model.weights'" in str(info.value)
    assert not dest.exists() and not part_of(dest).exists()


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    body = payload(200_000)
    cut = 70_001
    server.routes["/r"] = Route(body, cut_after=cut)
    dest = tmp_path / "r.bin"
    fetch([server.url("/r")], dest, md5=md5(body), config_key="k", **FAST)
    assert server.requests == [("/r", None), ("/r", f"bytes={cut}-")]
    assert dest.read_bytes() == body and md5sum(dest) == md5(body)
    assert not part_of(dest).exists()


def test_existing_part_is_resumed(server, tmp_path):
    body = payload(100_000)
    server.routes["/p"] = Route(body)
    dest = tmp_path / "p.bin"
    part_of(dest).write_bytes(body[:50_000])
    fetch([server.url("/p")], dest, md5=md5(body), config_key="k", **FAST)
    assert server.requests == [("/p", "bytes=50000-")]
    assert dest.read_bytes() == body


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    body = payload(100_000)
    server.routes["/i"] = Route(body, honor_range=False)
    dest = tmp_path / "i.bin"
    # Garbage in the .part: appending the 200 body to it would fail the md5.
    part_of(dest).write_bytes(payload(50_000, seed=1))
    fetch([server.url("/i")], dest, md5=md5(body), config_key="k", **FAST)
    assert server.requests == [("/i", "bytes=50000-")]  # asked to resume, got 200, took it whole
    assert dest.read_bytes() == body


def test_complete_part_and_416(server, tmp_path):
    body = payload(30_000)
    server.routes["/f"] = Route(body)
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(body)
    fetch([server.url("/f")], dest, md5=md5(body), config_key="k", **FAST)
    assert server.requests == [("/f", "bytes=30000-")]
    assert dest.read_bytes() == body


def test_part_longer_than_file_restarts(server, tmp_path):
    body = payload(30_000)
    server.routes["/l"] = Route(body)
    dest = tmp_path / "l.bin"
    part_of(dest).write_bytes(body + b"stale tail")
    fetch([server.url("/l")], dest, md5=md5(body), config_key="k", **FAST)
    assert server.requests == [("/l", "bytes=30010-"), ("/l", None)]
    assert dest.read_bytes() == body


def test_corrupt_part_gets_one_fresh_download(server, tmp_path):
    body = payload(60_000)
    server.routes["/g"] = Route(body)
    dest = tmp_path / "g.bin"
    part_of(dest).write_bytes(payload(20_000, seed=2))  # wrong bytes that a resume would keep
    fetch([server.url("/g")], dest, md5=md5(body), config_key="k", **FAST)
    assert server.requests == [("/g", "bytes=20000-"), ("/g", None)]
    assert dest.read_bytes() == body


def test_all_mirrors_unreachable_gives_offline_sentence(closed_url, tmp_path):
    dest = tmp_path / "VOCtest_06-Nov-2007.tar"
    hint = "a directory holding VOCdevkit/VOC2007"
    with pytest.raises(LayersweepError) as info:
        fetch([closed_url, closed_url.replace("file.tar", "other.tar")], dest,
              md5="b6e924de25625d8de591ea690078ad9f", config_key="data.voc_root", hint=hint, **FAST)
    msg = str(info.value)
    assert msg.startswith("could not download VOCtest_06-Nov-2007.tar from any of 2 mirrors")
    assert "connection refused" in msg and "no network?" in msg
    assert f"set config key 'data.voc_root' to {hint}" in msg
    assert "\n" not in msg and ". " not in msg  # one sentence
    assert not dest.exists() and not part_of(dest).exists()


def test_no_mirror_names_the_file_and_the_key(tmp_path):
    dest = tmp_path / "vgg11-8a719046.pth"
    with pytest.raises(LayersweepError, match=r"^no mirror is configured for vgg11-8a719046\.pth; "
                                              r"set config key 'model\.weights' to a local copy$"):
        fetch([], dest, config_key="model.weights", hint="a local copy", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_verified_dest_makes_no_request(server, tmp_path):
    body = payload(8_000)
    server.routes["/v"] = Route(b"different")
    dest = tmp_path / "v.bin"
    dest.write_bytes(body)
    assert fetch([server.url("/v")], dest, md5=md5(body), config_key="k", **FAST) == dest
    assert server.requests == []
    assert dest.read_bytes() == body


def test_corrupt_dest_is_replaced(server, tmp_path):
    body = payload(8_000)
    server.routes["/v"] = Route(body)
    dest = tmp_path / "v.bin"
    dest.write_bytes(b"truncated")
    fetch([server.url("/v")], dest, md5=md5(body), config_key="k", **FAST)
    assert dest.read_bytes() == body


def test_hash_helpers_match_hashlib(tmp_path):
    body = payload(3 * (1 << 20) + 17)  # more than one chunk
    f = tmp_path / "h.bin"
    f.write_bytes(body)
    assert md5sum(f) == hashlib.md5(body).hexdigest()
    assert sha256sum(f) == hashlib.sha256(body).hexdigest()


def test_check_weights_file(tmp_path):
    body = payload(4_000)
    prefix = hashlib.sha256(body).hexdigest()[:8]
    good = tmp_path / f"vgg11-{prefix}.pth"
    good.write_bytes(body)
    assert check_weights_file(good, prefix) == good
    bad = tmp_path / "vgg11-bad.pth"
    bad.write_bytes(body[:-1])
    with pytest.raises(LayersweepError, match="vgg11-bad.pth"):
        check_weights_file(bad, prefix)
    with pytest.raises(LayersweepError, match=r"missing\.pth.*'model\.weights'"):
        check_weights_file(tmp_path / "missing.pth", prefix)


# ---------------------------------------------------------------------------------- extract_tar
def make_tar(path: Path, files: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return path


VOC = "VOCdevkit/VOC2007"
TRAINVAL = {
    f"{VOC}/Annotations/000005.xml": b"<annotation>trainval</annotation>",
    f"{VOC}/JPEGImages/000005.jpg": payload(5_000, seed=3),
    f"{VOC}/ImageSets/Main/trainval.txt": b"000005\n",
}
TEST = {
    f"{VOC}/Annotations/000001.xml": b"<annotation>test</annotation>",
    f"{VOC}/JPEGImages/000001.jpg": payload(7_000, seed=4),
    f"{VOC}/ImageSets/Main/test.txt": b"000001\n",
}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_extract_two_archives_merge(tmp_path):
    a = make_tar(tmp_path / "VOCtrainval.tar", TRAINVAL)
    b = make_tar(tmp_path / "VOCtest.tar", TEST)
    dest = tmp_path / "resources" / "VOC2007"
    m1 = extract_tar(a, dest, marker=".trainval.done", progress=False)
    m2 = extract_tar(b, dest, marker=".test.done", progress=True)
    assert m1 == dest / ".trainval.done" and m2 == dest / ".test.done"
    got = tree(dest)
    assert {k: v for k, v in got.items() if not k.startswith(".")} == {**TRAINVAL, **TEST}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["VOC2007"]  # no temp dir left


def test_extract_skips_when_marker_present(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / ".done").write_text("x")
    # The archive does not even exist: a present marker means nothing is read.
    assert extract_tar(tmp_path / "absent.tar", dest, marker=".done") == dest / ".done"


@pytest.mark.parametrize("cut", ["mid_data", "header_boundary", "mid_header"])
def test_truncated_tar_raises_and_leaves_nothing(tmp_path, cut):
    good = make_tar(tmp_path / "full.tar", {"VOCdevkit/a.bin": payload(10_000), "VOCdevkit/b.bin": b"b"})
    raw = good.read_bytes()
    # member a: 512-byte header + 10_000 bytes padded to 10_240; member b's header follows.
    size = {"mid_data": 512 + 4_000, "header_boundary": 512 + 10_240, "mid_header": 512 + 10_240 + 200}[cut]
    bad = tmp_path / "VOCtest_06-Nov-2007.tar"
    bad.write_bytes(raw[:size])
    dest = tmp_path / "res" / "VOC2007"
    with pytest.raises(LayersweepError, match="VOCtest_06-Nov-2007.tar"):
        extract_tar(bad, dest, marker=".test.done", progress=False)
    assert not dest.exists()
    assert list((tmp_path / "res").iterdir()) == []  # temp dir removed too


def test_failed_second_archive_keeps_first(tmp_path):
    dest = tmp_path / "VOC"
    extract_tar(make_tar(tmp_path / "tv.tar", TRAINVAL), dest, marker=".trainval.done", progress=False)
    before = tree(dest)
    raw = make_tar(tmp_path / "t.tar", TEST).read_bytes()
    (tmp_path / "t.tar").write_bytes(raw[:700])
    with pytest.raises(LayersweepError, match=r"t\.tar"):
        extract_tar(tmp_path / "t.tar", dest, marker=".test.done", progress=False)
    assert tree(dest) == before and not (dest / ".test.done").exists()


def test_not_a_tar_raises(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(payload(3_000))
    with pytest.raises(LayersweepError, match="junk.tar"):
        extract_tar(junk, tmp_path / "out", marker=".done", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("evil", [
    dict(files={"VOCdevkit/ok.txt": b"ok", "../evil": b"pwned"}),
    dict(files={"VOCdevkit/../../evil": b"pwned"}),
    dict(files={"/tmp/evil-abs": b"pwned"}),
    dict(files={"VOCdevkit/ok.txt": b"ok"}, symlinks={"VOCdevkit/link": "../../../etc/passwd"}),
])
def test_unsafe_tar_is_rejected(tmp_path, evil):
    bad = make_tar(tmp_path / "evil.tar", **evil)
    dest = tmp_path / "a" / "b" / "out"
    with pytest.raises(LayersweepError, match="evil.tar"):
        extract_tar(bad, dest, marker=".done", progress=False)
    assert not dest.exists()
    assert [p for p in tmp_path.rglob("*evil*") if p.name != "evil.tar"] == []
    assert list((tmp_path / "a" / "b").iterdir()) == []


def test_empty_archive_raises_and_leaves_nothing(tmp_path):
    empty = make_tar(tmp_path / "empty.tar", {})  # a well-formed tar with no member
    dest = tmp_path / "res" / "VOC2007"
    with pytest.raises(LayersweepError, match=r"^archive .*empty\.tar is empty$"):
        extract_tar(empty, dest, marker=".done", progress=False)
    assert list((tmp_path / "res").iterdir()) == []  # no marker, no dest, no temporary directory


def test_leftover_extraction_directory_is_removed(tmp_path):
    """A killed run leaves its temporary directory (~GBs for VOC) beside dest; the next run deletes it, and
    only its own archive's: another archive's may still be in use."""
    archive = make_tar(tmp_path / "VOCtest.tar", TEST)
    dest = tmp_path / "res" / "VOC2007"
    stale = tmp_path / "res" / ".VOC2007.VOCtest.tar.extracting-killed"
    (stale / VOC).mkdir(parents=True)
    (stale / VOC / "half.jpg").write_bytes(b"half")
    other = tmp_path / "res" / ".VOC2007.VOCtrainval.tar.extracting-running"
    other.mkdir()
    extract_tar(archive, dest, marker=".test.done", progress=False)
    assert not stale.exists() and other.is_dir()
    assert {k: v for k, v in tree(dest).items() if not k.startswith(".")} == TEST
