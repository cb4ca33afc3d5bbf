"""Running the API under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from console.api.app import create_app
from schemas.config import Config

log = logging.getLogger(__name__)


def serve_forever(config: Config, host: str, port: int) -> None:
    app = create_app(config)
    log.info("API on http://%s:%s (OpenAPI at /docs)", host, port)
    # keep-alive longer than clients' and proxies' usual idle timeouts (uvicorn's 5 s default makes a
    # pooled client reuse a connection the server is closing: a failed request, not a slow one)
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, server_header=False, timeout_keep_alive=75
    )
