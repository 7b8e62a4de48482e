"""Traceability that leaves the building (docs/traceability.md): EPCIS 2.0 export of a lot's life,
one step back / one step forward records (Regulation (EU) 931/2011), the printable lot certificate,
dispatch and farm records, and their HTTP API (`gateway.traceability.api.router`)."""
