"""The certificate's small figures (gavage chart, grade chart, QR code) as a few shapes, drawn
the same way into the PDF (reportlab canvas) and into the HTML (inline SVG).

Coordinates are SVG's: origin top left, y down, in points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

from reportlab.graphics.barcode.qrencoder import QRCode, QRErrorCorrectLevel

GRADE_COLOURS = {"A+": "#1b7f3b", "A": "#4caf50", "B": "#f2b705", "C": "#e07b00", "REJECT": "#c62828",
                 "none": "#9e9e9e"}
INK, MUTED, GRID, BAR, LINE = "#222222", "#666666", "#dddddd", "#8fb3d9", "#b23a48"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str | None = None
    stroke: str | None = None


@dataclass(frozen=True)
class Line:
    points: tuple[tuple[float, float], ...]
    stroke: str = INK
    width: float = 1.0


@dataclass(frozen=True)
class Text:
    x: float
    y: float  # baseline
    text: str
    size: float = 7.0
    anchor: str = "start"  # start | middle | end
    fill: str = INK
    bold: bool = False


@dataclass
class Figure:
    width: float
    height: float
    items: list[Rect | Line | Text] = field(default_factory=list)
    title: str = ""


def to_svg(fig: Figure) -> str:
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{fig.width:g}pt" height="{fig.height:g}pt" '
              f'viewBox="0 0 {fig.width:g} {fig.height:g}" role="img" aria-label="{escape(fig.title)}">')]
    if fig.title:
        parts.append(f"<title>{escape(fig.title)}</title>")
    for it in fig.items:
        if isinstance(it, Rect):
            parts.append(f'<rect x="{it.x:.2f}" y="{it.y:.2f}" width="{it.w:.2f}" height="{it.h:.2f}" '
                         f'fill="{it.fill or "none"}" stroke="{it.stroke or "none"}" stroke-width="0.5"/>')
        elif isinstance(it, Line):
            pts = " ".join(f"{x:.2f},{y:.2f}" for x, y in it.points)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{it.stroke}" stroke-width="{it.width:g}"/>')
        else:
            weight = ' font-weight="bold"' if it.bold else ""
            parts.append(f'<text x="{it.x:.2f}" y="{it.y:.2f}" font-family="Helvetica, Arial, sans-serif" '
                         f'font-size="{it.size:g}" text-anchor="{it.anchor}" fill="{it.fill}"{weight}>'
                         f"{escape(it.text)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def draw_on(canvas: Any, fig: Figure, x: float, y: float) -> None:
    """Draw on a reportlab canvas with the figure's top left corner at (x, y) (PDF coordinates)."""
    from reportlab.lib.colors import HexColor

    top = y
    canvas.saveState()
    for it in fig.items:
        if isinstance(it, Rect):
            if it.fill:
                canvas.setFillColor(HexColor(it.fill))
            if it.stroke:
                canvas.setStrokeColor(HexColor(it.stroke))
                canvas.setLineWidth(0.5)
            canvas.rect(x + it.x, top - it.y - it.h, it.w, it.h, stroke=int(bool(it.stroke)), fill=int(bool(it.fill)))
        elif isinstance(it, Line):
            canvas.setStrokeColor(HexColor(it.stroke))
            canvas.setLineWidth(it.width)
            path = canvas.beginPath()
            (x0, y0), *rest = it.points
            path.moveTo(x + x0, top - y0)
            for px, py in rest:
                path.lineTo(x + px, top - py)
            canvas.drawPath(path, stroke=1, fill=0)
        else:
            canvas.setFillColor(HexColor(it.fill))
            canvas.setFont("Helvetica-Bold" if it.bold else "Helvetica", it.size)
            draw = {"start": canvas.drawString, "middle": canvas.drawCentredString,
                    "end": canvas.drawRightString}[it.anchor]
            draw(x + it.x, top - it.y, it.text)
    canvas.restoreState()


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    step = 10 ** (len(str(int(v))) - 1)
    return float((int(v / step) + 1) * step)


def gavage_chart(feedings: list[dict[str, Any]], width: float = 250, height: float = 110) -> Figure:
    """Maize per duck per gavage day (bars, g, left scale) and mean live weight (line, g, right scale)."""
    fig = Figure(width, height, title="Gavage: maize per duck per day and mean live weight")
    by_day: dict[int, dict[str, float]] = {}
    for f in feedings:
        d = by_day.setdefault(int(f["day"]), {"dose": 0.0})
        d["dose"] += float(f["actual_dose_g"])
        if f.get("mean_weight_g") is not None:
            d["weight"] = float(f["mean_weight_g"])  # evening after morning: the day's last weight
    left, right, top, bottom = 30.0, 34.0, 12.0, 16.0
    pw, ph = width - left - right, height - top - bottom
    fig.items.append(Text(left, 8, "g maize / duck / day", 6, fill=MUTED))
    fig.items.append(Text(width - 2, 8, "mean weight, g", 6, anchor="end", fill=LINE))
    if not by_day:
        fig.items.append(Text(width / 2, height / 2, "no feeding recorded", 8, anchor="middle", fill=MUTED))
        return fig
    days = sorted(by_day)
    dmax = _nice_max(max(v["dose"] for v in by_day.values()))
    weights = [v["weight"] for v in by_day.values() if "weight" in v]
    wmin = (min(weights) // 500) * 500 if weights else 0.0
    wmax = _nice_max(max(weights)) if weights else 1.0
    for i in range(3):
        frac = i / 2
        yy = top + ph * (1 - frac)
        fig.items.append(Line(((left, yy), (left + pw, yy)), GRID, 0.5))
        fig.items.append(Text(left - 3, yy + 2, f"{dmax * frac:.0f}", 6, anchor="end", fill=MUTED))
        if weights:
            fig.items.append(Text(left + pw + 3, yy + 2, f"{wmin + (wmax - wmin) * frac:.0f}", 6, fill=LINE))
    n = len(days)
    slot = pw / n
    pts = []
    for i, day in enumerate(days):
        v = by_day[day]
        bh = ph * v["dose"] / dmax
        fig.items.append(Rect(left + i * slot + slot * 0.15, top + ph - bh, slot * 0.7, bh, fill=BAR))
        if n <= 16 or day % 2 == 1:
            fig.items.append(Text(left + i * slot + slot / 2, height - 6, str(day), 6, anchor="middle", fill=MUTED))
        if "weight" in v and wmax > wmin:
            pts.append((left + i * slot + slot / 2, top + ph * (1 - (v["weight"] - wmin) / (wmax - wmin))))
    if len(pts) >= 2:
        fig.items.append(Line(tuple(pts), LINE, 1.2))
    fig.items.append(Text(left + pw / 2, height - 0.5, "gavage day", 5.5, anchor="middle", fill=MUTED))
    return fig


def grades_chart(distribution: dict[str, int], width: float = 250, height: float = 110) -> Figure:
    """Samples per SQAL grade (A+, A, B, C, REJECT; 'none' when some were not graded)."""
    fig = Figure(width, height, title="SQAL inspection: samples per grade")
    grades = ["A+", "A", "B", "C", "REJECT"] + (["none"] if distribution.get("none") else [])
    total = sum(distribution.get(g, 0) for g in grades)
    left, top, bottom = 10.0, 12.0, 16.0
    pw, ph = width - 2 * left, height - top - bottom
    vmax = max([distribution.get(g, 0) for g in grades] + [1])
    slot = pw / len(grades)
    fig.items.append(Line(((left, top + ph), (left + pw, top + ph)), MUTED, 0.5))
    for i, g in enumerate(grades):
        n = distribution.get(g, 0)
        bh = ph * n / vmax
        x = left + i * slot
        fig.items.append(Rect(x + slot * 0.2, top + ph - bh, slot * 0.6, bh, fill=GRADE_COLOURS[g]))
        pct = f" ({100 * n / total:.0f}%)" if total else ""
        fig.items.append(Text(x + slot / 2, top + ph - bh - 2, f"{n}{pct}", 6.5, anchor="middle"))
        fig.items.append(Text(x + slot / 2, height - 5, g, 7, anchor="middle", bold=True))
    return fig


def qr_figure(payload: str, size: float = 96, quiet: int = 2) -> Figure:
    """A QR code (error correction M) of `payload`, `size` points wide, with a quiet zone."""
    qr = QRCode(None, QRErrorCorrectLevel.M)
    qr.addData(payload)
    qr.make()
    n = qr.getModuleCount()
    cell = size / (n + 2 * quiet)
    fig = Figure(size, size, title=f"QR code: {payload}")
    fig.items.append(Rect(0, 0, size, size, fill="#ffffff"))
    for r in range(n):
        c = 0
        while c < n:  # one rectangle per run of dark modules in a row
            if qr.isDark(r, c):
                start = c
                while c < n and qr.isDark(r, c):
                    c += 1
                fig.items.append(Rect((quiet + start) * cell, (quiet + r) * cell, (c - start) * cell + 0.05,
                                      cell + 0.05, fill="#000000"))
            else:
                c += 1
    return fig
