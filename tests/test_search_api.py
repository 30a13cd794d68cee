"""The HTTP API through FastAPI's TestClient: results, media, thumbnails, and every kind
of bad request answered with a 4xx JSON error while the service keeps working."""

from __future__ import annotations

import pytest

from test_search_support import NUM_VIDEOS, built, copy_built, encode  # noqa: F401

pytest.importorskip("fastapi")
pytest.importorskip("faiss")


def _client(index):
    from fastapi.testclient import TestClient

    from vop.search.app import create_app
    from vop.search.service import SearchService

    service = SearchService()
    service.add_index(index, name="main")
    return TestClient(create_app(service), base_url="http://127.0.0.1"), service


@pytest.fixture(scope="module")
def api(built):
    client, service = _client(built[1])
    with client:
        yield client, service


def _ids(api) -> list[str]:
    return [r["id"] for r in api[0].get("/api/search", params={"q": "a square", "k": NUM_VIDEOS}).json()["results"]]


def test_health_lists_the_indexes(api):
    body = api[0].get("/api/health").json()
    assert body["status"] == "ok"
    [idx] = body["indexes"]
    assert idx["name"] == "main" and idx["videos"] == NUM_VIDEOS and idx["method"] == "zero-shot"
    assert idx["failed"] == 1 and len(idx["fingerprint"]) == 16


def test_search_ranks_results_with_links(api):
    r = api[0].get("/api/search", params={"q": "a red square moves to the right", "k": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["index"] == "main" and body["count"] == 4
    results = body["results"]
    assert [x["rank"] for x in results] == [1, 2, 3, 4]
    scores = [x["score"] for x in results]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    first = results[0]
    assert first["media_url"] == f"/media/{first['id']}?index=main"
    assert first["thumb_url"].startswith("/thumbs/") and first["path"].endswith(".mp4")
    assert api[0].get("/api/search", params={"q": "x", "k": 100}).json()["count"] == NUM_VIDEOS  # k > N is fine


def test_video_metadata_media_and_thumbnail(api, built):
    client, _ = api
    videos = built[0]
    vid = _ids(api)[0]
    meta = client.get(f"/api/videos/{vid}").json()
    assert meta["id"] == vid and meta["available"] is True and meta["width"] == 32
    media = client.get(f"/media/{vid}")
    assert media.status_code == 200 and media.headers["content-type"] == "video/mp4"
    assert media.content == (videos / meta["path"]).read_bytes()
    part = client.get(f"/media/{vid}", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    thumb = client.get(f"/thumbs/{vid}?index=main")
    assert thumb.status_code == 200 and thumb.headers["content-type"] in ("image/jpeg", "image/png")
    assert thumb.content[:3] == b"\xff\xd8\xff" or thumb.content[:8] == b"\x89PNG\r\n\x1a\n"
    cached = list((built[1] / "thumbs").iterdir())
    assert any(p.name.startswith(vid) for p in cached)
    assert client.get(f"/thumbs/{vid}").content == thumb.content  # served from the cache


def test_page_has_the_search_ui_and_security_headers(api):
    r = api[0].get("/")
    assert r.status_code == 200 and 'id="q"' in r.text and "<video" in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("query, message", [
    ("q=", "empty"),
    ("q=%20%20%20", "empty"),
    ("k=3", "missing"),
    ("q=" + "a" * 1001, "at most 1000"),
    ("q=%ff%fe%fd", "UTF-8"),
    ("q=abc%00def", "control"),
    ("q=dog&k=0", "between 1 and 100"),
    ("q=dog&k=101", "between 1 and 100"),
    ("q=dog&k=-5", "between 1 and 100"),
    ("q=dog&k=ten", "integer"),
    ("q=dog&k=1e3", "integer"),
])
def test_bad_queries_are_400_with_a_message(api, query, message):
    r = api[0].get("/api/search?" + query)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json" and message in r.json()["error"]


def test_longest_allowed_query_works(api):
    assert api[0].get("/api/search", params={"q": "dog " * 250}).status_code == 200


@pytest.mark.parametrize("url, status", [
    ("/api/search?q=dog&index=nope", 404),
    ("/api/videos/0123456789abcdef", 404),
    ("/media/0123456789abcdef", 404),
    ("/thumbs/0123456789abcdef", 404),
    ("/api/videos/xyz", 400),
    ("/media/ABCDEF0123456789", 400),
    ("/media/../index.json", 404),
    ("/media/..%2f..%2fetc%2fpasswd", 404),
    ("/media/%2e%2e%2f%2e%2e%2findex.json", 404),
    ("/media/%2e%2e", 400),
    ("/media/%252e%252e%252fvideos.jsonl", None),  # 400 or 404, as the client re-encodes it
    ("/media//etc/passwd", 404),
    ("/media/%2fetc%2fpasswd", 404),
    ("/thumbs/..%5c..%5cindex.json", 400),
    ("/media/clip0.mp4", 400),
    ("/media/sub%2fclip1.mp4", 404),
    ("/index.json", 404),
    ("/videos.jsonl", 404),
])
def test_unknown_ids_and_traversal_attempts_are_refused(api, url, status):
    r = api[0].get(url)
    assert r.status_code == status if status else 400 <= r.status_code < 500, (url, r.status_code, r.text)
    assert r.headers["content-type"] == "application/json" and r.json()["error"]
    assert b"root:" not in r.content and b"vop-search-index" not in r.content
    assert api[0].get("/api/health").status_code == 200  # still serving


def test_foreign_host_header_is_refused(api):
    r = api[0].get("/api/health", headers={"Host": "evil.example"})
    assert r.status_code == 400


def test_a_vanished_video_is_404_and_the_service_stays_up(built, tmp_path):
    videos, index = copy_built(built, tmp_path)
    encode(videos, index)
    client, _ = _client(index)
    with client:
        hit = client.get("/api/search", params={"q": "a square", "k": 1}).json()["results"][0]
        (videos / hit["path"]).unlink()
        for url in (hit["media_url"], hit["thumb_url"]):
            r = client.get(url)
            assert r.status_code == 404 and "no longer" in r.json()["error"]
        assert client.get(hit["video_url"]).json()["available"] is False
        assert client.get("/api/search", params={"q": "a square"}).status_code == 200
