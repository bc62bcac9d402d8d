"""The server's endpoints, one module per group; each ``router(state)`` returns a FastAPI
``APIRouter`` over the shared ``ServerState``.

- ``completions``: ``POST /v1/completions`` (and the generation both it and chat use).
- ``chat``: ``POST /v1/chat/completions``.
- ``infill``: ``POST /v1/infill``, ``/v1/edit``, ``/v1/forms``.
- ``info``: ``GET /v1/models``, ``/healthz``, ``/metrics``, ``POST /v1/tokenize``.
- ``playground``: ``GET /``.
"""
