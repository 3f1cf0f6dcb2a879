"""Reading teacher answers, whatever the type: models often wrap what they write in a Markdown fence. The
reading itself lives in the runtime (distillc_runtime.answers), so a package's cascade reads its teacher's
answers exactly as the build read its own."""

from __future__ import annotations

from distillc_runtime.answers import strip_fence

__all__ = ["strip_fence"]
