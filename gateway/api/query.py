"""Query and path parameters shared by the routes: a lot id, a lot filter, a time window, pages.

Every refusal is a 422 whose `loc` names the parameter (["query", "since"]...), never a 5xx.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from gateway.api.models_common import Timestamp
from registry.lots import LOT_ID_PATTERN

LotId = Annotated[str, Path(pattern=LOT_ID_PATTERN, description="Lot id, LOT_YYYYMMDD_XXXX",
                            examples=["LOT_20260105_0001"])]
LotFilter = Annotated[str | None, Query(pattern=LOT_ID_PATTERN,
                                        description="Only this lot (LOT_YYYYMMDD_XXXX); 404 when it does not exist",
                                        examples=["LOT_20260105_0001"])]
Since = Annotated[Timestamp | None,
                  Query(description="From this time on (inclusive), RFC 3339 with a zone: 2026-01-05T08:00:00Z")]
Until = Annotated[Timestamp | None, Query(description="Before this time (exclusive), RFC 3339 with a zone")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Rows to skip (the page's start)")]
