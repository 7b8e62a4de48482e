"""`sqal serve`, with the web page mounted even before gateway/app.py includes it.

`python -m tests.web.gateway_main serve --host ... --port ...` runs exactly the CLI's serve command;
the only difference is that gateway.web_routes.include_web is applied to the app if create_app did
not already mount the page (include_web is idempotent, so once app.py mounts it this is a no-op).
"""

from __future__ import annotations

from typing import Any

import gateway.app as gateway_app
from gateway.web_routes import include_web

_create_app = gateway_app.create_app


def create_app(settings: Any = None) -> Any:
    app = _create_app(settings)
    include_web(app)
    return app


gateway_app.create_app = create_app  # type: ignore[assignment]

if __name__ == "__main__":
    from gateway.cli import main

    main()
