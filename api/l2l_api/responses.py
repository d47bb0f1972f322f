"""JSON responses that never fail on a non-finite float.

Losses can be inf or NaN (a diverged baseline, a skipped meta-step). Starlette's JSONResponse
refuses them (``allow_nan=False``: they are not JSON) and the request would end in a 500; here
they become ``null``, which every JSON client can read.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.responses import JSONResponse


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value


class SafeJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # "Out of range float values are not JSON compliant"
            return json.dumps(
                _finite_or_null(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode("utf-8")
