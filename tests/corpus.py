#!/usr/bin/env python3
"""Ground-truth corpora of real photographs for the quality test and the benchmarks.

A corpus is a folder of image files whose duplicate structure is known exactly:

* **bases**: distinct pictures, each composed from the real photographs that scikit-image,
  scikit-learn and matplotlib ship in their wheels (a random crop and rescale of one photo,
  part of a second one blended in, a per-image light field, a tiled texture and a tone
  curve), so a handful of seed photos yields thousands of pictures that are not
  near-duplicates of each other (no two frame one photo within :data:`SAME_FRAMING`
  without a second photo showing through one of them);
* **planted edits** of some bases, made from the decoded base file as a user would:
  ``copy`` (byte copy), ``reencode`` (JPEG at another quality), ``format`` (PNG, WEBP, BMP
  or JPEG), ``resize``, ``rotate`` (90/180/270), ``noise`` (small Gaussian noise) and
  ``brightness`` (+-4..6 %; always its base's only copy);
* every other base is an **unrelated** image (a group of one); some of them are a second
  shot of another base's scene (panned and zoomed), the nearest unrelated pictures.

The manifest (JSON, beside the folder by default: ``OUT.manifest.json``) maps every file,
relative to the folder, to its base id and edit name (``original`` for the bases). The
whole corpus is a pure function of ``(n, seed, max_side)``, the seed photos and the Pillow
version: every base draws from its own random stream ``(seed, base id)``, so parallel
generation writes the same bytes as serial generation.

Usage::

    python tests/corpus.py OUT --n 400 --seed 1 [--max-side 1600] [--processes 2]

From Python (``tests/`` is on ``sys.path`` in the test-suite and the benchmarks)::

    import corpus
    m = corpus.make_corpus(tmp / "c", n=300, seed=1)
    pairs = corpus.truth_pairs(m, tmp / "c")   # {frozenset((path_a, path_b)): label}
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The real photographs used as seeds: (package, path inside it, kind). "photo" is colour,
#: "gray" a greyscale photo (coloured with a random two-tone map when used), "texture" a
#: fine-grained greyscale texture laid over the picture.
SEED_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("skimage", "data/astronaut.png", "photo"),
    ("skimage", "data/chelsea.png", "photo"),
    ("skimage", "data/coffee.png", "photo"),
    ("skimage", "data/motorcycle_left.png", "photo"),
    ("skimage", "data/rocket.jpg", "photo"),
    ("skimage", "data/hubble_deep_field.jpg", "photo"),
    ("skimage", "data/retina.jpg", "photo"),
    ("skimage", "data/ihc.png", "photo"),
    ("sklearn", "datasets/images/china.jpg", "photo"),
    ("sklearn", "datasets/images/flower.jpg", "photo"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "photo"),
    ("skimage", "data/camera.png", "gray"),
    ("skimage", "data/moon.png", "gray"),
    ("skimage", "data/coins.png", "gray"),
    ("skimage", "data/cell.png", "gray"),
    ("skimage", "data/clock_motion.png", "gray"),
    ("skimage", "data/brick.png", "texture"),
    ("skimage", "data/grass.png", "texture"),
    ("skimage", "data/gravel.png", "texture"),
)
SEED_PACKAGES = ("skimage", "sklearn", "matplotlib")

#: Planted edits and their relative frequency among the edited copies.
EDITS: dict[str, int] = {
    "copy": 3, "reencode": 2, "format": 2, "resize": 2, "rotate": 3, "noise": 1, "brightness": 1,
}
#: Edits that no threshold on the MSE can find without matching unrelated pictures.
UNREACHABLE = frozenset({"brightness"})
#: Share of bases that get edited copies, and how many copies they get.
EDITED_SHARE = 0.3
COPIES = (1, 1, 1, 2, 2, 3)
#: Share of bases that are a second shot of a recent base's scene (hard negatives: unrelated
#: by the ground truth, yet alike; one per scene, as two shots may land on the same view),
#: how far such a shot pans and zooms (fractions of the picture), and how much larger than
#: the picture a scene is composed.
SHOT_SHARE = 0.12
SHOT_MOVE = (0.15, 0.25)
SHOT_ZOOM = (0.0, 0.15)
SCENE_MARGIN = 1.5
#: Two bases that frame one photograph this alike (intersection over union of the
#: windows), neither with a second photo showing through, are one picture to a measure
#: blind to tone and colour (``-s near``: a crop of a few per cent, a tint and a texture):
#: the later one is composed again from another random stream (:func:`_distinct`).
SAME_FRAMING = 0.9

FOLDERS = (
    "", "camera", "camera/2019", "camera/2019/holiday", "phone/DCIM", "phone/DCIM/burst",
    "scans", "scans/old", "shared/from_anna", "export/web",
)
EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}
ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9, 5 / 4, 2.0)


class SeedPhotosMissing(RuntimeError):
    """scikit-image, scikit-learn or matplotlib (whose photos seed the corpus) is missing."""


@dataclass
class Entry:
    """One file of the corpus: which base it shows and how it was made from it."""

    base: int
    edit: str
    format: str
    width: int
    height: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """Ground truth of one corpus; ``files`` maps a path relative to the folder to its entry."""

    n: int
    seed: int
    max_side: int
    seed_photos: list[str]
    files: dict[str, Entry]

    def to_json(self) -> dict[str, Any]:
        return {"generator": "tests/corpus.py", "n": self.n, "seed": self.seed,
                "max_side": self.max_side, "seed_photos": self.seed_photos,
                "files": {k: asdict(v) for k, v in sorted(self.files.items())}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(data["n"], data["seed"], data["max_side"], list(data["seed_photos"]),
                   {k: Entry(**v) for k, v in data["files"].items()})

    def groups(self) -> dict[int, list[str]]:
        """Files per base id (the original first), bases with edited copies only."""
        by_base: dict[int, list[str]] = {}
        for path, e in sorted(self.files.items(), key=lambda kv: (kv[1].edit != "original", kv[0])):
            by_base.setdefault(e.base, []).append(path)
        return {b: ps for b, ps in sorted(by_base.items()) if len(ps) > 1}


def manifest_path(out: str | os.PathLike[str]) -> Path:
    """Where the manifest of the corpus in ``out`` goes: beside the folder, never inside."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest; ``path`` may also be the corpus folder itself."""
    p = Path(path)
    if p.is_dir():
        p = manifest_path(p)
    return Manifest.from_json(json.loads(p.read_text()))


def truth_pairs(manifest: Manifest, root: str | os.PathLike[str]) -> dict[frozenset[str], str]:
    """Every ground-truth pair of real paths, labelled by the edit that relates them.

    A pair with the original is labelled with the copy's edit; a pair of two copies is
    ``brightness`` if either is brightness-shifted (as unreachable as that edit), else
    ``derived-derived``.
    """
    out: dict[frozenset[str], str] = {}
    for members in manifest.groups().values():
        for a, b in itertools.combinations(members, 2):
            ea, eb = manifest.files[a].edit, manifest.files[b].edit
            if ea == "original" or eb == "original":
                label = eb if ea == "original" else ea
            elif "brightness" in (ea, eb):
                label = "brightness"
            else:
                label = "derived-derived"
            out[frozenset((os.path.realpath(Path(root, a)), os.path.realpath(Path(root, b))))] = label
    return out


# --------------------------------------------------------------------------- seed photos
def find_seed_photos() -> list[tuple[Path, str]]:
    """The seed photos installed here, in :data:`SEED_PHOTOS` order; raises if any is missing
    (a corpus must not silently change with the installed packages)."""
    found = []
    for pkg, rel, kind in SEED_PHOTOS:
        spec = importlib.util.find_spec(pkg)
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0], rel) if locations else None
        if path is None or not path.is_file():
            raise SeedPhotosMissing(
                f"seed photo {pkg}/{rel} not found: install scikit-image, scikit-learn and "
                "matplotlib (pip install -e '.[test]')")
        found.append((path, kind))
    return found


def seed_photos_available() -> bool:
    try:
        find_seed_photos()
    except SeedPhotosMissing:
        return False
    return True


_LOADED: list[tuple[str, np.ndarray]] | None = None


def _photos() -> list[tuple[str, np.ndarray]]:
    """Seed photos as float32 arrays: (h, w, 3) for colour, (h, w) for grey; cached per process."""
    global _LOADED
    if _LOADED is None:
        from PIL import Image

        loaded = []
        for path, kind in find_seed_photos():
            with Image.open(path) as im:
                im = im.convert("RGB" if kind == "photo" else "L")
                loaded.append((kind, np.asarray(im, dtype=np.float32)))
        _LOADED = loaded
    return _LOADED


# --------------------------------------------------------------------------- bases
def _window(shape: tuple[int, ...], w: int, h: int, rng: np.random.Generator
            ) -> tuple[float, float, float, float]:
    """A random window (x0, y0, x1, y1) of a photo of ``shape`` with aspect w/h, 35-100 % of
    the largest."""
    sh, sw = shape[:2]
    aspect = w / h
    full_w, full_h = (sh * aspect, sh) if sw / sh > aspect else (sw, sw / aspect)
    scale = rng.uniform(0.35, 1.0)
    cw, ch = full_w * scale, full_h * scale
    x0, y0 = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
    return (x0, y0, x0 + cw, y0 + ch)


def _resample(src: np.ndarray, box: tuple[float, float, float, float], w: int, h: int) -> np.ndarray:
    """The float32 region ``box`` of ``src`` ((h, w) or (h, w, 3)) resized to w x h."""
    from PIL import Image

    chans = [src] if src.ndim == 2 else [src[..., c] for c in range(3)]
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(c, dtype=np.float32), "F").resize(
        (w, h), Image.Resampling.BILINEAR, box=box)) for c in chans]
    return out[0] if src.ndim == 2 else np.stack(out, axis=-1)


def _ramp(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random dark-to-light colour ramp for a grey photo."""
    dark = rng.uniform(0, 90, 3).astype(np.float32)
    light = rng.uniform(160, 255, 3).astype(np.float32)
    return dark, light


def _layer(src: np.ndarray, box: tuple[float, float, float, float],
           ramp: tuple[np.ndarray, np.ndarray] | None, w: int, h: int) -> np.ndarray:
    """``box`` of ``src`` resized to w x h, a grey photo mapped onto its colour ``ramp``."""
    layer = _resample(src, box, w, h)
    if ramp is None:
        return layer
    dark, light = ramp
    return dark + layer[..., None] / 255.0 * (light - dark)


def _smooth_field(w: int, h: int, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """(h, w, 3) float32: a coarse random grid of values in [lo, hi], bicubically upsampled."""
    from PIL import Image

    gy, gx = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    grid = rng.uniform(lo, hi, (gy, gx, 3)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(grid[..., c], "F").resize(
        (w, h), Image.Resampling.BICUBIC)) for c in range(3)], axis=-1)


def base_array(seed: int, base: int, w: int, h: int, *, scene: int | None = None,
               shot: tuple[float, float, float] = (1.0, 0.0, 0.0), redraw: int = 0,
               ) -> np.ndarray:
    """uint8 (h, w, 3): the picture of base ``base``; a pure function of its arguments.

    With ``scene`` (a base id), the picture is one shot of that base's scene, composed on a
    canvas :data:`SCENE_MARGIN` times as large: ``shot`` = (zoom, dx, dy) frames a window
    ``zoom`` times the picture size, centred and moved by (dx, dy) picture sizes, as a second
    shot of the same scene (the camera panned and zoomed) would. Such shots are unrelated by
    the ground truth, and nearer to each other than most unrelated pictures. ``redraw``
    (:func:`_distinct`) composes it from another random stream.
    """
    if scene is None:
        img = _compose(np.random.default_rng(_stream(seed, base, redraw)), w, h)
    else:
        cw, ch = round(w * SCENE_MARGIN), round(h * SCENE_MARGIN)
        canvas = _compose(np.random.default_rng([seed, scene, 1]), cw, ch)
        zoom, dx, dy = shot
        ww, wh = w * zoom, h * zoom
        x0 = float(np.clip((cw - ww) / 2 + dx * w, 0, cw - ww))
        y0 = float(np.clip((ch - wh) / 2 + dy * h, 0, ch - wh))
        img = _resample(canvas, (x0, y0, x0 + ww, y0 + wh), w, h)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _stream(seed: int, base: int, redraw: int) -> list[int]:
    """The random stream a base is composed from (another one for each ``redraw``)."""
    return [seed, base, 1] if redraw == 0 else [seed, base, 1, redraw]


def _main_layer(rng: np.random.Generator, w: int, h: int
                ) -> tuple[int, tuple[float, float, float, float], Any, bool, bool]:
    """The first draws of a composed picture: its photograph, the window of it, the colour
    ramp (grey photos), whether it is mirrored and whether a second photo shows through.
    One function for :func:`_compose` and :func:`_distinct`."""
    photos = _photos()
    first = int(rng.choice([i for i, (k, _) in enumerate(photos) if k != "texture"]))
    kind, arr = photos[first]
    box = _window(arr.shape, w, h, rng)
    ramp = _ramp(rng) if kind == "gray" else None
    return first, box, ramp, bool(rng.random() < 0.5), bool(rng.random() < 0.7)


def _compose(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """float32 (h, w, 3) in [0, 255]: one picture composed from the seed photos."""
    photos = _photos()
    pictures = [i for i, (k, _) in enumerate(photos) if k != "texture"]
    textures = [i for i, (k, _) in enumerate(photos) if k == "texture"]
    first, box, ramp, mirror, blend = _main_layer(rng, w, h)
    img = _layer(photos[first][1], box, ramp, w, h)
    if mirror:
        img = img[:, ::-1]
    if blend:  # part of a second photo shows through
        second = int(rng.choice([i for i in pictures if i != first]))
        alpha = rng.uniform(0.2, 0.45)
        kind, arr = photos[second]
        box2 = _window(arr.shape, w, h, rng)
        img = (1 - alpha) * img + alpha * _layer(arr, box2, _ramp(rng) if kind == "gray" else None,
                                                 w, h)
    img = img * _smooth_field(w, h, rng, 0.55, 1.35)  # its own light and colour layout
    if rng.random() < 0.6:  # fine grain from a real texture, tiled at native scale
        tex = photos[int(rng.choice(textures))][1]
        th, tw = tex.shape
        ty, tx = int(rng.integers(0, th // 2)), int(rng.integers(0, tw // 2))
        tile = tex[ty : ty + th // 2, tx : tx + tw // 2]
        reps = (h // tile.shape[0] + 1, w // tile.shape[1] + 1)
        grain = np.tile(tile, reps)[:h, :w]
        img = img + rng.uniform(0.1, 0.3) * (grain - grain.mean())[..., None]
    gamma = rng.uniform(0.8, 1.25)
    gain = rng.uniform(0.85, 1.15, 3)
    offset = rng.uniform(-20, 20, 3)
    return np.clip(255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma * gain + offset, 0, 255)


# --------------------------------------------------------------------------- plan
@dataclass
class _Planned:
    path: str
    entry: Entry


def _size(rng: np.random.Generator, max_side: int) -> tuple[int, int]:
    """Long side log-uniform in [max_side / 8, max_side] (at least 160 px), varied aspect."""
    lo = max(160, max_side // 8)
    long = round(lo * (max_side / lo) ** rng.random()) if max_side > lo else max_side
    aspect = float(rng.choice(ASPECTS))
    w, h = long, max(16, round(long / aspect))
    return (h, w) if rng.random() < 0.3 else (w, h)


def _plan_base(seed: int, base: int, room: int, max_side: int,
               earlier: list[list[_Planned]]) -> list[_Planned]:
    """The original of ``base`` and (for some bases) up to ``room - 1`` edited copies; some
    bases are another shot of a recent earlier base's scene (:func:`base_array`)."""
    rng = np.random.default_rng([seed, base, 0])
    w, h = _size(rng, max_side)
    fmt = str(rng.choice(["JPEG", "PNG", "WEBP"], p=[0.75, 0.17, 0.08]))
    stem = f"P{seed:02d}_{base:05d}"
    params: dict[str, Any] = {"quality": int(rng.integers(78, 96))} if fmt in ("JPEG", "WEBP") else {}
    free = [g[0].entry for g in earlier[-8:] if "scene" not in g[0].entry.params]
    if free and rng.random() < SHOT_SHARE:  # a second shot of a recent base's scene
        like = free[int(rng.integers(0, len(free)))]
        w, h = like.width, like.height
        like.params.update(scene=like.base, shot=[1.0, 0.0, 0.0])  # that base: the first shot
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(*SHOT_MOVE)
        params["scene"] = like.base
        params["shot"] = [round(1 - rng.uniform(*SHOT_ZOOM), 4),
                          round(dist * float(np.cos(angle)), 4), round(dist * float(np.sin(angle)), 4)]
    out = [_Planned(f"{rng.choice(FOLDERS)}/{stem}{EXT[fmt]}".lstrip("/"),
                    Entry(base, "original", fmt, w, h, params))]
    if rng.random() >= EDITED_SHARE:
        return out
    copies = min(int(rng.choice(COPIES)), room - 1)
    # An unreachable copy is its base's only copy: one that the search does match may become
    # its group's key and leave out copies that match the original but not it (difPy's
    # groups are key-centred), which would blur the per-edit figures of the others.
    names = [e for e in EDITS if copies == 1 or e not in UNREACHABLE]
    weights = np.array([EDITS[e] for e in names], dtype=float)
    for j in range(copies):
        edit = str(rng.choice(names, p=weights / weights.sum()))
        dfmt, dw, dh, p = fmt, w, h, {}
        if edit == "reencode":
            dfmt, p = "JPEG", {"quality": int(rng.choice([50, 60, 70, 80, 90, 95]))}
        elif edit == "format":
            dfmt = str(rng.choice([f for f in EXT if f != fmt]))
            p = {"quality": 90} if dfmt in ("JPEG", "WEBP") else {}
        elif edit == "resize":
            factors = [0.5, 0.75, 1.5, 2.0] if max(w, h) <= max_side // 2 else [0.5, 0.75]
            f = float(rng.choice(factors))
            dw, dh, p = max(16, round(w * f)), max(16, round(h * f)), {"factor": f}
        elif edit == "rotate":
            angle = int(rng.choice([90, 180, 270]))
            p = {"angle": angle}
            if angle != 180:
                dw, dh = h, w
        elif edit == "noise":
            p = {"sigma": float(rng.choice([1.0, 2.0, 3.0]))}
        elif edit == "brightness":
            p = {"factor": float(rng.choice([0.94, 0.95, 1.05, 1.06]))}
        name = f"{stem}_{edit}{j}" if rng.random() < 0.5 else f"IMG_{seed:02d}{base:05d}{j}"
        out.append(_Planned(f"{rng.choice(FOLDERS)}/{name}{EXT[dfmt]}".lstrip("/"),
                            Entry(base, edit, dfmt, dw, dh, p)))
    return out


def plan(n: int, seed: int, max_side: int = 1600) -> list[list[_Planned]]:
    """Every file of the corpus, grouped by base, decided before any pixel is made."""
    groups: list[list[_Planned]] = []
    count = 0
    while count < n:
        g = _plan_base(seed, len(groups), n - count, max_side, groups)
        groups.append(g)
        count += len(g)
    return groups


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _distinct(groups: list[list[_Planned]], seed: int) -> None:
    """Give every base that would frame an earlier base's photograph within
    :data:`SAME_FRAMING`, neither blended with a second photo, another random stream
    (``params["redraw"]``), so that bases are distinct pictures as the ground truth says.
    In base order, so the corpus stays a pure function of its arguments; shots of a scene
    keep theirs (they are composed on the scene's canvas, hard negatives by design)."""
    framed: dict[int, list[tuple[float, ...]]] = {}
    for g in groups:
        e = g[0].entry
        if "scene" in e.params:
            continue
        redraw = 0
        while True:
            first, box, _, _, blend = _main_layer(
                np.random.default_rng(_stream(seed, e.base, redraw)), e.width, e.height)
            if blend or all(_overlap(box, b) < SAME_FRAMING for b in framed.get(first, [])):
                break
            redraw += 1
        if redraw:
            e.params["redraw"] = redraw
        if not blend:
            framed.setdefault(first, []).append(box)


# --------------------------------------------------------------------------- writing
def _save(img: Any, path: Path, fmt: str, quality: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "JPEG":
        img.save(path, "JPEG", quality=quality or 92)
    elif fmt == "WEBP":
        img.save(path, "WEBP", quality=quality or 90, method=2)
    elif fmt == "PNG":
        img.save(path, "PNG", compress_level=1)
    else:
        img.save(path, fmt)


def _write_group(args: tuple[list[_Planned], str, int]) -> None:
    """Write one base and its edited copies (derived from the decoded base file)."""
    from PIL import Image

    group, out, seed = args
    root = Path(out)
    orig = group[0]
    e = orig.entry
    opath = root / orig.path
    shot = e.params.get("shot", (1.0, 0.0, 0.0))
    pixels = base_array(seed, e.base, e.width, e.height, scene=e.params.get("scene"),
                        shot=(shot[0], shot[1], shot[2]), redraw=e.params.get("redraw", 0))
    _save(Image.fromarray(pixels, "RGB"), opath, e.format, e.params.get("quality"))
    if len(group) == 1:
        return
    with Image.open(opath) as im:
        src = im.convert("RGB")
    for j, item in enumerate(group[1:]):
        d, dpath = item.entry, root / item.path
        p = d.params
        rng = np.random.default_rng([seed, e.base, 2, j])
        if d.edit == "copy":
            dpath.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(opath, dpath)
            continue
        img = src
        if d.edit == "resize":
            img = src.resize((d.width, d.height), Image.Resampling.LANCZOS)
        elif d.edit == "rotate":
            img = src.transpose({90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
                                 270: Image.Transpose.ROTATE_270}[p["angle"]])
        elif d.edit in ("noise", "brightness"):
            a = np.asarray(src, dtype=np.float32)
            if d.edit == "noise":
                a = a + rng.normal(0.0, p["sigma"], a.shape)
            else:
                a = a * p["factor"]
            img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")
        _save(img, dpath, d.format, p.get("quality", 95))


def make_corpus(
    out: str | os.PathLike[str],
    n: int,
    seed: int = 1,
    *,
    max_side: int = 1600,
    processes: int | None = 1,
    manifest: str | os.PathLike[str] | None = None,
) -> Manifest:
    """Write an ``n``-file corpus into ``out`` (created; must be empty) and its manifest
    (default :func:`manifest_path`). ``processes`` > 1 generates in a pool: same bytes."""
    if n < 1:
        raise ValueError("n must be >= 1")
    photos = find_seed_photos()
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty")
    root.mkdir(parents=True, exist_ok=True)
    groups = plan(n, seed, max_side)
    _distinct(groups, seed)
    tasks = [(g, str(root), seed) for g in groups]
    procs = processes or os.cpu_count() or 1
    if procs > 1 and len(tasks) > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(min(procs, len(tasks))) as pool:
            for _ in pool.imap_unordered(_write_group, tasks, chunksize=4):
                pass
    else:
        for t in tasks:
            _write_group(t)
    m = Manifest(n, seed, max_side, [p.name for p, _ in photos],
                 {item.path: item.entry for g in groups for item in g})
    dest = Path(manifest) if manifest is not None else manifest_path(root)
    dest.write_text(json.dumps(m.to_json(), indent=1))
    return m


def list_files(root: str | os.PathLike[str]) -> list[str]:
    """Every file below ``root``, sorted, as paths relative to it (the manifest's keys)."""
    found = []
    for dirpath, _dirs, names in os.walk(root):
        found += [os.path.relpath(os.path.join(dirpath, f), root) for f in names]
    return sorted(found)


# --------------------------------------------------------------------------- tensors
def synthetic_tensors(
    n: int, seed: int = 0, px: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[bytes]]:
    """``n`` random uint8 (px, px, 3) tensors with widths, heights, byte sizes and paths, for
    scale benchmarks of the search core (uniform noise: every mean is alike, the worst case
    for pruning by brightness)."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 256, (n, px, px, 3), dtype=np.uint8)
    w = rng.integers(100, 120, n)
    h = rng.integers(100, 120, n)
    sizes = rng.integers(1, 10**6, n)
    return t, w, h, sizes, [b"/synthetic/%07d.jpg" % i for i in range(n)]


def summary(m: Manifest) -> dict[str, Any]:
    edits: dict[str, int] = {}
    fmts: dict[str, int] = {}
    for e in m.files.values():
        edits[e.edit] = edits.get(e.edit, 0) + 1
        fmts[e.format] = fmts.get(e.format, 0) + 1
    return {"files": len(m.files), "bases": len({e.base for e in m.files.values()}),
            "groups": len(m.groups()), "edits": dict(sorted(edits.items())),
            "formats": dict(sorted(fmts.items()))}


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder to create (must not hold files)")
    ap.add_argument("--n", type=int, default=400, help="number of files (default 400)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-side", type=int, default=1600, help="longest image side in px")
    ap.add_argument("--processes", type=int, default=None, help="default: every CPU")
    ap.add_argument("--manifest", type=Path, help="default: OUT.manifest.json beside OUT")
    a = ap.parse_args(list(argv) if argv is not None else None)
    t = time.perf_counter()
    try:
        m = make_corpus(a.out, a.n, a.seed, max_side=a.max_side, processes=a.processes,
                        manifest=a.manifest)
    except (SeedPhotosMissing, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(a.out), "manifest": str(a.manifest or manifest_path(a.out)),
                      "seconds": round(time.perf_counter() - t, 1), **summary(m)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
