"""Over-the-air updates of SQAL boards (docs/ota.md): signed releases of the application, and the
host side of an update (sending a release to a board over its command topic)."""
