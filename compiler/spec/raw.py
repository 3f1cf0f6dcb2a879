"""The raw spec: mirrors the YAML exactly. Unknown keys are errors. Defaults live here, in one place."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Example(Strict):
    input: str = Field(min_length=1)
    output: str | dict[str, Any] | list[Any]


class Output(Strict):
    type: Literal["text", "label", "json"] = "text"
    labels: list[str] | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")


class Task(Strict):
    instructions: str = Field(min_length=1)
    examples: list[Example] = Field(min_length=1, max_length=20)
    output: Output = Output()


class Source(Strict):
    path: str = Field(min_length=1)
    field: str | None = None  # the column/key holding the input; required for .jsonl and .csv
    limit: int | None = Field(default=None, ge=1)


class Inputs(Strict):
    source: Source


class Teacher(Strict):
    provider: Literal["openai", "local"] = "openai"
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=256, ge=1, le=32768)
    max_concurrency: int = Field(default=8, ge=1, le=1024)


class Student(Strict):
    base_model: str = Field(min_length=1)
    epochs: int = Field(default=3, ge=1, le=1000)
    learning_rate: float = Field(default=5e-5, gt=0, le=1)
    batch_size: int = Field(default=8, ge=1, le=4096)
    max_seq_len: int = Field(default=256, ge=8, le=131072)
    seed: int = 0


class Evaluation(Strict):
    holdout: float = Field(default=0.15, gt=0, lt=0.5)
    min_score: float = Field(default=0.8, ge=0, le=1)


class LatencyBudget(Strict):
    p50: float | None = Field(default=None, gt=0)
    p95: float | None = Field(default=None, gt=0)


class Deploy(Strict):
    max_new_tokens: int = Field(default=32, ge=1, le=8192)
    latency_budget_ms: LatencyBudget = LatencyBudget()


class RawSpec(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)
    task: Task
    inputs: Inputs
    teacher: Teacher
    student: Student
    evaluation: Evaluation = Evaluation()
    deploy: Deploy = Deploy()
