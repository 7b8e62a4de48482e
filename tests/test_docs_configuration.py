"""docs/configuration.md names every SQAL_* setting the code reads (so the page stays true)."""

from pathlib import Path

from gateway.config import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    names = {f"SQAL_{name.upper()}" for name in Settings.model_fields}
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"docs/configuration.md does not document: {', '.join(missing)}"
