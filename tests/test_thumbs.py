"""Review-page thumbnails made once (difpy_index.thumbs): the cache beside the catalog,
its invalidation by size/mtime/ctime, ``update --thumbnails`` and the report reusing it."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from conftest import write_image
from PIL import Image

from difpy_index import Index
from difpy_index.thumbs import THUMB_PX, ThumbCache, make_thumb, make_thumbs


def entries(cache: ThumbCache) -> list[Path]:
    return sorted(p for p in cache.folder.rglob("*") if p.is_file())


def tamper(cache: ThumbCache, path: bytes, marker: bytes) -> None:
    """Replace a cached thumbnail's picture, keeping its header: whoever shows ``marker``
    afterwards read the cache, not the image."""
    f = cache._file(path, THUMB_PX)
    head, _, _ = f.read_bytes().partition(b"\n")
    f.write_bytes(head + b"\n" + marker)


def test_cache_hit_miss_and_one_entry_per_file(tmp_path):
    imgs = [write_image(tmp_path / "img" / f"{i}.jpg", i, (400, 300)) for i in range(3)]
    paths = [os.fsencode(p) for p in imgs]
    cache = ThumbCache(tmp_path / "thumbs")
    first = make_thumbs(paths, processes=1, cache=cache)
    assert all(t.error is None and t.data and t.mime == "image/jpeg" for t in first.values())
    assert (first[paths[0]].width, first[paths[0]].height) == (400, 300)
    assert len(entries(cache)) == 3
    tamper(cache, paths[0], b"FROM-CACHE")
    again = make_thumbs(paths, processes=1, cache=cache)
    assert again[paths[0]].data == b"FROM-CACHE"
    assert again[paths[1]].data == first[paths[1]].data
    # a changed file misses: new bytes, a touched mtime, or a chmod (ctime only)
    for change in ("rewrite", "touch", "chmod"):
        tamper(cache, paths[0], b"FROM-CACHE")
        if change == "rewrite":
            write_image(imgs[0], 99, (400, 300))
        elif change == "touch":
            st = os.stat(paths[0])
            os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        else:
            time.sleep(0.01)
            os.chmod(paths[0], 0o600 if change == "chmod" else 0o644)
        got = make_thumbs(paths[:1], processes=1, cache=cache)[paths[0]]
        assert got.data != b"FROM-CACHE" and got.error is None, change
        assert len(entries(cache)) == 3  # replaced in place, never piled up
    # a thumbnail of another size is another entry
    make_thumbs(paths[:1], px=64, processes=1, cache=cache)
    assert len(entries(cache)) == 4


def test_errors_are_cached_and_unwritable_cache_is_harmless(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    cache = ThumbCache(tmp_path / "thumbs")
    t = make_thumbs([os.fsencode(bad)], processes=1, cache=cache)[os.fsencode(bad)]
    assert t.error and t.data is None
    hit = cache.get(os.fsencode(bad))
    assert hit is not None and hit.error == t.error
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    good = os.fsencode(write_image(tmp_path / "ok.png", 1))
    out = make_thumbs([good], processes=1, cache=ThumbCache(blocker / "thumbs"))
    assert out[good].error is None and out[good].data


def test_thumbnails_of_optional_formats(tmp_path):
    from difpy_index import decode

    made = 0
    if decode.PLUGINS[0].available():
        decode.register_plugins()
        Image.new("RGB", (300, 200), (200, 30, 40)).save(tmp_path / "a.heic")
        made += 1
    if decode.PLUGINS[2].available():
        import numpy as np
        from test_formats import photo, write_dng

        write_dng(tmp_path / "b.dng", np.asarray(photo(1, 240, 160)))
        made += 1
    if not made:
        pytest.skip("neither pillow-heif nor rawpy is installed")
    for p in sorted(tmp_path.iterdir()):
        t = make_thumb(os.fsencode(p))
        assert t.error is None and t.data, (p, t.error)
        with Image.open(__import__("io").BytesIO(t.data)) as img:
            assert max(img.size) <= THUMB_PX


def test_update_thumbnails_then_report_reuses_them(tmp_path):
    root = tmp_path / "lib"
    for i in range(4):
        write_image(root / f"{i}.png", i, (120, 90))
        write_image(root / f"{i}_copy.png", i, (120, 90))
    cat = tmp_path / "cat.sqlite"
    with Index.open(cat) as idx:
        rep = idx.update(root, processes=1, thumbnails=True)
        assert rep.thumbnails == 8 and rep.to_dict()["thumbnails"] == 8
        cache = idx.thumb_cache()
        assert cache.folder == Path(str(cat) + ".thumbs")
        assert len(entries(cache)) == 8
        marker = b"\x89PNG-cached-thumbnail"
        key = os.fsencode(root / "0.png")
        tamper(cache, key, marker)
        found = idx.search(similarity="duplicates")
        assert len(found.groups) == 4
        info = found.report(tmp_path / "page.html")
        assert info.previews_failed == 0
    page = (tmp_path / "page.html").read_text()
    assert base64.b64encode(marker).decode() in page  # the page took it from the cache
    assert len(entries(cache)) == 8  # nothing made twice


def test_cli_update_thumbnails_flag(tmp_path, cli):
    root = tmp_path / "lib"
    for i in range(3):
        write_image(root / f"{i}.jpg", i, (64, 48))
    res = cli("update", root, "--thumbnails", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["thumbnails"] == 3
    assert len(entries(ThumbCache.beside(cli.catalog))) == 3
    res = cli("update", root, "--json")
    assert json.loads(res.stdout)["thumbnails"] == 0


def test_thumbnails_of_removed_images_are_pruned(tmp_path):
    """Deleted, moved-away and forgotten images take their thumbnails with them; a killed
    writer's old temporary file goes too, a fresh one (a writer at work) stays."""
    lib, other = tmp_path / "lib", tmp_path / "other"
    for i in range(4):
        write_image(lib / f"{i}.png", i, (90, 60))
    write_image(other / "x.png", 9, (90, 60))
    cat = tmp_path / "cat.sqlite"
    with Index.open(cat) as idx:
        idx.update([lib, other], processes=1, thumbnails=True)
        cache = idx.thumb_cache()
        assert len(entries(cache)) == 5
        old_tmp = cache.folder / "ab" / "leftover-160.123.tmp"
        new_tmp = cache.folder / "ab" / "working-160.456.tmp"
        for t in (old_tmp, new_tmp):
            t.parent.mkdir(exist_ok=True)
            t.write_bytes(b"x")
        os.utime(old_tmp, (time.time() - 7200, time.time() - 7200))

        os.remove(lib / "0.png")
        rep = idx.update(lib, processes=1)
        assert rep.removed == 1
        assert cache.get(os.fsencode(lib / "1.png")) is not None
        names = {p.name for p in entries(cache)}
        assert len([n for n in names if not n.endswith(".tmp")]) == 4
        assert "working-160.456.tmp" in names and "leftover-160.123.tmp" not in names

        idx.forget([os.fsencode(lib / "1.png")])  # what an action does after a move
        assert len([p for p in entries(cache) if not p.name.endswith(".tmp")]) == 3

        idx.forget_roots([other])
        left = [p for p in entries(cache) if not p.name.endswith(".tmp")]
        assert len(left) == 2
        assert {cache.get(os.fsencode(lib / f"{i}.png")) is not None for i in (2, 3)} == {True}
