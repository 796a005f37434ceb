#!/usr/bin/env python3
"""Ground-truth corpora of everyday edits of real photographs, for the ``near`` preset.

Where tests/corpus.py composes synthetic pictures from a few seed photos, this generator
keeps the photographs as they are: every **base** is a window of one real photograph (the
ones scikit-image, scikit-learn and matplotlib ship, plus the nature photographs of the
Debian package ``mate-backgrounds`` when it is installed and ``debian=True``). Windows of
one photograph barely overlap, so they are different pictures of the same scene: the
corpus is full of hard negatives by construction. On top of that:

* **edits** of some bases, made from the decoded base file as a user would, each at one or
  more strengths (the manifest's ``edit`` is the family, ``params`` the strength):
  ``reencode``, ``resize``, ``format``, ``rotate``, ``mirror`` (left-right or top-bottom),
  ``brightness``, ``contrast``, ``gamma``, ``grayscale``, ``saturation``, ``blur``,
  ``sharpen``, ``watermark`` (small text in a corner or a large one across), ``crop3`` and
  ``crop8`` (3 % / 8 % of each dimension cut, split unevenly between the two sides),
  ``letterbox`` (bars padding to another aspect) and ``screenshot`` (downscaled into a
  phone or desktop canvas with bars, saved as PNG);
* **hard negatives** that are *not* duplicates and get their own base id: ``overlap``
  (a window of the same photograph sharing about half of its area) and ``nearshot`` (a
  burst-like second shot: shifted by 15-25 %, turned by a few degrees, exposure changed);
  none is closer than a 15 % shift to any other window of its photograph (two second shots
  of one base, say).

The manifest (JSON beside the folder, ``OUT.manifest.json``, the format of tests/corpus.py)
maps every file to its base id and edit; ``truth_pairs`` gives every ground-truth pair
labelled by edit. The corpus is a pure function of ``(n_bases, seed, max_side, debian)``,
the photographs and the Pillow version.

Usage::

    python tests/near_corpus.py OUT --bases 300 --seed 1 [--debian] [--processes 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import SEED_PHOTOS, Entry, Manifest, list_files, load_manifest, manifest_path

__all__ = ["EDITS", "Entry", "Manifest", "list_files", "load_manifest", "make_corpus",
           "manifest_path", "photos_available", "truth_pairs"]

#: Real photographs shipped inside Python packages: (package, path, kind). Not the Hubble
#: deep field nor the retina scan: their windows are black sky or one orange texture, not
#: different pictures.
PACKAGE_PHOTOS: tuple[tuple[str, str, str], ...] = tuple(
    seed for seed in SEED_PHOTOS
    if seed[2] != "texture" and seed[1] not in {"data/hubble_deep_field.jpg", "data/retina.jpg"}
)
#: Debian package whose nature photographs (``/nature/`` folder) join with ``debian=True``.
DEBIAN_PACKAGE = "mate-backgrounds"

#: Edit families, their strengths (drawn uniformly) and relative frequency.
EDITS: dict[str, tuple[int, list[Any]]] = {
    "reencode": (2, [40, 60, 80]),
    "resize": (2, [0.4, 0.6, 1.5]),
    "format": (1, ["PNG", "WEBP"]),
    "rotate": (2, [90, 180, 270]),
    "mirror": (2, ["lr", "tb"]),
    "brightness": (2, [0.8, 0.87, 1.15, 1.25]),
    "contrast": (2, [0.75, 1.3]),
    "gamma": (2, [0.7, 0.8, 1.25, 1.4]),
    "grayscale": (2, ["L"]),
    "saturation": (2, [0.4, 1.6]),
    "blur": (1, [1.0, 2.0]),
    "sharpen": (1, [150, 250]),
    "watermark": (2, ["corner", "large"]),
    "crop3": (2, [0.03]),
    "crop8": (2, [0.08]),
    "letterbox": (2, ["16:9", "1:1", "9:16"]),
    "screenshot": (2, ["phone", "desktop"]),
}
#: Hard negatives: their own base ids, never duplicates of anything.
NEGATIVES = ("overlap", "nearshot")
#: How far a second shot's window is from its base's, as a share of its size; no hard
#: negative comes closer than the least of it to any window of the same photograph.
SHOT_SHIFT = (0.15, 0.25)
EDITED_SHARE = 0.6
COPIES = (1, 2, 3, 4)
NEGATIVE_SHARE = 0.12
#: Fine detail (grey levels RMS around a 5x5 mean, window seen at ~64 px) a base needs.
DETAIL_MIN = 3.0
EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


class PhotosMissing(RuntimeError):
    """scikit-image, scikit-learn or matplotlib (whose photos are the bases) is missing."""


# --------------------------------------------------------------------------- photographs
def _package_photos() -> list[tuple[str, Path, str]]:
    found = []
    for pkg, rel, kind in PACKAGE_PHOTOS:
        spec = importlib.util.find_spec(pkg)
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0], rel) if locations else None
        if path is None or not path.is_file():
            raise PhotosMissing(f"photo {pkg}/{rel} not found: install scikit-image, "
                                "scikit-learn and matplotlib (pip install -e '.[test]')")
        found.append((f"{pkg}/{rel}", path, kind))
    return found


def _debian_photos() -> list[tuple[str, Path, str]]:
    """The nature photographs of DEBIAN_PACKAGE, found through dpkg (none if absent)."""
    try:
        out = subprocess.run(["dpkg-query", "-L", DEBIAN_PACKAGE], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    files = sorted(p for p in out.split("\n") if "/nature/" in p and p.endswith(".jpg"))
    return [(f"{DEBIAN_PACKAGE}:{os.path.basename(p)}", Path(p), "photo") for p in files]


def photos(debian: bool) -> list[tuple[str, Path, str]]:
    return _package_photos() + (_debian_photos() if debian else [])


def photos_available() -> bool:
    try:
        _package_photos()
    except PhotosMissing:
        return False
    return True


_CACHE: dict[str, np.ndarray] = {}


def _load(name: str, path: Path, kind: str) -> np.ndarray:
    """uint8 (h, w, 3), cached per process; grey photos stay grey in three channels."""
    if name not in _CACHE:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("L" if kind == "gray" else "RGB").convert("RGB")
            _CACHE[name] = np.asarray(im)
    return _CACHE[name]


# --------------------------------------------------------------------------- plan
@dataclass
class _Planned:
    path: str
    entry: Entry
    source: int  # index into the photo list
    box: tuple[float, float, float, float]  # window in the photo (x0, y0, x1, y1)


def _textured(grey: np.ndarray, box: tuple[float, ...]) -> bool:
    """A window worth calling a photograph: not flat, not mostly black, and with fine
    detail (bokeh-only or sky-only windows of one photo look alike: not distinct pictures)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    step = max(1, min(x1 - x0, y1 - y0) // 64)
    win = grey[y0:y1:step, x0:x1:step]
    if win.shape[0] < 8 or win.shape[1] < 8:
        return False
    pad = np.pad(win, 2, mode="edge")
    blur = sum(pad[i : i + win.shape[0], j : j + win.shape[1]]
               for i in range(5) for j in range(5)) / 25.0
    detail = float(np.sqrt(((win - blur) ** 2).mean()))
    return float(win.std()) >= 24 and float((win < 20).mean()) < 0.4 and detail >= DETAIL_MIN


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller area of two windows."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / small if small > 0 else 1.0


def _shift(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """How far apart two windows of the same size are, as a share of their size (inf for
    windows of different sizes: ``_overlap`` judges those)."""
    wa, ha, wb, hb = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    if abs(wa - wb) > 1e-6 * wa or abs(ha - hb) > 1e-6 * ha:
        return float("inf")
    return float(np.hypot((a[0] - b[0]) / wa, (a[1] - b[1]) / ha))


def _windows(rng: np.random.Generator, grey: np.ndarray, count: int) -> list[tuple[float, ...]]:
    """Up to ``count`` textured windows of a photo on a jittered grid, barely overlapping."""
    h, w = grey.shape
    g = max(1, int(np.ceil(np.sqrt(count))))
    cw, ch = w / g, h / g
    cells = [(i, j) for i in range(g) for j in range(g)]
    rng.shuffle(cells)
    out: list[tuple[float, ...]] = []
    for i, j in itertools.chain.from_iterable(itertools.repeat(cells, 4)):
        if len(out) == count:
            break
        fw, fh = rng.uniform(0.8, 1.0, 2)
        bw, bh = cw * fw, ch * fh
        aspect = float(rng.choice([1.0, 4 / 3, 3 / 2, 3 / 4]))
        if bw / bh > aspect:
            bw = bh * aspect
        else:
            bh = bw / aspect
        x0 = i * cw + rng.uniform(0, cw - bw)
        y0 = j * ch + rng.uniform(0, ch - bh)
        box = (x0, y0, x0 + bw, y0 + bh)
        taken = {(int(b[0] // cw), int(b[1] // ch)) for b in out}
        if (i, j) not in taken and _textured(grey, box):
            out.append(box)
    return out


def plan(n_bases: int, seed: int, max_side: int = 900, debian: bool = False) -> list[list[_Planned]]:
    """Every file, grouped by base, decided before any pixel is made."""
    srcs = photos(debian)
    rng = np.random.default_rng([seed, 0])
    greys = [_load(*s).mean(axis=2) for s in srcs]
    sizes = [(g.shape[1], g.shape[0]) for g in greys]
    # windows per photograph in proportion to its area (at least 2, large ones more)
    area = np.array([w * h for w, h in sizes], dtype=float)
    share = np.maximum(2, np.round(n_bases * area / area.sum())).astype(int)
    while share.sum() > n_bases:
        share[int(np.argmax(share))] -= 1
    while share.sum() < n_bases:
        share[int(rng.integers(len(share)))] += 1
    boxes: list[tuple[int, tuple[float, ...]]] = []
    for s, (grey, k) in enumerate(zip(greys, share, strict=True)):
        boxes += [(s, b) for b in _windows(rng, grey, int(k))]
    order = rng.permutation(len(boxes))
    groups: list[list[_Planned]] = []
    names, weights = list(EDITS), np.array([v[0] for v in EDITS.values()], dtype=float)
    for base, bi in enumerate(order):
        src, box = boxes[bi]
        r = np.random.default_rng([seed, base, 0])
        bw, bh = box[2] - box[0], box[3] - box[1]
        long = int(r.integers(max(200, max_side // 2), max_side + 1))
        w, h = (long, max(16, round(long * bh / bw))) if bw >= bh else (max(16, round(long * bw / bh)), long)
        fmt = str(r.choice(["JPEG", "PNG", "WEBP"], p=[0.8, 0.15, 0.05]))
        stem = f"N{seed:02d}_{base:05d}"
        folder = str(r.choice(["", "camera", "phone/DCIM", "shared", "edits", "web"]))
        entry = Entry(base, "original", fmt, w, h, {"source": srcs[src][0], "quality": 90})
        group = [_Planned(f"{folder}/{stem}{EXT[fmt]}".lstrip("/"), entry, src, box)]
        if r.random() < EDITED_SHARE:
            for j in range(int(r.choice(COPIES))):
                edit = str(r.choice(names, p=weights / weights.sum()))
                strength = EDITS[edit][1][int(r.integers(len(EDITS[edit][1])))]
                dfmt = {"format": strength, "screenshot": "PNG"}.get(edit, "JPEG")
                if edit == "format" and strength == fmt:
                    dfmt = "JPEG"
                p = {"strength": strength if not isinstance(strength, np.generic) else strength.item()}
                sub = str(r.choice(["", "edits", "web", "shared"]))
                group.append(_Planned(f"{sub}/{stem}_{edit}{j}{EXT[dfmt]}".lstrip("/"),
                                      Entry(base, edit, dfmt, 0, 0, p), src, box))
        groups.append(group)
    # hard negatives: new base ids next to an existing window of the same photograph
    nb = len(groups)
    for k in range(round(NEGATIVE_SHARE * n_bases)):
        r = np.random.default_rng([seed, nb + k, 0])
        of = int(r.integers(nb))
        src, box = groups[of][0].source, groups[of][0].box
        kind = NEGATIVES[k % len(NEGATIVES)]
        bw, bh = box[2] - box[0], box[3] - box[1]
        pw, ph = sizes[src]
        if kind == "overlap":  # share about half of the area
            dx, dy = (0.5 * bw, 0.0) if r.random() < 0.5 else (0.0, 0.5 * bh)
        else:  # a second shot: shifted 15-25 %, turned a little
            ang = r.uniform(0, 2 * np.pi)
            mag = r.uniform(*SHOT_SHIFT)
            dx, dy = mag * bw * np.cos(ang), mag * bh * np.sin(ang)
        # the side that keeps the whole shift inside the photograph (else skip this one)
        x0, y0 = box[0] + dx, box[1] + dy
        if not (0 <= x0 <= pw - bw and 0 <= y0 <= ph - bh):
            x0, y0 = box[0] - dx, box[1] - dy
        if not (0 <= x0 <= pw - bw and 0 <= y0 <= ph - bh):
            continue
        nbox = (x0, y0, x0 + bw, y0 + bh)
        if any(_overlap(nbox, g[0].box) > 0.9 or _shift(nbox, g[0].box) < SHOT_SHIFT[0]
               for g in groups if g[0].source == src):
            # (nearly) the same window as a picture already in the corpus, or closer to
            # one (another second shot of the same base, say) than a second shot is to
            # its base: not a clear negative
            continue
        o = groups[of][0].entry
        params = {"source": o.params["source"], "quality": 90, "of": of}
        if kind == "nearshot":
            params |= {"angle": float(r.uniform(2, 4) * r.choice([-1, 1])),
                       "exposure": float(r.uniform(0.9, 1.1))}
        stem = f"N{seed:02d}_{nb + k:05d}"
        groups.append([_Planned(f"burst/{stem}_{kind}.jpg", Entry(nb + k, kind, "JPEG", o.width,
                                o.height, params), src, nbox)])
    return groups


# --------------------------------------------------------------------------- edits
def _save(img: Any, path: Path, fmt: str, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "JPEG":
        img.save(path, "JPEG", quality=quality)
    elif fmt == "WEBP":
        img.save(path, "WEBP", quality=quality, method=2)
    else:
        img.save(path, "PNG", compress_level=1)


def _render(src: np.ndarray, box: tuple[float, ...], w: int, h: int, angle: float = 0.0) -> Any:
    from PIL import Image

    im = Image.fromarray(src)
    if angle:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        im = im.rotate(angle, resample=Image.Resampling.BICUBIC, center=(cx, cy))
    return im.resize((w, h), Image.Resampling.LANCZOS, box=box)


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=max(8, size))


def apply_edit(img: Any, edit: str, strength: Any, rng: np.random.Generator) -> tuple[Any, int]:
    """One everyday edit of a Pillow RGB image; returns the image and the JPEG quality."""
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

    w, h = img.size
    quality = 90
    if edit == "reencode":
        quality = int(strength)
    elif edit == "resize":
        img = img.resize((max(16, round(w * strength)), max(16, round(h * strength))),
                         Image.Resampling.LANCZOS)
    elif edit == "rotate":
        img = img.transpose({90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
                             270: Image.Transpose.ROTATE_270}[int(strength)])
    elif edit == "mirror":
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT if strength == "lr"
                            else Image.Transpose.FLIP_TOP_BOTTOM)
    elif edit == "brightness":
        img = ImageEnhance.Brightness(img).enhance(float(strength))
    elif edit == "contrast":
        img = ImageEnhance.Contrast(img).enhance(float(strength))
    elif edit == "gamma":
        lut = [min(255, round(255 * (i / 255) ** float(strength))) for i in range(256)] * 3
        img = img.point(lut)
    elif edit == "grayscale":
        img = img.convert("L")
    elif edit == "saturation":
        img = ImageEnhance.Color(img).enhance(float(strength))
    elif edit == "blur":
        img = img.filter(ImageFilter.GaussianBlur(float(strength) * max(w, h) / 600))
    elif edit == "sharpen":
        img = img.filter(ImageFilter.UnsharpMask(radius=2, percent=int(strength), threshold=2))
    elif edit == "watermark":
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        if strength == "corner":
            size = max(w, h) // 28
            draw.text((w * 0.62, h * 0.9), "(c) photo 2026", font=_font(size),
                      fill=(255, 255, 255, 200))
        else:
            size = max(w, h) // 9
            draw.text((w * 0.08, h * 0.4), "SAMPLE", font=_font(size), fill=(255, 255, 255, 110))
        img = Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")
    elif edit in ("crop3", "crop8"):
        cut_w, cut_h = w * float(strength), h * float(strength)
        a, b = rng.uniform(0.2, 0.8, 2)
        img = img.crop((round(cut_w * a), round(cut_h * b),
                        w - round(cut_w * (1 - a)), h - round(cut_h * (1 - b))))
    elif edit == "letterbox":
        aw, ah = map(int, str(strength).split(":"))
        if w * ah > h * aw:  # wider than the target: bars top and bottom
            cw, ch = w, round(w * ah / aw)
        else:
            cw, ch = round(h * aw / ah), h
        cw, ch = max(cw, w), max(ch, h)
        if (cw, ch) == (w, h):  # already that aspect: pad the short side by 20 %
            cw, ch = (w, round(h * 1.2)) if w >= h else (round(w * 1.2), h)
        colour = (0, 0, 0) if rng.random() < 0.7 else (255, 255, 255)
        canvas = Image.new("RGB", (cw, ch), colour)
        canvas.paste(img, ((cw - w) // 2, (ch - h) // 2))
        img = canvas
    elif edit == "screenshot":
        cw, ch = (720, 1520) if strength == "phone" else (1366, 768)
        scale = min(cw * 0.96 / w, ch * 0.8 / h)
        small = img.resize((max(16, round(w * scale)), max(16, round(h * scale))),
                           Image.Resampling.BILINEAR)
        grey = int(rng.choice([0, 18, 240, 255]))
        canvas = Image.new("RGB", (cw, ch), (grey, grey, grey))
        canvas.paste(small, ((cw - small.width) // 2, (ch - small.height) // 2))
        img = canvas
    elif edit != "format":
        raise ValueError(f"unknown edit {edit}")
    return img, quality


def _write_group(args: tuple[list[_Planned], str, int, bool]) -> list[tuple[str, int, int]]:
    """Write one base (or negative) and its edits; returns (path, width, height) of each."""
    from PIL import Image

    group, out, seed, debian = args
    srcs = photos(debian)
    root = Path(out)
    first = group[0]
    e = first.entry
    name, path, kind = srcs[first.source]
    arr = _load(name, path, kind)
    img = _render(arr, first.box, e.width, e.height, float(e.params.get("angle", 0.0)))
    if "exposure" in e.params:
        from PIL import ImageEnhance

        img = ImageEnhance.Brightness(img).enhance(e.params["exposure"])
    opath = root / first.path
    _save(img, opath, e.format)
    sizes = [(first.path, img.width, img.height)]
    if len(group) == 1:
        return sizes
    with Image.open(opath) as im:
        src = im.convert("RGB")
    for j, item in enumerate(group[1:]):
        rng = np.random.default_rng([seed, e.base, 2, j])
        edited, quality = apply_edit(src, item.entry.edit, item.entry.params["strength"], rng)
        _save(edited, root / item.path, item.entry.format, quality)
        sizes.append((item.path, edited.width, edited.height))
    return sizes


def make_corpus(out: str | os.PathLike[str], n_bases: int, seed: int = 1, *,
                max_side: int = 900, debian: bool = False, processes: int | None = 1) -> Manifest:
    """Write the corpus into ``out`` (created; must be empty) and its manifest beside it."""
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty")
    root.mkdir(parents=True, exist_ok=True)
    groups = plan(n_bases, seed, max_side, debian)
    tasks = [(g, str(root), seed, debian) for g in groups]
    procs = processes or os.cpu_count() or 1
    if procs > 1 and len(tasks) > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(min(procs, len(tasks))) as pool:
            written = pool.map(_write_group, tasks, chunksize=4)
    else:
        written = [_write_group(t) for t in tasks]
    dims = {p: (w, h) for ws in written for p, w, h in ws}
    files = {}
    for g in groups:
        for item in g:
            item.entry.width, item.entry.height = dims[item.path]
            files[item.path] = item.entry
    m = Manifest(n_bases, seed, max_side, [s[0] for s in photos(debian)], files)
    data = m.to_json() | {"generator": "tests/near_corpus.py", "debian": debian}
    manifest_path(root).write_text(json.dumps(data, indent=1))
    return m


def label(entry: Entry) -> str:
    """The per-edit label of a pair with the original: family and strength."""
    s = entry.params.get("strength")
    return entry.edit if s is None or len(EDITS[entry.edit][1]) == 1 else f"{entry.edit} {s}"


def truth_pairs(manifest: Manifest, root: str | os.PathLike[str],
                detailed: bool = False) -> dict[frozenset[str], str]:
    """Every ground-truth pair of real paths, labelled by edit (``detailed``: with strength).

    A pair of two edits of one base is ``derived-derived``.
    """
    out: dict[frozenset[str], str] = {}
    for members in manifest.groups().values():
        for a, b in itertools.combinations(members, 2):
            ea, eb = manifest.files[a], manifest.files[b]
            if "original" in (ea.edit, eb.edit):
                e = eb if ea.edit == "original" else ea
                lab = label(e) if detailed else e.edit
            else:
                lab = "derived-derived"
            out[frozenset((os.path.realpath(Path(root, a)), os.path.realpath(Path(root, b))))] = lab
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder to create (must not hold files)")
    ap.add_argument("--bases", type=int, default=300, help="number of distinct pictures")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-side", type=int, default=900)
    ap.add_argument("--debian", action="store_true", help=f"add {DEBIAN_PACKAGE}'s photographs")
    ap.add_argument("--processes", type=int, default=None)
    a = ap.parse_args(argv)
    t = time.perf_counter()
    try:
        m = make_corpus(a.out, a.bases, a.seed, max_side=a.max_side, debian=a.debian,
                        processes=a.processes)
    except (PhotosMissing, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    edits: dict[str, int] = {}
    for e in m.files.values():
        edits[e.edit] = edits.get(e.edit, 0) + 1
    print(json.dumps({"out": str(a.out), "files": len(m.files), "edits": dict(sorted(edits.items())),
                      "seconds": round(time.perf_counter() - t, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
