"""``python -m service.serve``: the multi-worker server (the code is in service/ops/serve.py)."""

from __future__ import annotations

from service.ops.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
