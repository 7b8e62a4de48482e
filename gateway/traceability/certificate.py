"""The lot certificate: one printed page per inspected lot, as HTML (prints on one A4 page) and PDF.

Both come from one `certificate_data` dict and the same figures (gateway/traceability/figures.py).
The PDF is drawn by reportlab (a maintained pure-Python library: no browser in the gateway, the
same bytes on every machine, one page enforced by the layout: the content is shrunk into the
page frame if a lot ever has more rows than fit).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from html import escape
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from gateway.traceability import figures, ids
from gateway.traceability.epcis import compliant
from gateway.traceability.settings import TraceConfig
from gateway.traceability.story import LotStory
from registry.products import GRADE_ORDER, majority_grade

MAX_DISPATCH_ROWS = 8
TITLE = "Lot certificate"


def _date(dt: datetime | None, with_time: bool = True) -> str:
    if dt is None:
        return "-"
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC" if with_time else "%Y-%m-%d")


def _n(v: Any, digits: int = 0, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{float(v):,.{digits}f}".replace(",", " ") + unit


def certificate_data(story: LotStory, cfg: TraceConfig, now: datetime | None = None) -> dict[str, Any]:
    lot, farm, insp = story.lot, story.farm or {}, story.inspection or {"lot": {}, "devices": []}
    dist = {g: int(n) for g, n in (lot["grade_distribution"] or {}).items()}
    grades_text = ", ".join(f"{g}: {dist[g]}" for g in (*GRADE_ORDER, "none") if dist.get(g)) or "-"
    whole = insp["lot"]
    weights = [float(f["mean_weight_g"]) for f in story.feedings if f["mean_weight_g"] is not None]
    products = [{"gtin": p["gtin"], "description": ids.product_description(p["gtin"], cfg.company_prefix,
                                                                              lot["genetics"]),
                 "digital_link": p["qr_uri"]} for p in story.products]
    rows = []
    for d in story.dispatches:
        for line in d["lines"]:
            if line["lot_id"] == story.lot_id:
                rows.append({"date": _date(d["dispatched_at"]).removesuffix(" UTC"), "reference": d["reference"],
                             "recipient": d["recipient_name"], "address": d["recipient_address"],
                             "product": ids.product_description(line["gtin"], cfg.company_prefix),
                             "gtin": line["gtin"], "quantity": line["quantity"]})
    site = lot["site_code"]
    qr = story.products[0]["qr_uri"] if story.products else ids.lot_class_uri(cfg.company_prefix, story.lot_id)
    base = f"{cfg.public_url}/api/traceability"
    return {
        "lot_id": story.lot_id, "state": lot["state"], "issued_at": _date(now or datetime.now(UTC)),
        "identity": [("Lot", story.lot_id), ("State", lot["state"]), ("Genetics", lot["genetics"]),
                     ("Ducks", f"{lot['nb_ducks']} placed, {_n(lot['live_ducks'])} live at the end"),
                     ("Site", f"{site} ({ids.SITE_NAMES.get(site, 'site')})"),
                     ("Created", _date(lot["created_at"])),
                     ("GS1 lot key", ids.lot_class_uri(cfg.company_prefix, story.lot_id))],
        "farm": [("Farmer", f"{farm.get('name') or lot['farmer_name']} ({lot['farmer_id']})"),
                 ("Address", farm.get("address") or "not registered"), ("GLN", farm.get("gln") or "-")],
        "gavage": [("Start", _date(lot["gavage_started_at"])), ("End (ready)", _date(lot["gavage_ended_at"])),
                   ("Days", f"{lot['current_day']} of {lot['planned_duration_days']} planned"),
                   ("Maize per duck", _n(lot["maize_total_per_duck_g"], 0, " g")),
                   ("Mean live weight", _n(weights[0] if weights else None, 0) + " -> "
                    + _n(lot["mean_weight_g"], 0, " g")),
                   ("Mortality", _n(lot["mortality_pct"], 2, " %"))],
        "inspection": [("Closed", _date(lot["inspected_at"])), ("Samples", str(lot["sample_count"])),
                       ("Grades", grades_text), ("Lot grade (majority)", majority_grade(dist) or "-"),
                       ("Mean score", _n(whole.get("score_mean"), 3)),
                       ("Mean liver weight", _n(lot["mean_liver_weight_g"], 0, " g")),
                       ("ITM", f"{_n(lot['itm'], 2)} (grade {lot['itm_grade']})" if lot["itm"] is not None
                        else "- (no weighed sample)"),
                       ("Verdict", "conformant" if compliant(lot) else "non conformant"),
                       ("Devices", ", ".join(d["device_id"] for d in insp["devices"]) or "-")],
        "itm": lot["itm"], "itm_grade": lot["itm_grade"], "grade_distribution": dist,
        "products": products, "dispatches": rows[:MAX_DISPATCH_ROWS],
        "dispatches_more": max(0, len(rows) - MAX_DISPATCH_ROWS),
        "dispatch_units": sum(r["quantity"] for r in rows),
        "qr": qr,
        "figures": {"gavage": figures.gavage_chart(story.feedings), "grades": figures.grades_chart(dist),
                    "qr": figures.qr_figure(qr)},
        "links": {"pdf": f"{base}/lots/{story.lot_id}/certificate.pdf",
                  "html": f"{base}/lots/{story.lot_id}/certificate",
                  "epcis": f"{base}/epcis/lots/{story.lot_id}/events",
                  "trace_csv": f"{base}/lots/{story.lot_id}/trace?format=csv"},
        "issuer": f"{cfg.sender_name}, {cfg.sender_address}",
    }


# ---- HTML ----

_CSS = """
@page { size: A4; margin: 11mm 12mm; }
* { box-sizing: border-box; }
body { font: 8pt/1.25 Helvetica, Arial, sans-serif; color: #222; margin: 0; }
.page { max-width: 186mm; margin: 0 auto; }
header { display: flex; justify-content: space-between; align-items: flex-start; border-bottom: 2px solid #222;
         padding-bottom: 2mm; margin-bottom: 2mm; gap: 4mm; }
h1 { font-size: 14pt; margin: 0 0 1mm; }
h1 .lot { font-family: "Courier New", monospace; }
h2 { font-size: 9.5pt; margin: 0 0 1.2mm; text-transform: uppercase; letter-spacing: .04em; color: #444;
     border-bottom: 1px solid #bbb; }
.sub { color: #555; margin: 0; }
.qr { text-align: center; width: 30mm; flex: none; }
.qr svg { width: 26mm; height: 26mm; }
.qr small { display: block; font-size: 5.5pt; word-break: break-all; color: #555; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5mm 5mm; margin-bottom: 1.5mm; align-items: start; }
section { break-inside: avoid; }
dl { display: grid; grid-template-columns: 32mm 1fr; margin: 0; }
dt { color: #555; } dd { margin: 0; word-break: break-word; }
table { width: 100%; border-collapse: collapse; margin-bottom: 1.5mm; }
th, td { text-align: left; padding: .35mm 1.2mm; border-bottom: 1px solid #ddd; vertical-align: top; }
td small { color: #555; font-size: 6.8pt; }
th { font-size: 7.5pt; color: #444; border-bottom: 1px solid #888; }
td.num, th.num { text-align: right; }
.nowrap { white-space: nowrap; }
.mono { font-family: "Courier New", monospace; font-size: 7.2pt; }
.chart svg { width: 100%; height: auto; max-height: 36mm; }
footer { border-top: 1px solid #888; padding-top: 1.5mm; color: #555; font-size: 7pt; }
.actions { margin: 2mm 0 0; }
.actions a { margin-right: 4mm; }
@media print { .actions { display: none; } a { color: inherit; text-decoration: none; } }
"""


def _dl(pairs: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in pairs) + "</dl>"


def render_html(data: dict[str, Any]) -> str:
    lot_id = escape(data["lot_id"])
    prod_rows = "".join(
        f"<tr><td class=\"mono\">{escape(p['gtin'])}</td><td>{escape(p['description'])}</td>"
        f"<td class=\"mono\">{escape(p['digital_link'])}</td></tr>" for p in data["products"]
    ) or '<tr><td colspan="3">No product made from this lot (not compliant, or not yet).</td></tr>'
    disp_rows = "".join(
        f"<tr><td class=\"nowrap\">{escape(r['date'])}</td><td class=\"mono nowrap\">{escape(r['reference'])}</td>"
        f"<td>{escape(r['recipient'])} <small>{escape(r['address'])}</small></td>"
        f"<td>{escape(r['product'])}</td><td class=\"num\">{r['quantity']}</td></tr>" for r in data["dispatches"]
    ) or '<tr><td colspan="5">Not dispatched yet.</td></tr>'
    more = (f"<p class=\"sub\">and {data['dispatches_more']} more lines: see the one step forward CSV.</p>"
            if data["dispatches_more"] else "")
    links = data["links"]
    f = data["figures"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{TITLE} {lot_id}</title>
<style>{_CSS}</style></head>
<body><div class="page" data-lot="{lot_id}">
<header>
  <div>
    <h1>{TITLE} <span class="lot">{lot_id}</span></h1>
    <p class="sub">Foie gras lot: gavage, SQAL line inspection, products and dispatches. Issued {escape(data['issued_at'])}
      by {escape(data['issuer'])}.</p>
    <p class="actions"><a href="{escape(links['pdf'])}">PDF</a><a href="{escape(links['epcis'])}">EPCIS 2.0 events</a>
      <a href="{escape(links['trace_csv'])}">One step back / forward (CSV)</a>
      <a href="#" onclick="window.print(); return false;">Print</a></p>
  </div>
  <div class="qr">{figures.to_svg(f['qr'])}<small>{escape(data['qr'])}</small></div>
</header>
<div class="grid">
  <section id="identity"><h2>Identity</h2>{_dl(data['identity'])}</section>
  <section id="farm"><h2>Farm (one step back)</h2>{_dl(data['farm'])}</section>
  <section id="gavage"><h2>Gavage</h2>{_dl(data['gavage'])}</section>
  <section class="chart">{figures.to_svg(f['gavage'])}</section>
  <section id="inspection"><h2>SQAL inspection</h2>{_dl(data['inspection'])}</section>
  <section class="chart">{figures.to_svg(f['grades'])}</section>
</div>
<section id="products"><h2>Products</h2>
<table><thead><tr><th>GTIN</th><th>Product</th><th>GS1 Digital Link (QR code)</th></tr></thead>
<tbody>{prod_rows}</tbody></table></section>
<section id="dispatches"><h2>Dispatches (one step forward): {data['dispatch_units']} units</h2>
<table><thead><tr><th>Date</th><th>Reference</th><th>Recipient</th><th>Product</th><th class="num">Units</th></tr></thead>
<tbody>{disp_rows}</tbody></table>{more}</section>
<footer>Records kept under Regulation (EU) 178/2002 art. 18 and Regulation (EU) 931/2011. ITM = maize eaten per duck
over the gavage (g) / mean liver weight (g); grades A+ &lt; 15, A &lt; 17, B &lt; 20, else C. Generated from the SQAL
lot registry; the EPCIS 2.0 export of this lot: {escape(links['epcis'])}</footer>
</div></body></html>
"""


# ---- PDF ----

def render_pdf(data: dict[str, Any]) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        Flowable,
        KeepInFrame,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    class Fig(Flowable):  # type: ignore[misc]
        def __init__(self, fig: figures.Figure, scale: float = 1.0) -> None:
            super().__init__()
            self.fig, self.scale = fig, scale

        def wrap(self, aw: float, ah: float) -> tuple[float, float]:
            return self.fig.width * self.scale, self.fig.height * self.scale

        def draw(self) -> None:
            self.canv.scale(self.scale, self.scale)
            figures.draw_on(self.canv, self.fig, 0, self.fig.height)

    base = ParagraphStyle("base", fontName="Helvetica", fontSize=8, leading=10)
    small = ParagraphStyle("small", parent=base, fontSize=6.5, leading=8, textColor=colors.HexColor("#555555"))
    h1 = ParagraphStyle("h1", parent=base, fontName="Helvetica-Bold", fontSize=15, leading=18)
    h2 = ParagraphStyle("h2", parent=base, fontName="Helvetica-Bold", fontSize=9, leading=12, spaceBefore=3,
                        textColor=colors.HexColor("#444444"))
    label = ParagraphStyle("label", parent=base, textColor=colors.HexColor("#555555"))

    def p(text: str, style: ParagraphStyle = base) -> Paragraph:
        return Paragraph(xml_escape(text), style)

    def dl(title: str, pairs: list[tuple[str, str]], width: float) -> list[Any]:
        t = Table([[p(k, label), p(str(v))] for k, v in pairs], colWidths=[30 * mm, width - 30 * mm])
        t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                               ("TOPPADDING", (0, 0), (-1, -1), 0.6), ("BOTTOMPADDING", (0, 0), (-1, -1), 0.6)]))
        return [p(title.upper(), h2), t]

    def grid(rows: list[list[Any]], widths: list[float], header: bool = True) -> Table:
        t = Table(rows, colWidths=widths, repeatRows=1 if header else 0)
        style: list[Any] = [("VALIGN", (0, 0), (-1, -1), "TOP"),
                            ("LINEBELOW", (0, 0), (-1, -1), 0.3, colors.HexColor("#dddddd")),
                            ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                            ("LEFTPADDING", (0, 0), (-1, -1), 2), ("RIGHTPADDING", (0, 0), (-1, -1), 2)]
        if header:
            style += [("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor("#888888")),
                      ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold")]
        t.setStyle(TableStyle(style))
        return t

    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=12 * mm, rightMargin=12 * mm, topMargin=11 * mm,
                            bottomMargin=11 * mm, title=f"{TITLE} {data['lot_id']}", author=data["issuer"],
                            subject="Foie gras lot certificate (SQAL)")
    width = doc.width
    half = (width - 6 * mm) / 2
    f = data["figures"]
    head = Table([[[p(f"{TITLE} {data['lot_id']}", h1),
                    p(f"Foie gras lot: gavage, SQAL line inspection, products and dispatches. "
                      f"Issued {data['issued_at']} by {data['issuer']}.", small)],
                   [Fig(f["qr"], 0.9), p(data["qr"], small)]]],
                 colWidths=[width - 40 * mm, 40 * mm])
    head.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("ALIGN", (1, 0), (1, 0), "CENTER"),
                              ("LINEBELOW", (0, 0), (-1, 0), 1.2, colors.black),
                              ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    pairs = Table([[dl("Identity", data["identity"], half), dl("Farm (one step back)", data["farm"], half)],
                   [dl("Gavage", data["gavage"], half), Fig(f["gavage"], half / f["gavage"].width)],
                   [dl("SQAL inspection", data["inspection"], half), Fig(f["grades"], half / f["grades"].width)]],
                  colWidths=[half + 6 * mm, half])
    pairs.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                               ("TOPPADDING", (0, 0), (-1, -1), 2)]))
    prod_rows: list[list[Any]] = [[p("GTIN"), p("Product"), p("GS1 Digital Link (QR code)")]]
    prod_rows += [[p(x["gtin"]), p(x["description"]), p(x["digital_link"], small)] for x in data["products"]]
    if len(prod_rows) == 1:
        prod_rows.append([p("-"), p("No product made from this lot (not compliant, or not yet)."), p("")])
    disp_rows: list[list[Any]] = [[p("Date"), p("Reference"), p("Recipient"), p("Product"), p("Units")]]
    disp_rows += [[p(r["date"]), p(r["reference"], small), [p(r["recipient"]), p(r["address"], small)],
                   p(r["product"]), p(str(r["quantity"]))] for r in data["dispatches"]]
    if len(disp_rows) == 1:
        disp_rows.append([p("-"), p(""), p("Not dispatched yet."), p(""), p("")])
    content: list[Any] = [
        head, Spacer(1, 2 * mm), pairs,
        p("PRODUCTS", h2), grid(prod_rows, [28 * mm, 62 * mm, width - 90 * mm]),
        p(f"DISPATCHES (ONE STEP FORWARD): {data['dispatch_units']} UNITS", h2),
        grid(disp_rows, [25 * mm, 30 * mm, 65 * mm, width - 132 * mm, 12 * mm]),
    ]
    if data["dispatches_more"]:
        content.append(p(f"and {data['dispatches_more']} more lines: see the one step forward CSV.", small))
    content += [Spacer(1, 2 * mm), p(
        "Records kept under Regulation (EU) 178/2002 art. 18 and Regulation (EU) 931/2011. ITM = maize eaten per "
        "duck over the gavage (g) / mean liver weight (g); grades A+ < 15, A < 17, B < 20, else C. Generated from the "
        f"SQAL lot registry; the EPCIS 2.0 export of this lot: {data['links']['epcis']}", small)]
    doc.build([KeepInFrame(width, doc.height, content, mode="shrink")])
    return buf.getvalue()
