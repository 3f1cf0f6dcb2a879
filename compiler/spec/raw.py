"""The raw spec: mirrors the YAML exactly. Unknown keys are errors.

Every default and every field's documentation lives here, in one place: `distillc schema` publishes
them to editors, and the resolver (load.py) copies them into the IR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt
from pydantic_core import PydanticCustomError

from distillc.targets import target_names
from distillc.task import metric_names, type_names

# A policy, not a measurement: where a task's "same answer" lies on its metric is the user's to say
# (evaluation.agree_at); 0.7 chrF keeps a reworded phrase and drops one with another verb or object.
DEFAULT_AGREE_AT = 0.7


def one_of(names: Callable[[], tuple[str, ...]]) -> Any:
    """A string that must be one of `names()`, asked when a spec is checked: the task types and their metrics
    are a registry (distillc.task), and a type added to it is accepted without touching this model."""

    def check(value: Any) -> Any:
        allowed = names()
        if not isinstance(value, str) or value not in allowed:
            quoted = [repr(name) for name in allowed]
            expected = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value

    return Annotated[str, BeforeValidator(check)]


def enum_of(names: Callable[[], tuple[str, ...]]) -> Callable[[dict[str, Any]], None]:
    """The published schema's `enum` for a one_of field, as the registry stands when it is written."""
    return lambda schema: schema.update(enum=list(names()))


class Strict(BaseModel):
    # No inf or NaN: a number must be one the build can compute and write to JSON.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Example(Strict):
    input: str = Field(min_length=1, description="An input as the task will see it.")
    output: str | dict[str, Any] | list[Any] = Field(
        description="The answer the teacher should give: a label, text, or JSON (a mapping, list or JSON text)."
    )


class Output(Strict):
    type: one_of(type_names) = Field(  # type: ignore[valid-type]
        default="text", description="What an answer is.", json_schema_extra=enum_of(type_names)
    )
    labels: list[str] | None = Field(default=None, description="The label set; required for type 'label'.")
    json_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="JSON Schema every answer must satisfy (type 'json' only)."
    )


class Task(Strict):
    instructions: str = Field(min_length=1, description="What to do with each input, as told to the teacher.")
    examples: list[Example] = Field(min_length=1, max_length=20, description="Few-shot examples; 3-5 work best.")
    output: Output = Field(default_factory=Output)


class Source(Strict):
    path: str = Field(
        min_length=1,
        description="Inputs file (.jsonl, .csv, .txt, .parquet), relative to the spec file; for format chat_log "
        "a file or a folder of .jsonl captures.",
    )
    format: Literal["jsonl", "csv", "txt", "parquet", "openai_chat", "openai_batch", "chat_log", "pairs"] | None = (
        Field(
            default=None,
            description="How to read the file; default from its extension (bare inputs). Answers already paid "
            "for are imported, never asked again, from: 'openai_chat' (OpenAI chat fine-tuning JSONL, the last "
            "assistant turn is the answer), 'openai_batch' (a Batch API input file joined with `output` by "
            "custom_id), 'chat_log' (request/response records as logging gateways and `distillc capture` write "
            "them), 'pairs' (.jsonl, .csv or .parquet with `field` and `answer_field`).",
        )
    )
    field: str | None = Field(
        default=None, description="Key (.jsonl) or column (.csv, .parquet) holding the input text."
    )
    answer_field: str | None = Field(
        default=None, description="format pairs: the key or column holding the answer already given."
    )
    output: str | None = Field(
        default=None, description="format openai_batch: the Batch API's output file, relative to the spec file."
    )
    extract: str | None = Field(
        default=None,
        description="Message formats: a regular expression whose group named `input` is cut from the last user "
        "message, so that a production prompt template yields the bare input, e.g. 'Ticket:\\n(?P<input>.*)'.",
    )
    gold_field: str | None = Field(
        default=None,
        description="Key (or column) holding a human label for the row, where there is one: the evaluation "
        "then scores the student, the teacher and the baselines against it.",
    )
    reask_invalid: bool = Field(
        default=False,
        description="Ask the teacher for inputs whose imported answer breaks the task's output contract "
        "(otherwise they are dead-lettered).",
    )
    limit: int | None = Field(default=None, ge=1, le=10**9, description="Use at most this many inputs.")


class Gold(Strict):
    path: str = Field(min_length=1, description="Human labels (.jsonl, .csv, .parquet), relative to the spec file.")
    field: str = Field(min_length=1, description="Key or column holding the input, matched to the inputs'.")
    gold_field: str = Field(min_length=1, description="Key or column holding the human label.")


class Generate(Strict):
    count: int = Field(ge=1, le=1_000_000, description="How many distinct inputs to make.")
    seed: int = Field(
        default=0, ge=0, le=2**32 - 1, description="Fixes which examples each request shows, and local sampling."
    )
    guidance: str | None = Field(
        default=None, description="What the inputs should cover, e.g. topics, lengths, tones, languages."
    )
    per_request: int = Field(default=10, ge=1, le=100, description="Inputs asked for in one teacher request.")
    max_requests: int | None = Field(
        default=None,
        ge=1,
        le=10**9,
        description="Stop after this many requests even if count is not reached (default: 3x).",
    )
    temperature: float = Field(default=1.0, ge=0, le=2, description="Sampling temperature for generation.")


class Inputs(Strict):
    source: Source | None = Field(default=None, description="Read inputs from a file (an existing system's export).")
    sources: list[Source] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Several files, e.g. an import of answered traffic and bare inputs; exact repeats across "
        "them count once, and answered sources are read first so that an input they answer is never asked.",
    )
    generate: Generate | None = Field(
        default=None, description="Have the teacher write inputs from the task's examples (few-shot)."
    )
    gold: Gold | None = Field(
        default=None,
        description="Human labels for some inputs, joined by input (equal but for case, punctuation and spacing).",
    )
    dedup: Literal["near", "exact", "off"] = Field(
        default="near",
        description="Drop repeated inputs: 'exact' those equal but for case, punctuation and spacing; 'near' "
        "also those whose character 5-grams overlap 60% or more with an earlier input's (Jaccard, MinHash); "
        "'off' keeps every row, as for traffic whose repeats should weigh.",
    )


class Price(Strict):
    input: float = Field(default=0.0, ge=0, le=100_000, description="US dollars per 1M prompt tokens.")
    output: float = Field(default=0.0, ge=0, le=100_000, description="US dollars per 1M completion tokens.")


class Teacher(Strict):
    provider: Literal["openai", "local"] = Field(
        default="openai", description="'openai': any OpenAI-compatible endpoint; 'local': transformers, in process."
    )
    model: str = Field(
        min_length=1, description="Model name at the endpoint; for 'local' a directory, a .gguf file or a built-in."
    )
    base_url: str | None = Field(default=None, description="Endpoint, e.g. http://127.0.0.1:8000/v1; none = OpenAI.")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="NAME of the variable that holds the API key.")
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=256, ge=1, le=32768, description="Longest answer the teacher may give.")
    max_concurrency: int = Field(default=8, ge=1, le=1024, description="Requests in flight at once.")
    requests_per_minute: int | None = Field(default=None, ge=1, le=10**9, description="Client-side request rate limit.")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, le=10**12, description="Client-side token rate limit (prompt + max_tokens per request)."
    )
    max_failed_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Share of requests that may still fail after retries; they are listed, not trained on.",
    )
    timeout_s: float = Field(default=120.0, gt=0, le=3600, description="Seconds before one request is abandoned.")
    max_retries: int = Field(default=3, ge=0, le=20, description="Retries of a failed request, with backoff.")
    price_per_1m_tokens: Price = Field(default_factory=Price, description="For cost estimates and the budget.")
    batch: bool = Field(
        default=False,
        description="Label through the OpenAI Batch API: half the price, answers within 24 h; "
        "a crashed build resumes the same batch.",
    )
    batch_poll_s: float = Field(default=30.0, gt=0, le=3600, description="Seconds between polls of a batch.")


class Lora(Strict):
    r: int = Field(default=16, ge=1, le=1024, description="Rank of the low-rank update.")
    alpha: float = Field(default=32.0, gt=0, le=10_000, description="Scaling of the update (alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        default=None, description="Module names to adapt, e.g. [q_proj, v_proj]; default: every linear layer."
    )


class Prune(Strict):
    candidates: list[PositiveInt] = Field(
        min_length=1,
        max_length=8,
        description="Decoder layer counts to try, e.g. [20, 15]. Each is cut from the trained student (the "
        "contiguous block of layers that changes its hidden states least is removed) and distilled from it; "
        "the smallest that passes the gates ships.",
    )
    extra_inputs: int = Field(
        default=2000,
        ge=0,
        le=1_000_000,
        description="Inputs from inputs.source beyond its limit, answered by the trained student (no teacher "
        "calls) and added to the recovery training.",
    )
    kd_weight: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Weight of the KL to the trained student's logits on the answer tokens, against the "
        "answers' cross-entropy.",
    )
    epochs: int | None = Field(default=None, ge=1, le=1000, description="Recovery epochs; default: student.epochs.")


class Student(Strict):
    base_model: str = Field(min_length=1, description="HF id, local directory, .gguf file or a built-in name.")
    method: Literal["full", "lora"] = Field(
        default="full", description="full: train every weight; lora: train low-rank adapters, merged after training."
    )
    lora: Lora | None = Field(default=None, description="LoRA settings (method: lora).")
    prune: Prune | None = Field(
        default=None,
        description="Smaller students cut from the trained one by depth and distilled from it; each is "
        "evaluated, exported and verified, and the report lists them all.",
    )
    candidates: list[Literal["linear"]] = Field(
        default_factory=list,
        max_length=1,
        description="Other kinds of student to try beside the decoder, under the same gates; the smallest that "
        "passes ships. `linear` (label tasks): logistic regression over TF-IDF word features (scikit-learn), "
        "served behind /v1/predict only, since it generates no text.",
    )
    epochs: int = Field(default=3, ge=1, le=1000)
    learning_rate: float = Field(default=5e-5, gt=0, le=1)
    batch_size: int = Field(default=8, ge=1, le=4096)
    max_seq_len: Annotated[int, Field(ge=8, le=131072)] | Literal["auto"] = Field(
        default="auto",
        description="Prompt + answer tokens a training row may have; longer prompts are cut from the left, with a "
        "warning, and past 2% of the rows the build stops (E314) with the length that would fit. `auto`: the "
        "training rows' length at the 99.5th percentile, rounded up to a multiple of 16 (the report says which).",
    )
    grad_accumulation: int = Field(default=1, ge=1, le=1024, description="Batches per optimizer step.")
    packing: bool = Field(
        default=True,
        description="Lay each batch's rows end to end, attention kept within each row: no compute on padding.",
    )
    dev_share: float = Field(
        default=0.1,
        ge=0,
        lt=0.5,
        description="Share of the training rows kept aside to pick the best weights and stop early; 0: none.",
    )
    patience: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Dev measurements without improvement before training stops; 0: train every epoch. "
        "The weights with the best dev loss are kept either way.",
    )
    checkpoint_every: int = Field(
        default=50,
        ge=0,
        description="Optimizer steps between checkpoints and dev measurements (also at each epoch's end); "
        "a build that crashed mid-train resumes from the last. 0: at epoch ends only.",
    )
    devices: int = Field(
        default=1, ge=1, le=1024, description="Training processes, one per GPU (DDP through accelerate)."
    )
    soft_label_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Label tasks: weight of the teacher's distribution over the labels (when it gives one) "
        "against its answer alone; 0 trains on the answers only.",
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1)


class Evaluation(Strict):
    holdout: float = Field(default=0.15, gt=0, lt=0.5, description="Share of inputs held out from training.")
    metric: one_of(lambda: ("auto", *metric_names())) = Field(  # type: ignore[valid-type]
        default="auto",
        json_schema_extra=enum_of(lambda: ("auto", *metric_names())),
        description="auto: accuracy for labels, exact_match for text and json. Labels: accuracy, macro_f1; text: "
        "chrf (character n-gram F-score) or rouge_l, for answers that may say the same in other words.",
    )
    min_score: float = Field(
        default=0.8, ge=0, le=1, description="Below this student-vs-teacher score the build fails."
    )
    gate: Literal["point", "lower_bound"] = Field(
        default="point",
        description="What must reach min_score: the score itself (point), or the lower bound of its 95% "
        "bootstrap interval over the held-out inputs (lower_bound: passing means passing with confidence).",
    )
    reference: Literal["teacher", "gold"] = Field(
        default="teacher",
        description="What the student is scored against for min_score: the teacher's answers, or the human "
        "labels (gold) of the held-out inputs that have one.",
    )
    max_gap_to_teacher: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="With gold labels: the student must score within this of the teacher (an incumbent model) "
        "against gold, on the lower bound of the 95% interval of their paired difference.",
    )
    agree_at: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Text tasks scored by chrf or rouge_l: a student answer agrees with the teacher's when its "
        f"score against the teacher's is at least this (default {DEFAULT_AGREE_AT:g}). Agreement is what an "
        "answer's confidence is measured to rank (its AUROC) and what deploy.cascade.min_agreement counts; "
        "label and JSON answers agree when equal.",
    )
    max_answer_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Text and JSON tasks: the most common labeled answer may cover at most this share of the "
        "inputs; more (a teacher that answers 'unknown' to most) warns, and fails `distillc build --strict`.",
    )


class LatencyBudget(Strict):
    p50: float | None = Field(default=None, gt=0, le=3_600_000)
    p95: float | None = Field(default=None, gt=0, le=3_600_000)


class CascadeTeacher(Strict):
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint the package hands low-confidence requests to, e.g. "
        "http://teacher:8000/v1. Default: teacher.base_url (or OpenAI's, for an 'openai' teacher without one).",
    )
    model: str | None = Field(default=None, min_length=1, description="Model name there. Default: teacher.model.")
    api_key_env: str | None = Field(
        default=None,
        description="NAME of the variable that holds that endpoint's key where the package runs: read at serve "
        "time, never written to the image, the manifest or a log. Default: teacher.api_key_env.",
    )
    timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds one teacher call may take (within deploy.request_timeout_s); past it, the student's "
        "answer is returned, marked as a fallback.",
    )
    max_retries: int = Field(default=1, ge=0, le=5, description="Retries of a failed teacher call, within timeout_s.")


class Cascade(Strict):
    min_agreement: float = Field(
        gt=0,
        le=1,
        description="Agreement with the teacher the student must keep on the requests it answers itself, at the "
        "lower bound of its 95% interval on held-out inputs; the build picks the lowest confidence threshold that "
        "does, and the rest go to the teacher.",
    )
    min_coverage: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Least share of requests the student must answer itself; the build fails when no threshold "
        "keeps min_agreement at this coverage.",
    )
    teacher: CascadeTeacher = Field(
        default_factory=CascadeTeacher, description="The endpoint the package hands requests to, and how it waits."
    )


class Deploy(Strict):
    max_new_tokens: int = Field(default=32, ge=1, le=8192, description="Longest answer the student may give.")
    latency_budget_ms: LatencyBudget = Field(default_factory=LatencyBudget)
    port: int = Field(default=8080, ge=1, le=65535, description="Port the package's server listens on.")
    max_batch_size: int = Field(
        default=8, ge=1, le=256, description="Concurrent requests answered in one batched generation (1: no batching)."
    )
    max_request_bytes: int = Field(
        default=65536,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest request body the server reads; a larger one gets HTTP 413 without being read.",
    )
    max_queue: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Requests that may wait for the model; when that many wait, more get HTTP 429 with Retry-After.",
    )
    selftest_inputs: int = Field(
        default=32,
        ge=0,
        le=1000,
        description="Held-out inputs the package carries, with the answers the build measured, to check its "
        "answers on each CPU it starts on before it turns ready (its self-test). They are stored in clear text "
        "in selftest.json; 0 ships no inputs and no self-test.",
    )
    request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A request not answered within this many seconds gets HTTP 504, and one still waiting is "
        "dropped rather than computed for a client that has gone.",
    )
    header_timeout_s: float = Field(
        default=5.0,
        ge=0.5,
        le=300,
        description="A request must arrive within this many seconds of its connection opening (or of the last "
        "answer on it), plus one second per KiB of body it declares; a slower or idle connection is closed.",
    )
    max_connections: int = Field(
        default=1024,
        ge=8,
        le=1_000_000,
        description="Connections the server keeps open; at the cap a new one closes the connection that has "
        "waited longest without sending a whole request (capped by the process's open-file limit).",
    )
    max_input_tokens: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Longest prompt (instructions and input, in tokens) the server answers; longer ones get "
        "HTTP 422. Default: student.max_seq_len as trained (derived from the data when `auto`). The build scores the "
        "package under the same limit: a held-out input it would refuse counts as a wrong answer.",
    )
    usd_per_hour: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="What the machine serving the student costs per hour, in US dollars: with the throughput the "
        "build measures, the report's cost per 1,000 requests (and a local teacher's, on the same machine).",
    )
    cascade: Cascade | None = Field(
        default=None,
        description="Answer with the student when it is sure enough, and hand the rest to a teacher endpoint: "
        "the build chooses the confidence threshold under min_agreement.",
    )
    shadow_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of the requests the student answers that the package also asks the cascade's teacher, "
        "in the background (never delaying the answer; dropped under load), to export a rolling agreement for "
        "drift alerts. Needs deploy.cascade.",
    )


# Every variant, by default: each is gated on quality as shipped, so the fastest one that keeps the score
# ships, and the slow fp32 only when the others lose quality.
DEFAULT_QUANTIZATION = ("fp32", "int8", "int4")


class Export(Strict):
    quantization: list[Literal["fp32", "int8", "int4"]] = Field(
        default=list(DEFAULT_QUANTIZATION),  # a copy per spec: pydantic copies mutable defaults
        min_length=1,
        description="Variants to try. Each is scored on the held-out inputs as shipped, on the building "
        "machine's CPU; the fastest that meets evaluation.min_score, export.max_quality_drop and the latency "
        "budget ships, and proves itself on the CPU it is deployed on before it serves (its self-test).",
    )
    target: one_of(target_names) = Field(  # type: ignore[valid-type]
        default="cpu",
        json_schema_extra=enum_of(target_names),
        description="Where the package runs: onnxruntime on CPU; onnxruntime-gpu with CUDA; or with TensorRT "
        "(engines cached, CUDA for what TensorRT cannot run).",
    )
    max_quality_drop: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="How far below fp32's score (evaluation.metric, on the held-out inputs, as shipped) a "
        "quantized variant may fall and still ship. fp32 is always scored, as the reference.",
    )


class Budget(Strict):
    max_usd: float | None = Field(
        default=None, gt=0, le=10**9, description="Refuse to spend more than this on the teacher."
    )


class RawSpec(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, title="distillc spec")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64, description="Names the build folder.")
    task: Task
    inputs: Inputs
    teacher: Teacher
    student: Student
    evaluation: Evaluation = Field(default_factory=Evaluation)
    export: Export = Field(default_factory=Export)
    deploy: Deploy = Field(default_factory=Deploy)
    budget: Budget = Field(default_factory=Budget)
