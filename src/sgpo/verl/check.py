"""Checks a verl launch must pass before it spends a cluster's time (examples/verl/*.sh).

Each one guards against a way a run can silently stop doing what the plan says:
- sampling: the plan's p_hat was measured with the profile's temperature, top_p and
  max_new_tokens; generating with other settings trains on a policy whose success rates the plan
  does not know (refused unless explicitly allowed);
- group sizes: a row without ``__rollout_n__`` falls back to ``actor_rollout_ref.rollout.n`` in
  verl's v1 rollout worker, and a group of one gets its raw reward as advantage;
- batch size: verl's dataloader uses drop_last=True, so fewer rows than data.train_batch_size is
  zero steps per epoch (and verl exits 0 having trained nothing);
- the data: an export given with SKIP_EXPORT=1 must be the plan's, written for the launch's
  method (a baseline's export trains every query at one G, sGPO's the kept ones in order);
- prompt lengths: verl 0.9.1 stores data.truncation but never applies it; the agent loop cuts an
  overlong prompt from the left with only a warning (experimental/agent_loop/agent_loop.py,
  _cap_text_prompt_length). The check counts tokens the way verl builds them: the chat template
  with add_generation_prompt=True.
Every function returns the problems as sentences (empty list: fine), so callers can show all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgpo.plan import PlanRow, kept_in_order
from sgpo.profile_match import sampling_differences
from sgpo.verl.export import ROLLOUT_N

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def plan_sampling(plan_meta: dict) -> dict:
    """The sampling settings the plan's profile was made with (profile metadata "sampling")."""
    sampling = plan_meta.get("sampling")
    if not isinstance(sampling, dict) or not {"temperature", "top_p", "max_new_tokens"} <= set(
        sampling
    ):
        raise ValueError(
            "the plan's metadata records no sampling settings (temperature, top_p, "
            "max_new_tokens); re-run sgpo profile and sgpo plan with this version of sgpo"
        )
    return {
        "temperature": float(sampling["temperature"]),
        "top_p": float(sampling["top_p"]),
        "max_new_tokens": int(sampling["max_new_tokens"]),
    }


def sampling_mismatches(
    plan_meta: dict,
    temperature: float | None,
    top_p: float | None,
    max_response_length: int | None,
) -> list[str]:
    """One sentence per launch setting that differs from the plan's profile, naming both (as
    the launch's variable and the check's option); a setting not given is not compared."""
    names = {
        "temperature": ("TEMPERATURE", "--temperature"),
        "top_p": ("TOP_P", "--top-p"),
        "max_new_tokens": ("MAX_RESPONSE_LENGTH", "--max-response-length"),
    }
    given = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_response_length}
    launch = {key: float(value) for key, value in given.items() if value is not None}
    return [
        f"{names[key][0]}={value:g} ({names[key][1]}) but the plan was profiled with "
        f"sampling.{key}={profiled}"
        for key, value, profiled in sampling_differences(plan_sampling(plan_meta), launch)
    ]


def first_rows(offenders: list[tuple[int, str]], shown: int = 5) -> str:
    """'row 3: x, row 7: y, ...': the first few offending rows of a check."""
    listed = ", ".join(f"row {i}: {value}" for i, value in offenders[:shown])
    return listed + (", ..." if len(offenders) > shown else "")


def group_size_problems(rows: list[dict]) -> list[str]:
    """Rows whose __rollout_n__ is missing or below 2 (see the module docstring)."""
    bad = [(i, r.get(ROLLOUT_N)) for i, r in enumerate(rows) if not (r.get(ROLLOUT_N) or 0) >= 2]
    if not bad:
        return []
    shown = first_rows([(i, repr(n)) for i, n in bad])
    return [
        f"{len(bad)} of {len(rows)} rows have no {ROLLOUT_N} >= 2 ({shown}"
        f"); verl would fall back to rollout.n or give a group "
        f"of one its raw reward as advantage. Re-export the plan (plan.g_min >= 2)"
    ]


def export_plan_problems(
    rows: list[dict],
    meta: dict,
    plan_rows: list[PlanRow],
    method: str,
    group_size: int | None = None,
) -> list[str]:
    """An sgpo export that is not the plan's, or not the launch method's: sGPO's holds the
    plan's kept queries in curriculum order with their G, a baseline's (grpo, dapo) every query
    of the plan at one G (group_size, the launch's, when given). A parquet sgpo did not write
    (no export metadata) is not compared."""
    export = meta.get("export")
    if export is None:
        return []
    fixed = export.get("fixed_group_size")
    if method == "sgpo" and fixed is not None:
        return [f"it is a baseline's export (every query at G = {fixed}), not sGPO's"]
    if method != "sgpo" and fixed is None:
        return [f"it is sGPO's export (the plan's kept queries), not a {method} baseline's"]
    if fixed is not None and group_size is not None and fixed != group_size:
        return [f"its groups are G = {fixed}, not the launch's GROUP_SIZE={group_size}"]
    exported = [(str((r.get("extra_info") or {}).get("query_id")), r.get(ROLLOUT_N)) for r in rows]
    if fixed is None:
        planned = [(r.query_id, r.group_size) for r in kept_in_order(plan_rows)]
        if exported != planned:
            return ["its queries, order or group sizes are not the plan's kept queries'"]
    elif sorted(q for q, _ in exported) != sorted(r.query_id for r in plan_rows):
        return ["its queries are not the plan's"]
    return []


def batch_problems(n_rows: int, train_batch_size: int) -> list[str]:
    """verl's drop_last dataloader yields n_rows // train_batch_size steps per epoch."""
    # said as both set it: the export's and check's flag, and the launch's variable
    name = "the train batch size (--train-batch-size; the launch's TRAIN_BATCH_SIZE)"
    if train_batch_size < 1:
        return [f"{name} must be >= 1, got {train_batch_size}"]
    if n_rows < train_batch_size:
        return [
            f"the dataset has {n_rows} rows but {name} is {train_batch_size}: verl's dataloader "
            f"drops the incomplete batch, so an epoch would have 0 steps; use {n_rows} or fewer"
        ]
    return []


def token_budget_problems(
    max_tokens_per_gpu: int, max_prompt_length: int, max_response_length: int
) -> list[str]:
    """verl's dynamic batching packs micro-batches of at most ppo_max_token_len_per_gpu tokens
    and asserts that the longest sequence fits one: a smaller budget fails mid-run, after the
    step's generation was paid."""
    longest = max_prompt_length + max_response_length
    if max_tokens_per_gpu >= longest:
        return []
    return [
        f"MAX_TOKENS_PER_GPU={max_tokens_per_gpu} is below MAX_PROMPT_LENGTH + "
        f"MAX_RESPONSE_LENGTH = {longest}: verl's dynamic batching could not fit a "
        "full-length sequence in a micro-batch and would stop mid-run; raise it, or leave it "
        "unset (max(16384, the two lengths' sum))"
    ]


def prompt_token_counts(rows: list[dict], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Prompt tokens of each row as verl's agent loop builds them (chat template + generation
    prompt)."""
    counts = []
    for row in rows:
        ids = tokenizer.apply_chat_template(
            list(row["prompt"]), add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers >= 5 returns an encoding
            ids = ids["input_ids"]
        counts.append(len(ids))
    return counts


def prompts_open_thinking(rows: list[dict], tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether verl's prompts, the rows' chat messages under MODEL's chat template with its
    generation prompt, end inside a <think> they open (DeepSeek-R1-Distill, QwQ): each
    response then begins inside the thinking (sgpo.verifiers.opens_thinking)."""
    from sgpo.verifiers import opens_thinking

    if not rows or tokenizer.chat_template is None:
        return False
    text = tokenizer.apply_chat_template(
        list(rows[0]["prompt"]), add_generation_prompt=True, tokenize=False
    )
    return opens_thinking(text)


def model_tokenizer(model: str) -> tuple[PreTrainedTokenizerBase | None, list[str]]:
    """MODEL's tokenizer, loaded once for the checks that read it, or the problem loading it."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model), []
    except (OSError, ValueError) as e:
        return None, [f"cannot load the tokenizer of MODEL={model} to check prompt lengths: {e}"]


def prompt_length_problems(
    rows: list[dict], tokenizer: PreTrainedTokenizerBase, model: str, max_prompt_length: int
) -> tuple[list[str], int]:
    """Rows whose prompt is longer than MAX_PROMPT_LENGTH under MODEL's tokenizer, and the
    longest prompt's tokens (0 where there is no chat template to count them with)."""
    if tokenizer.chat_template is None:
        return [
            f"MODEL={model} has no chat template; verl formats every prompt with it "
            f"(the export writes chat messages)"
        ], 0
    counts = prompt_token_counts(rows, tokenizer)
    longest = max(counts, default=0)
    over = [(i, n) for i, n in enumerate(counts) if n > max_prompt_length]
    if not over:
        return [], longest
    shown = first_rows([(i, str(n)) for i, n in over])
    return [
        f"{len(over)} prompts are longer than MAX_PROMPT_LENGTH={max_prompt_length} tokens "
        f"({shown}; longest {longest}); verl 0.9.1 would "
        f"cut them from the left with only a warning. Raise MAX_PROMPT_LENGTH to "
        f"{longest}"
    ], longest


def context_problems(model: str, longest_prompt: int, max_response_length: int) -> list[str]:
    """The longest prompt and MAX_RESPONSE_LENGTH past MODEL's context (its config's
    max_position_embeddings, where it declares one without rope scaling, which may stretch
    it): its responses would run into positions the model never saw. verl pads prompts without
    spending positions on the padding, so MAX_PROMPT_LENGTH itself is not what counts."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError):  # a tokenizer alone: no context to compare with
        return []
    text = config.get_text_config()
    context = getattr(text, "max_position_embeddings", None)
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    if not isinstance(context, int) or rope.get("rope_type", "default") != "default":
        return []
    if longest_prompt + max_response_length <= context:
        return []
    return [
        f"the longest prompt ({longest_prompt} tokens) and MAX_RESPONSE_LENGTH="
        f"{max_response_length} add up to more than MODEL={model}'s context of {context} "
        f"positions (max_position_embeddings): responses would run past it. Lower "
        f"MAX_RESPONSE_LENGTH to {max(context - longest_prompt, 0)} (the plan was profiled "
        "with its own, ALLOW_SAMPLING_MISMATCH=1), or use a model with a longer context"
    ]
