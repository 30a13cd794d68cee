"""Nothing leaked, nothing garbled: /media serves only the files that were indexed, queries
refuse control characters, errors are JSON, and file names (bytes, possibly hostile) are
kept losslessly and shown escaped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_video import write_corrupt_file, write_video
from test_search_support import NUM_VIDEOS, built, clip_frames, copy_built, encode  # noqa: F401
from vop.display import escape
from vop.search.store import read_index

pytest.importorskip("fastapi")
pytest.importorskip("faiss")


def _client(index):
    from fastapi.testclient import TestClient

    from vop.search.app import create_app
    from vop.search.service import SearchService

    service = SearchService()
    service.add_index(index, name="main")
    return TestClient(create_app(service), base_url="http://127.0.0.1")


def _hits(client, k=NUM_VIDEOS):
    r = client.get("/api/search", params={"q": "a square", "k": k})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_display_escape_covers_c0_c1_del_surrogates_and_backslash():
    assert escape("x\x1b]0;PWNED\x07\x1b[2J.mp4") == "x\\x1b]0;PWNED\\x07\\x1b[2J.mp4"
    assert escape("a\x7fb\x85c\x9bd") == "a\\x7fb\\x85c\\x9bd"
    assert escape(os.fsdecode(b"caf\xe9.mp4")) == "caf\\xe9.mp4"
    assert escape("caf\\xe9.mp4") == "caf\\\\xe9.mp4"  # a real backslash cannot pose as an escape
    assert escape("été 映画 🎬.mp4") == "été 映画 🎬.mp4"
    escape("".join(map(chr, range(0x20))) + "\ud800").encode("utf-8")  # strictly encodable


def test_a_symlink_repointed_after_encoding_is_not_served(built, tmp_path):
    videos, index = copy_built(built, tmp_path)
    target = videos / "clip0.mp4"
    (videos / "clip0.mp4").rename(videos / "real0.mp4")
    (videos / "clip0.mp4").symlink_to(videos / "real0.mp4")
    encode(videos, index)
    secret = tmp_path / "secret.txt"
    secret.write_bytes((videos / "real0.mp4").read_bytes())  # same size: only the real path tells them apart
    os.utime(secret, ns=(target.lstat().st_atime_ns, (videos / "real0.mp4").stat().st_mtime_ns))
    with _client(index) as client:
        hit = next(h for h in _hits(client) if h["path"] == "clip0.mp4")
        assert client.get(hit["media_url"]).status_code == 200  # a symlink inside the collection is served
        target.unlink()
        target.symlink_to(secret)
        for url in (hit["media_url"], hit["thumb_url"]):
            r = client.get(url)
            assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        assert client.get(hit["video_url"]).json()["available"] is False


def test_an_index_edited_to_serve_a_system_file_is_refused(built, tmp_path):
    videos, index = copy_built(built, tmp_path)
    encode(videos, index)
    secret = tmp_path / "outside" / "secret.mp4"
    secret.parent.mkdir()
    secret.write_bytes(b"top secret")
    st = secret.stat()
    meta = json.loads((index / "index.json").read_text())
    meta["root"] = "/"
    (index / "index.json").write_text(json.dumps(meta))
    lines = (index / "videos.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec.update(path=str(secret.resolve()).lstrip("/"), size=st.st_size, mtime_ns=st.st_mtime_ns)
    (index / "videos.jsonl").write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    with _client(index) as client:
        r = client.get(f"/media/{rec['id']}")
        assert r.status_code == 404 and b"top secret" not in r.content


def test_a_file_changed_since_indexing_is_not_served(built, tmp_path):
    videos, index = copy_built(built, tmp_path)
    encode(videos, index)
    with _client(index) as client:
        hit = next(h for h in _hits(client) if h["path"] == "clip0.mp4")
        with open(videos / "clip0.mp4", "ab") as f:
            f.write(b"appended")
        r = client.get(hit["media_url"])
        assert r.status_code == 404 and "changed" in r.json()["error"]


def test_head_on_media_answers_like_get_without_a_body(built):
    with _client(built[1]) as client:
        hit = _hits(client, 1)[0]
        got = client.get(hit["media_url"])
        head = client.head(hit["media_url"])
        assert head.status_code == got.status_code == 200
        assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
        assert head.headers["content-type"] == got.headers["content-type"] and head.content == b""
        assert client.head("/media/0123456789abcdef").status_code == 404


@pytest.mark.parametrize("query", ["dog\x7f", "dog\u0085cat", "dog\u009b2J", "\x1b[2J", "a\x00b"])
def test_control_characters_in_queries_are_400(built, query):
    with _client(built[1]) as client:
        r = client.get("/api/search", params={"q": query})
        assert r.status_code == 400 and "control" in r.json()["error"]


def test_a_foreign_host_gets_a_json_error(built):
    with _client(built[1]) as client:
        r = client.get("/api/health", headers={"Host": "evil.example"})
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        assert "Host" in r.json()["error"]
        assert client.get("/api/health", headers={"Host": "localhost:8000"}).status_code == 200
        assert client.get("/api/health", headers={"Host": "[::1]:8000"}).status_code == 200
        r = client.post("/api/search")
        assert r.status_code == 405 and r.json()["status"] == 405


LATIN1 = os.fsdecode(b"caf\xe9.mp4")  # a latin-1 name: not UTF-8
EVIL = "x\x1b]0;PWNED\x07\x1b[2J.mp4"


@pytest.fixture(scope="module")
def odd_names(tmp_path_factory):
    base = tmp_path_factory.mktemp("names")
    videos = base / "videos"
    videos.mkdir()
    write_video(os.path.join(os.fsencode(videos), b"caf\xe9.mp4").decode("utf-8", "surrogateescape"),
                clip_frames(1))
    write_video(videos / EVIL, clip_frames(2))
    write_video(videos / "plain.mp4", clip_frames(3))
    write_corrupt_file(videos / ("broken" + EVIL))
    report = encode(videos, base / "index")
    return videos, base / "index", report


def test_non_utf8_names_are_kept_losslessly_and_served(odd_names):
    videos, index, report = odd_names
    assert report.total == 3
    stored = read_index(index)
    assert {r.path for r in stored.records} == {LATIN1, EVIL, "plain.mp4"}  # round-trips through videos.jsonl
    with _client(index) as client:
        hits = _hits(client, 3)
        assert {h["path"] for h in hits} == {"caf\\xe9.mp4", escape(EVIL), "plain.mp4"}
        latin = next(h for h in hits if h["path"] == "caf\\xe9.mp4")
        meta = client.get(latin["video_url"])
        assert meta.status_code == 200 and meta.json()["path"] == "caf\\xe9.mp4" and meta.json()["available"]
        media = client.get(latin["media_url"])
        assert media.status_code == 200
        assert media.content == (Path(os.fsdecode(os.fsencode(videos))) / LATIN1).read_bytes()


def test_cli_prints_names_escaped_under_a_strict_utf8_terminal(odd_names):
    videos, index, _ = odd_names
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "PYTHONPATH": os.pathsep.join(sys.path)}
    for extra in ([], ["--json"]):
        out = subprocess.run([sys.executable, "-m", "vop.cli", "search", str(index), "a square", "-k", "3", *extra],
                             env=env, capture_output=True)
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        text = out.stdout.decode("utf-8")  # strict: fails on anything undecodable
        assert "\x1b" not in text and "\x07" not in text
        assert "caf\\xe9.mp4" in text if not extra else {h["path"] for h in json.loads(text)} == {
            "caf\\xe9.mp4", escape(EVIL), "plain.mp4"}
    out = subprocess.run([sys.executable, "-m", "vop.cli", "encode", str(videos), "--checkpoint", "zero-shot",
                          "--backbone", "tiny", "--out", str(index.parent / "again"), "--quiet"],
                         env=env, capture_output=True)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    text = out.stdout.decode("utf-8")
    assert "unreadable: " + escape("broken" + EVIL) in text and "\x1b" not in text


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_serve_refuses_an_impossible_port(built, capsys, port):
    from vop.cli import main

    assert main(["serve", str(built[1]), "--port", port]) == 2
    captured = capsys.readouterr()
    assert "--port must be between 0 and 65535" in captured.err and "serving on" not in captured.out


def test_serve_says_the_port_is_busy_before_claiming_to_serve(built, capsys):
    import socket

    from vop.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(built[1]), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"port {port} on 127.0.0.1 is busy" in captured.err and "serving on" not in captured.out
    assert len(captured.err.strip().splitlines()) == 1
