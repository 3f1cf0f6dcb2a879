"""The resolved spec: frozen, defaults applied, paths absolute, no Optionals the stages must guess at.

Fields marked `nokey()` do not change a stage's output (where a file lives, how fast to call the
teacher), so they stay out of cache keys: moving a spec or raising concurrency re-runs nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def nokey(default: Any = dataclasses.MISSING) -> Any:
    return field(default=default, metadata={"cache": False})


@dataclass(frozen=True)
class ExampleIR:
    input: str
    output: str  # canonical text form: labels as written, JSON compact


@dataclass(frozen=True)
class TaskIR:
    instructions: str
    examples: tuple[ExampleIR, ...]
    output_type: str  # text | label | json
    labels: tuple[str, ...]
    json_schema: str  # canonical JSON text, "" when none


@dataclass(frozen=True)
class GenerateIR:
    count: int
    seed: int
    guidance: str
    per_request: int
    max_requests: int
    temperature: float
    # What generated inputs depend on besides the settings above: the teacher, and the task it imitates.
    teacher_provider: str
    teacher_model: str
    teacher_base_url: str
    instructions: str
    example_inputs: tuple[str, ...]


@dataclass(frozen=True)
class SourceIR:
    path: str = nokey("")
    sha256: str = ""  # content of the source file (of a folder: its files'): what matters, not where it lives
    format: str = ""  # jsonl | csv | txt | parquet (bare inputs) | openai_chat | openai_batch | chat_log | pairs
    field: str = ""
    limit: int = 0  # 0 = no limit
    answer_field: str = ""  # pairs
    extract: str = ""  # message formats: a regex whose group `input` is the bare input
    output_path: str = nokey("")  # openai_batch: the output file
    output_sha256: str = ""
    reask_invalid: bool = False
    gold_field: str = ""

    @property
    def answered(self) -> bool:
        """Whether the source carries answers already given (an import), not bare inputs."""
        return self.format not in BARE_FORMATS


BARE_FORMATS = ("jsonl", "csv", "txt", "parquet")


@dataclass(frozen=True)
class GoldIR:
    path: str = nokey("")
    sha256: str = ""
    format: str = ""  # jsonl | csv | parquet
    field: str = ""
    gold_field: str = ""


@dataclass(frozen=True)
class InputsIR:
    mode: str  # source | generate
    sources: tuple[SourceIR, ...] = ()  # answered sources first
    generate: GenerateIR | None = None
    dedup: str = "near"  # near | exact | off
    gold: GoldIR | None = None  # human labels joined by input

    @property
    def has_gold(self) -> bool:
        return self.gold is not None or any(s.gold_field for s in self.sources)


@dataclass(frozen=True)
class TeacherIR:
    provider: str
    model: str
    base_url: str
    temperature: float
    max_tokens: int
    max_failed_share: float  # in the key: changing it re-runs labeling, which retries what failed
    api_key_env: str = nokey()
    max_concurrency: int = nokey()
    requests_per_minute: int = nokey()  # 0 = no limit
    tokens_per_minute: int = nokey()
    timeout_s: float = nokey()
    max_retries: int = nokey()
    price_input_per_1m: float = nokey()
    price_output_per_1m: float = nokey()
    batch: bool = nokey()  # the same answers either way, so journaled ones serve both
    batch_poll_s: float = nokey()


@dataclass(frozen=True)
class LoraIR:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]  # empty = every linear layer


@dataclass(frozen=True)
class PruneIR:
    candidates: tuple[int, ...]  # decoder layer counts, largest first, distinct
    extra_inputs: int
    kd_weight: float
    epochs: int


@dataclass(frozen=True)
class StudentIR:
    base_model: str
    method: str  # full | lora
    lora: LoraIR | None  # set exactly when method is lora
    prune: PruneIR | None
    candidates: tuple[str, ...]  # other kinds of student: "linear" (label tasks)
    epochs: int
    learning_rate: float
    batch_size: int
    max_seq_len: int | None  # None: derived from the training rows ("auto")
    seed: int
    grad_accumulation: int
    packing: bool
    dev_share: float
    patience: int
    checkpoint_every: int
    devices: int
    soft_label_weight: float  # label tasks: KL to the teacher's label distribution, mixed with the answer


@dataclass(frozen=True)
class EvaluationIR:
    holdout: float
    metric: str  # accuracy | macro_f1 | exact_match | chrf | rouge_l ("auto" resolved by output type)
    min_score: float  # a gate: changing it re-runs the gate stage (and the package), nothing before
    gate: str  # point | lower_bound: what must reach min_score, the score or its 95% interval's lower bound
    reference: str = "teacher"  # teacher | gold: what min_score is measured against
    max_gap_to_teacher: float = -1.0  # < 0: no such gate; else student - teacher vs gold, lower bound, >= -gap
    max_answer_share: float = 0.5  # text and JSON tasks: the most common answer's share that warns (--strict: fails)
    agree_at: float = 1.0  # text under chrf/rouge_l: a student answer agrees at this score or above; else equal


@dataclass(frozen=True)
class ExportIR:
    quantization: tuple[str, ...]  # fp32 | int8 | int4, in the order given
    target: str  # cpu | cuda | tensorrt
    max_quality_drop: float  # a gate on each variant's score below fp32's


@dataclass(frozen=True)
class CascadeIR:
    min_agreement: float
    min_coverage: float
    base_url: str  # resolved: the cascade's own, else the teacher's, else OpenAI's
    model: str
    api_key_env: str
    timeout_s: float
    max_retries: int


@dataclass(frozen=True)
class DeployIR:
    max_new_tokens: int
    latency_p50_ms: float  # 0 = no budget
    latency_p95_ms: float
    port: int
    max_batch_size: int
    max_request_bytes: int
    max_queue: int
    request_timeout_s: float
    header_timeout_s: float
    max_connections: int
    max_input_tokens: int | None  # None: the student's trained max_seq_len (distillc.student.prompt.input_limit)
    selftest_inputs: int  # 0 = no self-test
    cascade: CascadeIR | None  # None: the student answers every request
    shadow_share: float  # of the student's answers, also asked of the cascade's teacher (drift); 0 = none
    usd_per_hour: float = nokey()  # 0 = not given; only the report's cost figures read it


@dataclass(frozen=True)
class BudgetIR:
    max_usd: float = nokey()  # 0 = no budget; a limit on spending, not an input to any stage


@dataclass(frozen=True)
class SpecIR:
    name: str
    spec_path: str
    task: TaskIR
    inputs: InputsIR
    teacher: TeacherIR
    student: StudentIR
    evaluation: EvaluationIR
    export: ExportIR
    deploy: DeployIR
    budget: BudgetIR

    def slice(self, dotted: str) -> Any:
        """The part of the spec named by a dotted path, e.g. 'deploy.max_new_tokens'."""
        value: Any = self
        for part in dotted.split("."):
            value = getattr(value, part)
        return value


def cache_view(value: Any) -> Any:
    """JSON-able form of an IR slice without the fields that cannot change a stage's output."""
    return plain(value, keyed_only=True)


def plain(value: Any, keyed_only: bool = False) -> Any:
    """JSON-able form of an IR slice (the report records the whole spec a build was made from)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name), keyed_only)
            for f in dataclasses.fields(value)
            if not keyed_only or f.metadata.get("cache", True)
        }
    if isinstance(value, tuple | list):
        return [plain(v, keyed_only) for v in value]
    return value
