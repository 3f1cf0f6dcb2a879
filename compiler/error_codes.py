# ruff: noqa: E501  (a table: one code per line reads best)
"""Every code distillc reports, with what it means and what to do: one registry, one meaning per code.

E1xx the spec, E2xx the build folder, E3xx stages, E4xx the teacher, E5xx gates and the budget, E6xx
`serve`, E7xx `init`; W1xx spec warnings. The README's table is generated from this registry:

    python -m distillc.error_codes README.md
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from distillc.docs import write_section


@dataclass(frozen=True)
class Code:
    title: str
    when: str
    fix: str


CODES: dict[str, Code] = {
    "E100": Code("invalid YAML", "the spec is not valid YAML, or holds a character YAML forbids", "fix the syntax at the line and column shown"),
    "E101": Code("wrong type", "a value has the wrong type (text where a number is expected, ...)", "write the type the message names"),
    "E102": Code("missing key", "a required key is absent", "add it"),
    "E103": Code("invalid value", "a value is out of range or not one of the allowed choices", "use a value the message allows"),
    "E104": Code("unknown key", "a key the spec does not define, often a typo", "use the suggested key"),
    "E105": Code("duplicate key", "a key appears twice in one mapping (YAML would keep only the last)", "keep one"),
    "E106": Code("spec too large", "aliases expand into a huge or endless tree", "write the spec out plainly"),
    "E107": Code("unreadable spec", "the spec file cannot be read, or is not UTF-8", "check the path and the file's encoding"),
    "E108": Code("not a mapping", "the spec is empty, or is a list or a single value", "start from `distillc init`"),
    "E109": Code("invalid spec", "the spec has errors (each reported with its own code and place)", "fix the errors listed"),
    "E110": Code("bad label set", "output type `label` with fewer than two labels, or duplicate labels", "list two or more distinct labels"),
    "E111": Code("bad example", "an example's output breaks the task's output contract", "fix the example's output"),
    "E112": Code("input file not found", "an inputs source's path (or openai_batch output) does not exist", "paths are relative to the spec file"),
    "E113": Code("bad api_key_env", "teacher.api_key_env is not a variable name, or looks like a key itself", "write the variable's name, never the key"),
    "E114": Code("unsupported input file", "an inputs source is not .jsonl, .csv, .txt or .parquet and names no `format`", "convert the file, or name its format"),
    "E115": Code("input field needed", "a .jsonl, .csv, .parquet or pairs source without `field`, pairs without `answer_field`, or openai_batch without `output`", "name the key or column (or the output file)"),
    "E116": Code("metric does not fit the task", "a label metric (accuracy, macro_f1) for a task that is not `label`, or a text metric (chrf, rouge_l) for one that is not `text`", "use exact_match or auto"),
    "E117": Code("schema without json", "`schema` on an output type other than `json`", "remove it, or use type json"),
    "E118": Code("invalid JSON Schema", "task.output.schema is not a valid JSON Schema", "fix the schema at the place shown"),
    "E119": Code("base_url on a local teacher", "teacher.base_url with provider `local`", "remove base_url, or use provider openai"),
    "E120": Code("lora without method lora", "`lora` settings while student.method is not `lora`", "add `method: lora`, or remove them"),
    "E121": Code("variant listed twice", "export.quantization names a variant twice", "list each once"),
    "E122": Code("inputs: source or generate", "inputs has none, or more than one, of `source`, `sources` and `generate`", "keep exactly one"),
    "E123": Code("batch on a local teacher", "teacher.batch with provider `local`", "remove it, or use an endpoint that serves the Batch API"),
    "E125": Code("base_url unusable", "teacher.base_url is not http(s) with a host, or holds credentials", "an http(s) URL with a host; the key in the api_key_env variable"),
    "E126": Code("candidates for a label task", "student.candidates lists `linear` for a task that is not `label`", "remove it: a linear classifier answers with one of a label set"),
    "E124": Code("labels without label", "`labels` on an output type other than `label`", "remove them, or use type label"),
    "E127": Code("option not used by the format", "an inputs source option that its format does not read (answer_field outside pairs, output outside openai_batch, extract outside the message formats)", "remove it, or name the format that reads it"),
    "E128": Code("bad extract", "inputs.source.extract is not a regular expression, or has no group named `input`", "write a pattern with (?P<input>...) around the bare input"),
    "E129": Code("no gold labels", "evaluation.reference gold, or max_gap_to_teacher, without gold_field on a source or inputs.gold", "name where the human labels are"),
    "E130": Code("bad capture address", "distillc capture's --listen is not HOST:PORT, or --upstream is not an http(s) URL with a host", "e.g. --listen 127.0.0.1:8900 --upstream https://api.openai.com/v1"),
    "E131": Code("cascade without an endpoint", "deploy.cascade with a local teacher and no deploy.cascade.teacher base_url and model", "name the endpoint the package hands requests to"),
    "E132": Code("cascade teacher too slow", "deploy.cascade.teacher.timeout_s is not within deploy.request_timeout_s", "lower the teacher's timeout, or raise the request's"),
    "E133": Code("shadowing without a cascade", "deploy.shadow_share without deploy.cascade, whose teacher it asks", "add deploy.cascade, or remove shadow_share"),
    "E134": Code("agree_at on answers that must be equal", "evaluation.agree_at on a label or JSON task, or a text task scored by exact_match", "remove it, or score the text task with chrf or rouge_l"),
    "W120": Code("few examples", "fewer than 3 task examples", "3-5 examples give the teacher a clearer task"),
    "W122": Code("budget without price", "budget.max_usd without teacher prices: nothing counts against it", "set teacher.price_per_1m_tokens"),
    "E201": Code("unknown stage", "--until or --force names no stage", "use a stage the message lists"),
    "E202": Code("build folder busy", "another build holds the build folder's lock", "wait for it, or build into another --out"),
    "E203": Code("not a build folder", "`gc` on a folder without manifest.json", "point it at a build folder"),
    "E204": Code("no build report", "`compare` on a folder without a readable report.json", "point it at a build folder"),
    "E205": Code("cannot write", "the build folder is read-only, or the disk is full", "free space or fix permissions, then re-run: finished stages and journaled answers are kept"),
    "E206": Code("artifact of another version", "a stage's artifact was written under a schema version this distillc does not read", "rebuild the stage with --force, or use the distillc that wrote it"),
    "E207": Code("no journal", "`journal export` on a folder that holds no journal of teacher answers", "point it at a build folder that has labeled"),
    "E301": Code("model not found", "the student or local teacher model (embedded or GGUF) is not there", "install it as the help says, or fix the path"),
    "E302": Code("tokenizer unreadable", "the model's tokenizer cannot be loaded", "check the model folder"),
    "E303": Code("too few examples", "too few labeled inputs to train and evaluate", "add inputs, or raise inputs.generate.count"),
    "E304": Code("degenerate answers", "with --strict: one answer covers more than evaluation.max_answer_share of a text or JSON task's labeled inputs", "check the teacher or the imported answers; raise the share if the task is so"),
    "E310": Code("export parity", "the exported graph answers differently from the PyTorch student", "report it with the build's logs"),
    "E311": Code("export failed", "the ONNX export of the student failed", "read the exporter's log named in the help"),
    "E312": Code("quantization failed", "a quantized variant could not be written", "remove the variant from export.quantization"),
    "E313": Code("labels tokenize alike", "two labels are the same tokens to the student's tokenizer", "make the labels differ in words"),
    "E314": Code("training rows cut", "student.max_seq_len cuts more than 2% of the training rows", "raise student.max_seq_len to the length the message names"),
    "E315": Code("every input refused", "the package's input limit is below every held-out prompt", "raise deploy.max_input_tokens (by default student.max_seq_len)"),
    "E316": Code("linear student failed", "the linear student could not be trained, or its ONNX graph answers otherwise than scikit-learn", "remove `linear` from student.candidates, and report it with the build's logs"),
    "E320": Code("cannot prune", "a student.prune candidate does not fit the model (no layers, or as many as it has)", "list fewer layers than the student has"),
    "E321": Code("cannot add LoRA", "LoRA adapters do not fit the student model", "use method full, or other target modules"),
    "E322": Code("training processes failed", "one of the student.devices training processes exited with an error", "read the error; a re-run resumes from the last checkpoint"),
    "E401": Code("no API key", "teacher.api_key_env is not set in the environment", "export it, or point base_url at a local server"),
    "E402": Code("too many failures", "more teacher requests failed than teacher.max_failed_share", "re-run: only the missing are sent"),
    "E403": Code("no valid answer", "the teacher answered no input within the output contract", "check the teacher and the task"),
    "E404": Code("no input generated", "generation produced nothing usable", "check the teacher, or loosen inputs.generate.guidance"),
    "E405": Code("endpoint refused the key or model", "the endpoint answered 401, 403 or 404", "check teacher.model, base_url and the key"),
    "E406": Code("Batch API failed", "a Batch API call failed after retries", "re-run: submitted batches are resumed"),
    "E407": Code("generation round failed", "a request of a generation round failed; later rounds build on it", "re-run: it goes on from that round"),
    "E408": Code("endpoint refuses every request", "the first requests all got 4xx answers", "check teacher.model, max_tokens and the schema"),
    "E501": Code("student below min_score", "the trained student scores under evaluation.min_score", "more inputs, more epochs or a larger student"),
    "E502": Code("estimate over budget", "labeling is estimated to cross budget.max_usd; nothing was sent", "raise the cap, or label fewer inputs"),
    "E503": Code("budget reached", "budget.max_usd was reached while sending; the rest was not sent", "raise the cap to the amount the help names"),
    "E504": Code("over the latency budget", "no variant meeting min_score is within deploy.latency_budget_ms", "quantize, a smaller student, or prune"),
    "E505": Code("quantization loses quality", "every variant meeting min_score drops more than export.max_quality_drop", "add fp32, or allow a larger drop"),
    "E506": Code("no variant reaches min_score", "no exported variant scores evaluation.min_score as shipped", "add fp32 to export.quantization"),
    "E507": Code("too far below the teacher", "against the human labels, the student's paired gap to the teacher may exceed evaluation.max_gap_to_teacher (the lower bound of its 95% interval)", "more inputs, epochs or a larger student; more gold labels narrow the interval"),
    "E508": Code("no gold to compare", "evaluation.max_gap_to_teacher is set but no held-out input has a human label", "label more inputs, or raise evaluation.holdout"),
    "E509": Code("no cascade threshold", "with deploy.cascade, no confidence threshold keeps min_agreement (at the lower bound of its 95% interval) while the student answers min_coverage of the held-out inputs", "lower min_agreement or min_coverage, or train a better student; more held-out inputs narrow the interval"),
    "E601": Code("not a package", "`serve` on a folder without package.json", "point it at build/<name>/package"),
    "E602": Code("package changed", "`serve` on a package, or a cached one, whose files do not match its manifest", "rebuild it: `distillc build` puts it back"),
    "E701": Code("spec exists", "`init` would overwrite a spec", "pass --force, or another path"),
}  # fmt: skip

START, END = "<!-- error codes: generated by python -m distillc.error_codes -->", "<!-- end of error codes -->"


def markdown_table() -> str:
    rows = [f"| {code} | {c.title} | {c.when} | {c.fix} |" for code, c in CODES.items()]
    return "\n".join(["| code | what | when | what to do |", "|---|---|---|---|", *rows])


def write_readme(path: Path) -> None:
    """Replace the README's table (between START and END) with the registry's."""
    write_section(path, START, END, markdown_table())


if __name__ == "__main__":
    write_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
