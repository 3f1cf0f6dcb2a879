"""Teacher providers, one module each: an OpenAI-compatible endpoint (and its Batch API), and a model in
this process. Each module's PROVIDER answers distillc.teacher.protocol.Provider; `teacher.provider` names one."""

from __future__ import annotations

from distillc.teacher.protocol import Provider
from distillc.teacher.providers import local, openai_compatible

PROVIDERS: dict[str, Provider] = {p.name: p for p in (openai_compatible.PROVIDER, local.PROVIDER)}
