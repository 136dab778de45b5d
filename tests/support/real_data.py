"""Where the tests find the real VCIP2020 copy: the folder `COLORMAMBA_VCIP2020` names (`.ci/run` sets it
when the shared copy exists). The images are the dataset owners': the project never contains them, so on a
user's machine the tests that need them skip with REAL_COPY_ABSENT."""

from __future__ import annotations

import os
from pathlib import Path

REAL_COPY_ENV = "COLORMAMBA_VCIP2020"
REAL_COPY = Path(os.environ.get(REAL_COPY_ENV) or "/nonexistent-vcip2020-copy")
REAL_COPY_ABSENT = f"{REAL_COPY_ENV} not set (the real VCIP2020 copy is absent)"
