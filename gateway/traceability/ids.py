"""Identifiers of the exports: GS1 keys as GS1 Digital Link URIs, private HTTP URIs for the rest,
stable event ids, and the product descriptions behind the GTINs.

- A lot is the class GTIN(item reference 0, "fattened ducks / raw livers of one gavage lot") + the
  lot id as batch/lot (AI 10): https://id.gs1.org/01/{GTIN}/10/{lot}. Its products are the
  dispatcher's GTINs (item references 1..8) + the same lot id, i.e. exactly their QR code payload.
- Parties and locations with a GLN: https://id.gs1.org/417/{GLN} (party), /414/{GLN} (location).
  Without one: {id_base}/party/..., {id_base}/location/... (farm by farmer id, site by site code,
  others by a name-based UUID of name + address).
- Event ids: urn:uuid: UUIDv5 of (id_base, kind, key), where key is the registry identity of the
  record the event comes from; the same record always gives the same id, in every export.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

from registry.gs1 import RESOLVER as GS1_RESOLVER
from registry.gs1 import digital_link, make_gtin
from registry.products import PRODUCT_RANGE

LOT_ITEM_REF = 0  # item reference of the lot class (the dispatcher's products use 1..len(PRODUCT_RANGE))
LOT_DESCRIPTION = "Canards gras (fattened ducks) and their raw livers, one gavage lot"
# Fixed namespace of the event ids (a random UUID drawn once for this project; never change it).
EVENT_NAMESPACE = uuid.UUID("5f0b6c1e-8a1d-4b5e-9d43-2f6a0c7e91b4")
SITE_NAMES = {"LL": "Landes", "LS": "Landes Sud", "MT": "Mont-de-Marsan", "BS": "Bayonne Sud", "PX": "Pays Basque"}


def _seg(value: str) -> str:
    return quote(value, safe="")


def class_uri(gtin: str, lot_id: str) -> str:
    """GS1 Digital Link URI of a GTIN + batch/lot (the same form as a product's QR code)."""
    return digital_link(gtin, lot_id)


def lot_gtin(company_prefix: str) -> str:
    return make_gtin(company_prefix, LOT_ITEM_REF)


def lot_class_uri(company_prefix: str, lot_id: str) -> str:
    return class_uri(lot_gtin(company_prefix), lot_id)


def item_reference(gtin: str, company_prefix: str) -> int | None:
    """The item reference of a GTIN-14 of ours (indicator 0 + company prefix + reference + check digit)."""
    body = "0" + company_prefix
    if len(gtin) == 14 and gtin.startswith(body) and gtin[len(body):13].isdigit():
        return int(gtin[len(body):13])
    return None


def product_description(gtin: str, company_prefix: str, genetics: str | None = None) -> str:
    """What the product is, from its GTIN's item reference in the dispatcher's product range."""
    ref = item_reference(gtin, company_prefix)
    if ref == LOT_ITEM_REF:
        return LOT_DESCRIPTION
    if ref is not None and 1 <= ref <= len(PRODUCT_RANGE):
        name = PRODUCT_RANGE[ref - 1]
        name = "Foie gras de canard, " + name if "foie gras" not in name else name[:1].upper() + name[1:]
    else:
        name = f"Foie gras product, GTIN {gtin}"
    return f"{name} ({genetics} duck)" if genetics else name


def gln_party(gln: str) -> str:
    return f"{GS1_RESOLVER}/417/{gln}"


def gln_location(gln: str) -> str:
    return f"{GS1_RESOLVER}/414/{gln}"


def name_key(name: str, address: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"party|{name.strip()}|{address.strip()}"))


def party_uri(id_base: str, name: str, address: str, gln: str | None) -> str:
    return gln_party(gln) if gln else f"{id_base}/party/{name_key(name, address)}"


def party_location_uri(id_base: str, name: str, address: str, gln: str | None) -> str:
    return gln_location(gln) if gln else f"{id_base}/location/{name_key(name, address)}"


def farm_party_uri(id_base: str, farmer_id: str, gln: str | None = None) -> str:
    return gln_party(gln) if gln else f"{id_base}/party/farm/{_seg(farmer_id)}"


def farm_location_uri(id_base: str, farmer_id: str, gln: str | None = None) -> str:
    return gln_location(gln) if gln else f"{id_base}/location/farm/{_seg(farmer_id)}"


def site_location_uri(id_base: str, site_code: str) -> str:
    return f"{id_base}/location/site/{_seg(site_code)}"


def device_uri(id_base: str, device_id: str) -> str:
    return f"{id_base}/device/{_seg(device_id)}"


def transformation_uri(id_base: str, lot_id: str) -> str:
    return f"{id_base}/transformation/{_seg(lot_id)}"


def despatch_advice_uri(id_base: str, reference: str) -> str:
    return f"{id_base}/despatch-advice/{_seg(reference)}"


def vocabulary_uri(id_base: str) -> str:
    """Namespace of the extension terms (prefix `sqal:` in the documents)."""
    return f"{id_base}/voc/"


def event_id(id_base: str, kind: str, *key: object) -> str:
    name = "|".join([id_base, kind, *(str(k) for k in key)])
    return f"urn:uuid:{uuid.uuid5(EVENT_NAMESPACE, name)}"
