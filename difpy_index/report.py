"""A self-contained HTML review page of a search result (``search --report``).

People do not delete hundreds of photos on the word of an MSE number: the page shows each
group's key and members side by side, with a heat map of where each member differs from
its key, and lets the reader untick files to keep before downloading a plan for
``difpy-index apply``. One file, no network: thumbnails and heat maps are data URIs, the
CSS and the small script are inline. Without JavaScript the page is still a plain list of
images with the full plan pre-filled in a text box.

Thumbnails are made once from the original files, in worker processes (``pool.map_batches``,
the pool that decodes), and kept beside the catalog for the next page (``thumbs.py``); heat
maps come from the cached tensors the search compared.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .outputs import REPORT_MARK
from .paths import printable
from .plan import plan_dict
from .thumbs import THUMB_PX, Thumb, make_thumb, make_thumbs

__all__ = ["THUMB_PX", "ReportInfo", "Thumb", "heat_map", "make_thumb", "make_thumbs",
           "write_report"]

if TYPE_CHECKING:
    import numpy as np

    from .results import SearchResult

HEAT_SCALE = 2  #: heat map pixels per tensor pixel (a 50 px tensor -> 100 px map)
PAGE_GROUPS = 100  #: groups per page section


@dataclass(frozen=True, slots=True)
class ReportInfo:
    """What ``write_report`` wrote: counts as shown at the top of the page."""

    path: str
    groups: int
    files: int
    lower_quality: int
    bytes_freed: int
    pages: int
    previews_failed: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


# --------------------------------------------------------------------------- heat maps
_CMAP = (  # black -> purple -> orange -> pale yellow ("inferno"-like, readable in grey)
    (0.0, (0, 0, 4)), (0.35, (120, 28, 109)), (0.7, (237, 105, 37)), (1.0, (252, 255, 164)),
)


def oriented(member: np.ndarray, rotation: int, mirror: bool = False) -> np.ndarray:
    """``member`` as the search laid it onto its key: mirrored left-right first when
    ``mirror`` (``near``), then turned by ``rotation`` (``np.rot90``)."""
    import numpy as np

    out: np.ndarray = np.rot90(member[:, ::-1] if mirror else member, k=(rotation // 90) % 4)
    return out


def heat_map(key: np.ndarray, member: np.ndarray, rotation: int, scale: int = HEAT_SCALE,
             mirror: bool = False) -> bytes:
    """PNG of the per-pixel difference between ``key`` and ``member`` laid onto it
    (``oriented``: turned by ``rotation``, after a mirror when ``mirror``).

    The member is oriented the way the search oriented it, so the map shows what was
    measured. Brightness is the square root of the mean
    absolute channel difference: an exact duplicate is black, faint JPEG noise still shows.
    """
    import io

    import numpy as np
    from PIL import Image

    turned = oriented(member, rotation, mirror)
    diff = np.abs(key.astype(np.int16) - turned.astype(np.int16)).mean(axis=2) / 255.0
    v = np.sqrt(diff).ravel()
    xs = [a for a, _ in _CMAP]
    rgb = np.stack([np.interp(v, xs, [c[i] for _, c in _CMAP]) for i in range(3)], axis=1)
    arr = np.rint(rgb).astype(np.uint8).reshape(diff.shape[0], diff.shape[1], 3)
    img = Image.fromarray(arr, "RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


# --------------------------------------------------------------------------- model
@dataclass(slots=True)
class _Candidate:
    path: str
    key: str
    size: int


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _script_json(obj: Any) -> str:
    """JSON safe inside <script>: ASCII only (lone surrogates survive), no '</'."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")


def _tensors(result: SearchResult, paths: Sequence[str]) -> dict[str, np.ndarray]:
    idx = result._index
    out: dict[str, np.ndarray] = {}
    if idx is None:
        return out
    for p in paths:
        try:
            t = idx.tensor(p, result.px_size, result.recipe or None)
        except Exception:
            t = None
        if t is not None:
            out[p] = t
    return out


# --------------------------------------------------------------------------- writer
def write_report(result: SearchResult, path: str | os.PathLike[str], *,
                 processes: int | None = None, page_groups: int = PAGE_GROUPS,
                 thumb_px: int = THUMB_PX) -> ReportInfo:
    """Write the review page for ``result`` to ``path`` (atomically) and say what it holds."""
    from .outputs import check_report

    t0 = time.perf_counter()
    out = check_report(path)  # a new file or an earlier page of ours; never a photo
    lower = set(result.lower_quality)
    order: list[str] = []
    seen: set[str] = set()
    for g in result.groups:
        for p in (g.key, *(m.path for m in g.members)):
            if p not in seen:
                seen.add(p)
                order.append(p)
    idx = result._index
    thumbs = make_thumbs([os.fsencode(p) for p in order], thumb_px, processes,
                         idx.max_pixels if idx is not None else None,
                         idx.thumb_cache() if idx is not None else None)
    tensors = _tensors(result, order)

    # every file of every group is a candidate (a key becomes one when the reviewer keeps
    # another file of its group instead); only the lower-quality ones start ticked
    candidates: list[_Candidate] = []
    cand_of: dict[str, int] = {}
    for g in result.groups:
        for p in (g.key, *(m.path for m in g.members)):
            if p not in cand_of:
                cand_of[p] = len(candidates)
                candidates.append(_Candidate(p, g.key, thumbs[os.fsencode(p)].size))
    ticked = [c for c in candidates if c.path in lower]
    freed = sum(c.size for c in ticked)
    default_plan = plan_dict(result, [{"path": c.path, "key": c.key} for c in ticked])
    groups_data = [[cand_of[g.key], [cand_of[m.path] for m in g.members], _is_ref(result, g.key)]
                   for g in result.groups]

    pages = [result.groups[i : i + page_groups] for i in range(0, len(result.groups), page_groups)]
    writer = _Html(result, thumbs, tensors, lower, cand_of)
    failed = sum(1 for p in order if thumbs[os.fsencode(p)].error)
    title = "difpy-index review"
    parts: list[str] = [
        f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{REPORT_MARK}",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>{title}</title><style>{_CSS}</style></head><body>",
        "<a class=\"skip\" href=\"#plan\">Skip to the plan</a>",
        f"<header><h1>{title}</h1>",
        writer.summary(len(order), len(ticked), freed, failed),
        writer.toolbar(len(ticked), freed),
        "</header><main>",
        writer.nav(len(pages), "top"),
        "<div id=\"pages\">",
    ]
    gnum = 0
    for pnum, page in enumerate(pages, 1):
        first = gnum + 1
        parts.append(f"<section class=\"page\" id=\"p{pnum}\" aria-label=\"Groups {first} to "
                     f"{first + len(page) - 1}\"><h2>Groups {first}&ndash;{first + len(page) - 1}</h2>")
        for g in page:
            gnum += 1
            parts.append(writer.group(gnum, g))
        parts.append("</section>")
    if not pages:
        parts.append("<p>No groups: nothing to review.</p>")
    parts += [
        "</div>",
        writer.nav(len(pages), "bottom"),
        writer.plan_box(default_plan),
        "</main>",
        f"<script id=\"plan-data\" type=\"application/json\">"
        f"{_script_json({'plan': plan_dict(result, []), 'candidates': [[c.path, c.key, c.size] for c in candidates], 'groups': groups_data})}"
        "</script>",
        f"<script>{_JS}</script></body></html>\n",
    ]
    text = "".join(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        install_report(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ReportInfo(str(out), len(result.groups), len(order), len(ticked), freed,
                      len(pages), failed, round(time.perf_counter() - t0, 4))


def install_report(tmp: Path, out: Path) -> None:
    """Give the finished page its name: over an earlier page of ours, or where nothing is
    (never over anything else, even one that appeared while the page was being made)."""
    from .errors import UsageError
    from .fileops import rename_exact
    from .outputs import is_our_report

    if os.path.lexists(out):
        if not is_our_report(out):
            raise UsageError(f"refusing to overwrite {out}: it exists and is not a review page written by difpy-index")
        os.replace(tmp, out)
        return
    try:
        rename_exact(os.fsencode(tmp), os.fsencode(out))
    except FileExistsError:
        raise UsageError(f"refusing to overwrite {out}: it appeared while the page was written") from None


def _is_ref(result: SearchResult, path: str) -> bool:
    return any(path.startswith(r.rstrip("/") + "/") for r in result.reference)


def _file_url(path: str) -> str:
    """``file://`` URL of a local file (any byte in its name percent-encoded)."""
    from urllib.parse import quote

    return "file://" + quote(os.fsencode(path))


class _Html:
    """Renders the pieces of the page; every text that came from a file name is escaped."""

    def __init__(self, result: SearchResult, thumbs: dict[bytes, Thumb],
                 tensors: dict[str, np.ndarray], lower: set[str], cand_of: dict[str, int]) -> None:
        self.result = result
        self.thumbs = thumbs
        self.tensors = tensors
        self.lower = lower
        self.cand_of = cand_of
        self.box = 0

    def summary(self, files: int, candidates: int, freed: int, failed: int) -> str:
        r = self.result
        idx = r._index
        rows = [
            ("Groups", f"{len(r.groups):,}"),
            ("Files", f"{files:,}"),
            ("Lower quality", f"{candidates:,}"),
            ("Bytes freed", f"{_human(freed)} ({freed:,} bytes)"),
        ]
        params = (f"threshold (MSE) {r.threshold:g} · rotate {'on' if r.rotate else 'off'} · "
                  f"same dimensions {'on' if r.same_dim else 'off'} · px_size {r.px_size}")
        extra = f"<p class=\"warn\">{failed} file(s) could not be previewed.</p>" if failed else ""
        cat = f"catalog {html.escape(printable(str(idx.path)))} · " if idx is not None else ""
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        return (
            "<dl class=\"counts\">"
            + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in rows)
            + "</dl>"
            + f"<p class=\"meta\">{cat}{params} · written {stamp}</p>{extra}"
            + "<p class=\"meta\">Each group shows the file kept (the key, chosen by the keep rule "
            f"<code>{html.escape(r.keep)}</code>) and the files found to match it. Ticked files go "
            "into the plan; untick the ones you want to keep, or pick <em>keep this one "
            "instead</em> to keep another file of the group. Click a picture to open the file. "
            "Then download the plan and run <code>difpy-index apply PLAN.json --move-to "
            "DEST</code> (or <code>--delete</code>, <code>--trash</code>).</p>"
            + _LEGEND
        )

    def toolbar(self, ticked: int, freed: int) -> str:
        """Download, tick-all and the running count, at the top and always in view."""
        return (
            "<div class=\"toolbar\" role=\"toolbar\" aria-label=\"Plan\">"
            "<button type=\"button\" id=\"download\" hidden>Download plan</button> "
            "<button type=\"button\" id=\"tick-all\" hidden>Tick all</button> "
            "<button type=\"button\" id=\"untick-all\" hidden>Untick all</button> "
            f"<span>Ticked: <output id=\"ticked\">{ticked:,} files, {_human(freed)}</output></span> "
            "<a href=\"#plan\">plan as JSON</a></div>"
        )

    def nav(self, pages: int, where: str) -> str:
        if pages <= 1:
            return ""
        links = "".join(f"<li><a href=\"#p{i}\">{i}</a></li>" for i in range(1, pages + 1))
        return f"<nav class=\"pager\" aria-label=\"Pages ({where})\"><span>Page:</span><ol>{links}</ol></nav>"

    def _img(self, path: str, alt: str) -> str:
        t = self.thumbs[os.fsencode(path)]
        if t.data is None:
            return (f"<div class=\"thumb ph\" role=\"img\" aria-label=\"no preview: "
                    f"{html.escape(t.error or '')}\">no preview<br><small>"
                    f"{html.escape(t.error or '')}</small></div>")
        return (f"<a class=\"zoom\" href=\"{html.escape(_file_url(path))}\" target=\"_blank\" "
                f"rel=\"noopener\" title=\"open {html.escape(printable(path))}\">"
                f"<img class=\"thumb\" src=\"{_data_uri(t.mime, t.data)}\" alt=\"{html.escape(alt)}\" "
                f"loading=\"lazy\" decoding=\"async\"></a>")

    def _facts(self, path: str, m: Any) -> str:
        """Size, date and folder; for a member also its MSE and turn, and under ``near``
        the rule that matched (with its value, and the member it matched through)."""
        t = self.thumbs[os.fsencode(path)]
        dims = f"{t.width}&times;{t.height}" if t.width else "?"
        date = dt.datetime.fromtimestamp(t.mtime).strftime("%Y-%m-%d %H:%M") if t.mtime else "?"
        rows = [("Size", f"{dims} px, {_human(t.size)}"), ("Date", date),
                ("Folder", html.escape(printable(os.path.dirname(path))))]
        if m is not None:
            turn = (", mirrored" if getattr(m, "mirror", False) else "") + (
                f", turned {m.rotation}&deg;" if m.rotation else "")
            rows.append(("MSE", f"{m.mse:.4g}{turn}"))
            if getattr(m, "measure", None) not in (None, "mse"):
                rows.append(("Match", f"{html.escape(m.measure)} {m.value:.3f}"))
            if getattr(m, "via", None):
                rows.append(("Through", html.escape(printable(os.path.basename(m.via)))))
        return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"

    def group(self, n: int, g: Any) -> str:
        ref = _is_ref(self.result, g.key)
        folder = f" <span class=\"scope\">in {html.escape(printable(g.folder))}</span>" if g.folder else ""
        parts = [
            f"<section class=\"group\" id=\"g{n}\" aria-labelledby=\"g{n}h\">",
            f"<h3 id=\"g{n}h\">Group {n}: {len(g.members) + 1} files{folder}</h3><div class=\"row\">",
            self._card(n, 0, g.key, None, None, ref),
        ]
        key_t = self.tensors.get(g.key)
        for j, m in enumerate(g.members, 1):
            parts.append(self._card(n, j, m.path, m, key_t, ref))
        parts.append("</div></section>")
        return "".join(parts)

    def _card(self, n: int, j: int, path: str, m: Any, key_t: Any, ref: bool) -> str:
        """One file of group ``n`` (``j == 0``: its key): picture, difference map, the
        tick box, the 'keep this one instead' choice and the facts."""
        import numpy as np

        name = printable(os.path.basename(path))
        is_key = m is None
        lq = not is_key and path in self.lower
        ci = self.cand_of[path]
        cls = "card key kept" if is_key else f"card member{' lq' if lq else ''}"
        parts = [f"<figure class=\"{cls}\" data-i=\"{ci}\"><div class=\"pics\">",
                 self._img(path, f"{'kept' if is_key else 'match'}: {name}")]
        if not is_key:
            mem_t = self.tensors.get(path)
            if key_t is not None and mem_t is not None and key_t.shape == mem_t.shape:
                mirror = bool(getattr(m, "mirror", False))
                same = np.array_equal(key_t, oriented(mem_t, m.rotation, mirror))
                if same:
                    parts.append("<div class=\"heat same\" role=\"img\" aria-label=\"identical to "
                                 "the key at this size\">identical<br><small>no pixel differs"
                                 "</small></div>")
                else:
                    png = heat_map(key_t, mem_t, m.rotation, mirror=mirror)
                    parts.append(f"<figure class=\"heatbox\"><img class=\"heat\" "
                                 f"src=\"{_data_uri('image/png', png)}\" alt=\"where it differs from "
                                 f"the key: black is the same, brighter differs more\" loading=\"lazy\">"
                                 "<figcaption>difference</figcaption></figure>")
            else:
                parts.append("<div class=\"heat ph\" role=\"img\" aria-label=\"no heat map\">no heat map</div>")
        parts.append("</div><figcaption>")
        badge_keep = "reference, kept" if ref and is_key else "kept"
        parts.append(f"<span class=\"badge keep\">{badge_keep}</span><span class=\"badge lq\">"
                     "lower quality</span> ")
        title = html.escape(printable(path))
        if ref and is_key:  # a reference file: kept, never in a plan
            parts.append(f"<strong class=\"name\" title=\"{title}\">{html.escape(name)}</strong>")
        else:
            self.box += 1
            bid = f"c{self.box}"
            state = " checked" if lq else (" disabled" if is_key else "")
            parts.append(
                f"<input type=\"checkbox\" class=\"act\" id=\"{bid}\" data-i=\"{ci}\"{state}> "
                f"<label for=\"{bid}\"><strong class=\"name\" title=\"{title}\">"
                f"{html.escape(name)}</strong></label>"
            )
        if not ref:
            rid = f"k{n}_{j}"
            parts.append(
                f"<br><input type=\"radio\" class=\"keep\" name=\"keep-g{n}\" id=\"{rid}\" "
                f"data-g=\"{n - 1}\" data-i=\"{ci}\"{' checked' if is_key else ''} hidden> "
                f"<label class=\"keepsel\" for=\"{rid}\" hidden>keep this one instead</label>"
            )
        parts.append(self._facts(path, m))
        parts.append("</figcaption></figure>")
        return "".join(parts)

    def plan_box(self, default_plan: dict[str, Any]) -> str:
        text = html.escape(json.dumps(default_plan, ensure_ascii=True, indent=1))
        return (
            "<section id=\"plan\" aria-labelledby=\"planh\"><h2 id=\"planh\">Plan</h2>"
            "<noscript><p>JavaScript is off: the plan below lists every lower-quality file. "
            "Save it as PLAN.json (delete the entries of files you want to keep) and run "
            "<code>difpy-index apply PLAN.json --move-to DEST</code>.</p></noscript>"
            "<details id=\"plan-details\"><summary>Plan as JSON</summary>"
            f"<label for=\"plan-json\">The plan for <code>difpy-index apply</code></label>"
            f"<textarea id=\"plan-json\" rows=\"12\" readonly spellcheck=\"false\">{text}</textarea>"
            "</details></section>"
        )


_LEGEND = (
    "<p class=\"meta legend\">Difference maps: <span class=\"ramp\" aria-hidden=\"true\"></span> "
    "black where the file matches its key pixel for pixel (at the compared size), purple, "
    "orange, then pale yellow where it differs more; <span class=\"heat same mini\">identical"
    "</span> when no pixel differs.</p>"
)

_CSS = """
:root{color-scheme:light dark;--fg:#111;--bg:#fff;--mut:#555;--card:#f3f3f3;--acc:#0b57d0;--lq:#b3261e;--ok:#146c2e}
@media (prefers-color-scheme:dark){:root{--fg:#eee;--bg:#141414;--mut:#aaa;--card:#222;--acc:#8ab4f8;--lq:#f2b8b5;--ok:#6dd58c}}
body{font:15px/1.4 system-ui,sans-serif;color:var(--fg);background:var(--bg);margin:0 1rem 3rem}
h1{font-size:1.4rem;margin:.8rem 0 .4rem}h2{font-size:1.1rem}h3{font-size:1rem;margin:.2rem 0 .4rem}
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:.5rem;background:var(--bg);padding:.3rem}
a{color:var(--acc)}
:focus-visible{outline:3px solid var(--acc);outline-offset:2px}
.counts{display:flex;flex-wrap:wrap;gap:.4rem 1.6rem;margin:.4rem 0}.counts div{display:flex;gap:.4rem}
.counts dt{color:var(--mut)}.counts dd{margin:0;font-weight:600}
.meta{color:var(--mut);margin:.2rem 0}.warn{color:var(--lq)}
.pager ol{display:inline-flex;flex-wrap:wrap;gap:.3rem;list-style:none;padding:0;margin:0 0 0 .4rem}
.pager a{display:inline-block;min-width:1.8rem;text-align:center;padding:.1rem .3rem;border:1px solid var(--mut);border-radius:4px}
.group{border-top:1px solid var(--mut);padding:.6rem 0}
.row{display:flex;flex-wrap:wrap;gap:.8rem;align-items:flex-start}
.card{background:var(--card);margin:0;padding:.5rem;border-radius:6px;max-width:360px;border:2px solid transparent}
.card:not(.kept):has(input.act:checked){border-color:var(--lq)}
.pics{display:flex;gap:.4rem;align-items:flex-start}
.thumb{max-width:160px;max-height:160px;display:block}
.heat{width:100px;height:100px;image-rendering:pixelated;display:block}
.ph{width:120px;height:90px;display:flex;flex-direction:column;align-items:center;justify-content:center;text-align:center;border:1px dashed var(--mut);color:var(--mut);font-size:.8rem;overflow:hidden}
.heat.ph{width:100px;height:100px}
figcaption{font-size:.85rem;margin-top:.3rem;overflow-wrap:anywhere}
figcaption dl{display:grid;grid-template-columns:auto 1fr;gap:0 .5rem;margin:.2rem 0}
figcaption dt{color:var(--mut)}figcaption dd{margin:0}
.badge{font-size:.75rem;padding:0 .3rem;border-radius:3px;color:var(--bg)}
.badge.keep{background:var(--ok)}.badge.lq{background:var(--lq)}
input.act{width:1.1rem;height:1.1rem;vertical-align:middle}
label{cursor:pointer}
#plan textarea{width:100%;font:12px/1.3 ui-monospace,monospace;display:block}
button{font:inherit;padding:.3rem .8rem}
.toolbar{position:sticky;top:0;z-index:2;background:var(--bg);padding:.4rem 0;border-bottom:1px solid var(--mut);display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
.ramp{display:inline-block;width:8rem;height:.8rem;vertical-align:middle;background:linear-gradient(90deg,#000004 0%,#781c6d 35%,#ed6925 70%,#fcffa4 100%);border:1px solid var(--mut)}
.heat.same{width:100px;height:100px;display:flex;flex-direction:column;align-items:center;justify-content:center;text-align:center;border:2px solid var(--ok);color:var(--ok);font-weight:600}
.heat.same.mini{display:inline-block;width:auto;height:auto;padding:0 .3rem;font-size:.8rem}
.heatbox{margin:0}.heatbox figcaption{font-size:.7rem;color:var(--mut);margin:0;text-align:center}
.card.kept{border-color:var(--ok)}.card.kept .badge.lq,.card:not(.kept) .badge.keep{display:none}
.card.kept .keepsel{visibility:hidden}
a.zoom{display:block;cursor:zoom-in}
@supports selector(:has(a)){
 .page{display:none}.page:target{display:block}
 #pages:not(:has(.page:target)) .page:first-child{display:block}
}
"""

_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("plan-data").textContent);
  var cands = data.candidates, groups = data.groups;
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input.act"));
  var area = document.getElementById("plan-json");
  var ticked = document.getElementById("ticked");
  var keep = groups.map(function (g) { return g[0]; });  // the kept file of each group
  function human(n) {
    var u = ["B", "kB", "MB", "GB", "TB"], i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return i ? n.toFixed(1) + " " + u[i] : n + " B";
  }
  function boxesOf(i) {
    return boxes.filter(function (b) { return b.getAttribute("data-i") === String(i); });
  }
  function plan() {
    var on = {}, acts = [], bytes = 0, kept = [], seen = {};
    boxes.forEach(function (b) { if (b.checked && !b.disabled) on[b.getAttribute("data-i")] = true; });
    groups.forEach(function (g, gi) {
      var k = keep[gi];
      if (k !== g[0]) kept.push(cands[k][0]);
      [g[0]].concat(g[1]).forEach(function (f) {
        if (f === k || !on[f] || (g[2] && f === g[0])) return;
        acts.push({path: cands[f][0], key: cands[k][0]});
        if (!seen[f]) { seen[f] = true; bytes += cands[f][2]; }
      });
    });
    var p = {};
    for (var key in data.plan) p[key] = data.plan[key];
    p.keep = kept;
    p.actions = acts;
    return {plan: p, bytes: bytes};
  }
  function refresh() {
    var r = plan(), text = JSON.stringify(r.plan, null, 1);
    area.textContent = text;
    area.value = text;
    ticked.textContent = r.plan.actions.length.toLocaleString() + " files, " + human(r.bytes);
    document.documentElement.setAttribute("data-plan-actions", String(r.plan.actions.length));
  }
  function sync(box) {  // a file listed in several groups is one decision
    boxesOf(box.getAttribute("data-i")).forEach(function (b) { b.checked = box.checked; });
  }
  function choose(radio) {  // "keep this one instead": the old kept file becomes ticked
    var gi = Number(radio.getAttribute("data-g")), now = Number(radio.getAttribute("data-i"));
    var was = keep[gi];
    if (was === now) return;
    keep[gi] = now;
    boxesOf(was).forEach(function (b) { b.disabled = false; b.checked = true; });
    boxesOf(now).forEach(function (b) { b.checked = false; b.disabled = true; });
    var sec = radio.closest("section.group");
    Array.prototype.forEach.call(sec.querySelectorAll("figure.card"), function (c) {
      c.classList.toggle("kept", c.getAttribute("data-i") === String(now));
    });
    radio.checked = true;
  }
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (!t.classList) return;
    if (t.classList.contains("act")) { sync(t); refresh(); }
    if (t.classList.contains("keep")) { choose(t); refresh(); }
  });
  Array.prototype.forEach.call(document.querySelectorAll("input.keep, label.keepsel"),
    function (el) { el.hidden = false; });
  function setAll(v) { boxes.forEach(function (b) { if (!b.disabled) b.checked = v; }); refresh(); }
  var dl = document.getElementById("download");
  dl.hidden = false;
  dl.addEventListener("click", function () {
    var blob = new Blob([JSON.stringify(plan().plan, null, 1) + "\n"], {type: "application/json"});
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "difpy-plan.json";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 1000);
  });
  var ta = document.getElementById("tick-all"), ua = document.getElementById("untick-all");
  ta.hidden = false; ua.hidden = false;
  ta.addEventListener("click", function () { setAll(true); });
  ua.addEventListener("click", function () { setAll(false); });
  // Test and link hooks: #keep=k1_2 picks that file to keep; #untick=c1,c5 unticks boxes.
  var km = /(?:^#|&)keep=([^&]*)/.exec(location.hash);
  if (km) {
    decodeURIComponent(km[1]).split(",").forEach(function (id) {
      var r = document.getElementById(id);
      if (r && r.classList.contains("keep")) choose(r);
    });
  }
  var m = /(?:^#|&)untick=([^&]*)/.exec(location.hash);
  if (m) {
    decodeURIComponent(m[1]).split(",").forEach(function (id) {
      var b = document.getElementById(id);
      if (b && b.classList.contains("act")) { b.checked = false; sync(b); }
    });
  }
  refresh();
})();
"""
