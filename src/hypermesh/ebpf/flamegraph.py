"""A self-contained interactive flame graph (SVG) from folded stacks.

The SVG carries its own script and style and loads nothing: it opens from a file, offline, in any
browser. Click a frame to zoom into it (its ancestors stay, spanning the width), click the root or
"Reset zoom" to go back; "Search" (or Ctrl-F, or ``?s=TEXT`` in the URL) highlights every frame whose
name matches a regular expression and shows the share of samples they cover; hovering shows a frame's
name, samples and share at the bottom, and as the frame's tooltip.

Frames are laid out as FlameGraph does: the root at the bottom, callees above callers, siblings in
alphabetical order (the x axis is not time), widths proportional to samples. Frames named with
FlameGraph's annotations are coloured by kind: ``_[k]`` kernel, ``_[j]`` JIT; ``[lost ...]`` and
``[unknown]`` frames stand out in grey so what could not be sampled or named is seen, not hidden.
"""

from __future__ import annotations

import zlib
from xml.sax.saxutils import escape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["parse_folded", "render_svg"]

WIDTH = 1200
FRAME_HEIGHT = 16
PAD_TOP = 50
PAD_BOTTOM = 36
SIDE = 10
MIN_WIDTH_PX = 0.1  # narrower frames are left out (their samples still count in their parents)
FONT_PX = 12
CHAR_PX = 7.0  # Verdana-ish average at 12 px, for cutting names to fit


class _Node:
    __slots__ = ("children", "name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0
        self.children: dict[str, _Node] = {}


def parse_folded(text: str) -> list[tuple[list[str], int]]:
    """FlameGraph's folded format: ``frame;frame;frame count`` a line (lines that do not parse are skipped)."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        out.append((stack.split(";"), int(count)))
    return out


def _color(name: str) -> str:
    if name.startswith("[lost") or name.startswith("[unknown") or "+0x" in name:
        return "rgb(160,160,160)"
    h = zlib.crc32(name.encode())
    a, b = (h & 0xFF) / 255, ((h >> 8) & 0xFF) / 255
    if name.endswith("_[k]"):
        return f"rgb({int(200 + 55 * a)},{int(90 + 60 * b)},40)"
    if name.endswith("_[j]"):
        return f"rgb({int(50 + 60 * a)},{int(170 + 60 * b)},{int(50 + 40 * a)})"
    return f"rgb({int(205 + 50 * a)},{int(80 + 130 * b)},{int(55 * a)})"


def _fit(name: str, width: float) -> str:
    chars = int((width - 6) / CHAR_PX)
    if chars < 3:
        return ""
    return name if len(name) <= chars else name[: chars - 2] + ".."


def render_svg(stacks: Iterable[tuple[list[str], int]], title: str = "Flame graph", subtitle: str = "") -> str:
    root = _Node("all")
    for frames, count in stacks:
        if count <= 0:
            continue
        root.value += count
        node = root
        for frame in frames:
            node = node.children.setdefault(frame, _Node(frame))
            node.value += count
    depth = _depth(root)
    height = PAD_TOP + (depth + 1) * FRAME_HEIGHT + PAD_BOTTOM
    usable = WIDTH - 2 * SIDE
    scale = usable / root.value if root.value else 0.0
    parts: list[str] = []
    # (node, depth, x in samples): iterative, stacks can be 127 + 127 frames deep
    todo: list[tuple[_Node, int, int]] = [(root, 0, 0)]
    while todo:
        node, level, x = todo.pop()
        w = node.value * scale
        if w < MIN_WIDTH_PX and node is not root:
            continue
        y = height - PAD_BOTTOM - (level + 1) * FRAME_HEIGHT
        share = 100.0 * node.value / root.value if root.value else 0.0
        label = f"{node.name} ({node.value:,} samples, {share:.2f}%)"
        name = escape(node.name, {'"': "&quot;"})
        parts.append(
            f'<g class="f" data-n="{name}" data-v="{node.value}" data-x="{x}" data-d="{level}">'
            f"<title>{escape(label)}</title>"
            f'<rect x="{SIDE + x * scale:.2f}" y="{y}" width="{w:.2f}" height="{FRAME_HEIGHT - 1}" '
            f'fill="{"rgb(240,200,200)" if node is root else _color(node.name)}" rx="2"/>'
            f'<text x="{SIDE + x * scale + 3:.2f}" y="{y + FRAME_HEIGHT - 4}">{escape(_fit(node.name, w))}</text></g>'
        )
        child_x = x
        children = []
        for child_name in sorted(node.children):
            child = node.children[child_name]
            children.append((child, level + 1, child_x))
            child_x += child.value
        todo.extend(reversed(children))
    return _document(parts, height, root.value, title, subtitle)


def _depth(root: _Node) -> int:
    deepest, todo = 0, [(root, 0)]
    while todo:
        node, level = todo.pop()
        deepest = max(deepest, level)
        todo.extend((c, level + 1) for c in node.children.values())
    return deepest


def _document(parts: list[str], height: int, total: int, title: str, subtitle: str) -> str:
    return f"""<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" \
xmlns="http://www.w3.org/2000/svg" data-total="{total}" data-side="{SIDE}" data-width="{WIDTH - 2 * SIDE}">
<style>
text {{ font-family: Verdana, sans-serif; font-size: {FONT_PX}px; fill: rgb(0,0,0); }}
#title {{ font-size: 17px; text-anchor: middle; }}
#subtitle {{ fill: rgb(90,90,90); text-anchor: middle; }}
.f {{ cursor: pointer; }}
.f text {{ pointer-events: none; }}
.f:hover rect {{ stroke: rgb(0,0,0); stroke-width: 0.5; }}
.hidden {{ display: none; }}
.button {{ cursor: pointer; fill: rgb(0,0,160); }}
.button:hover {{ text-decoration: underline; }}
</style>
<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="rgb(248,248,240)"/>
<text id="title" x="{WIDTH / 2}" y="22">{escape(title)}</text>
<text id="subtitle" x="{WIDTH / 2}" y="40">{escape(subtitle)}</text>
<text id="reset" class="button hidden" x="{SIDE}" y="22">Reset zoom</text>
<text id="search" class="button" x="{WIDTH - SIDE - 160}" y="22">Search</text>
<text id="clear" class="button hidden" x="{WIDTH - SIDE - 100}" y="22">Clear</text>
<text id="details" x="{SIDE}" y="{height - 12}"> </text>
<text id="matched" x="{WIDTH - SIDE}" y="{height - 12}" text-anchor="end"> </text>
<g id="frames">
{chr(10).join(parts)}
</g>
<script type="text/ecmascript"><![CDATA[
{_SCRIPT}
]]></script>
</svg>
"""


# The page script: zoom, search, details. Positions are recomputed from each frame's data attributes
# (x offset and value in samples, depth), so zooming is exact and reversible.
_SCRIPT = r"""
(function () {
  "use strict";
  var svg = document.documentElement;
  var total = +svg.getAttribute("data-total"), side = +svg.getAttribute("data-side");
  var width = +svg.getAttribute("data-width");
  var frames = Array.prototype.slice.call(document.querySelectorAll("g.f"));
  var details = document.getElementById("details"), matched = document.getElementById("matched");
  var reset = document.getElementById("reset"), clear = document.getElementById("clear");
  var zoomed = null, term = null;
  function info(g) {
    return {n: g.getAttribute("data-n"), v: +g.getAttribute("data-v"), x: +g.getAttribute("data-x"),
            d: +g.getAttribute("data-d")};
  }
  function fit(name, w) {
    var chars = Math.floor((w - 6) / 7);
    if (chars < 3) return "";
    return name.length <= chars ? name : name.slice(0, chars - 2) + "..";
  }
  function place(g, x, w) {
    var r = g.querySelector("rect"), t = g.querySelector("text");
    r.setAttribute("x", (side + x).toFixed(2));
    r.setAttribute("width", w.toFixed(2));
    t.setAttribute("x", (side + x + 3).toFixed(2));
    t.textContent = fit(info(g).n, w);
  }
  function zoom(g) {
    var z = info(g);
    zoomed = z.d === 0 ? null : g;
    reset.classList.toggle("hidden", zoomed === null);
    frames.forEach(function (f) {
      var i = info(f);
      var inside = i.d >= z.d && i.x >= z.x && i.x + i.v <= z.x + z.v;
      var above = i.d < z.d && i.x <= z.x && i.x + i.v >= z.x + z.v;
      if (z.d === 0) { inside = true; above = false; }
      var w = inside ? i.v / z.v * width : width;
      if ((!inside && !above) || w < 0.1) { f.classList.add("hidden"); return; }
      f.classList.remove("hidden");
      place(f, inside ? (i.x - z.x) / z.v * width : 0, w);
    });
  }
  function search(text) {
    term = text;
    var re;
    try { re = new RegExp(text); } catch (e) { re = null; }
    var spans = [];
    frames.forEach(function (f) {
      var i = info(f), r = f.querySelector("rect");
      if (!r.hasAttribute("data-fill")) r.setAttribute("data-fill", r.getAttribute("fill"));
      var hit = text !== null && text !== "" && (re ? re.test(i.n) : i.n.indexOf(text) >= 0);
      r.setAttribute("fill", hit ? "rgb(230,0,230)" : r.getAttribute("data-fill"));
      f.classList.toggle("match", hit);
      if (hit) spans.push([i.x, i.x + i.v]);
    });
    // A match inside another match covers the same samples: count the union of the spans.
    spans.sort(function (a, b) { return a[0] - b[0] || b[1] - a[1]; });
    var covered = 0, end = -1;
    spans.forEach(function (s) {
      if (s[0] >= end) { covered += s[1] - s[0]; end = s[1]; }
      else if (s[1] > end) { covered += s[1] - end; end = s[1]; }
    });
    var on = text !== null && text !== "";
    clear.classList.toggle("hidden", !on);
    matched.textContent = on ? "Matched: " + (total ? 100 * covered / total : 0).toFixed(1) + "%" : " ";
    matched.setAttribute("data-share", on && total ? String(covered / total) : "");
  }
  function ask() {
    var text = window.prompt("Search frames (regular expression):", term || "");
    if (text !== null) search(text);
  }
  frames.forEach(function (f) {
    f.addEventListener("click", function () { zoom(f); });
    f.addEventListener("mouseover", function () {
      details.textContent = f.querySelector("title").textContent;
    });
    f.addEventListener("mouseout", function () { details.textContent = " "; });
  });
  reset.addEventListener("click", function () { zoom(frames[0]); });
  clear.addEventListener("click", function () { search(null); });
  document.getElementById("search").addEventListener("click", ask);
  window.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === "f") { e.preventDefault(); ask(); }
    if (e.key === "Escape") { search(null); }
  });
  var wanted = new URLSearchParams(window.location.search).get("s");
  if (wanted) search(wanted);
  window.flamegraph = {search: search, zoom: zoom};
})();
"""
