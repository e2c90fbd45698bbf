"""Whether a profile (or a plan's profile) fits a run config: same task, model and samples.

sgpo plan, sgpo train, train.reuse_profile and export-verl read p_hat as the share of samples a
verifier scored correct; under another task, model, verifier, prompt formatting or sampling
that share describes other samples, so each refuses such a profile here and names the field.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sgpo import rundir
from sgpo.config import RunConfig, TaskConfig
from sgpo.errors import DataError
from sgpo.validate import check_task_text

if TYPE_CHECKING:
    from sgpo.tasks import TaskData

log = logging.getLogger(__name__)


def p_hat_estimates_p(meta: dict) -> bool:
    """False for a plan or profile from a profile stopped at each query's first success
    (profile.adaptive_stop): its p_hat is 1 / samples drawn, not an estimate of p."""
    return meta.get("adaptive_stop") != "first_success"


def sampling_differences(
    profiled: dict, launch: dict[str, float]
) -> list[tuple[str, float, float]]:
    """(key, launch's value, profile's value) for each sampling setting (temperature, top_p,
    max_new_tokens) that a launch outside sgpo (verl, sgpo.trl) sets otherwise than the profile
    recorded; keys the profile does not record are not compared."""
    return [
        (key, value, profiled[key])
        for key, value in launch.items()
        if key in profiled and float(profiled[key]) != float(value)
    ]


def check_profile_matches(
    meta: dict,
    config: RunConfig,
    source: str,
    expected_model: str | None,
    all_settings: bool = False,
    task: TaskData | None = None,
) -> TaskData:
    """A profile (or a plan's profile) made under another model or dataset, or of one shard
    only, would plan the wrong queries, and one that scored other samples would train on a
    wrong p_hat (check_profile_samples); to plan (all_settings) or with train.reuse_profile
    every setting of the samples must be this config's (check_profile_settings). Returns the
    config's task, loaded for the check unless given (task: the caller's, loaded already: a
    large file is read once)."""
    from sgpo.tasks import data_identity, load_run_task

    shard = meta.get("shard")
    if shard:
        where = "/".join(map(str, shard)) if isinstance(shard, list) else repr(shard)
        raise DataError(
            f"{source}: field 'shard' is {where}: a profile of one shard (sgpo profile --shard) "
            "holds only that shard's queries; join all shards with `sgpo profile merge` and "
            "plan from the merged profile"
        )
    # Only the training queries matter to a profile: an edited eval split needs none redone
    # (a profile from before train_queries was recorded is compared by its whole task as
    # profiled: the training split alone, not a caller's task with its eval split read).
    recorded = meta.get("train_queries")
    if task is None or recorded is None:
        task = load_run_task(config, require_eval=False)
    if meta.get("task") != task.source and (
        recorded is None or recorded != data_identity(task)["train"]
    ):
        if _FOLDER_PATH.sub(r"datasets:\1/", str(meta.get("task"))) == task.source:
            raise DataError(
                f"{source}: profiled by an earlier sgpo, which named a local datasets folder by "
                f"its path as written ({meta.get('task')!r}); this one names it by the folder's "
                "name, the same from any working directory, and its query ids changed with it "
                "(<folder>:<split>:<row>): re-run sgpo profile with this config, or finish this "
                "run with the earlier sgpo"
            )
        raise DataError(
            f"{source}: field 'task' is {meta.get('task')!r} but the config's task is "
            f"{task.source!r}; re-run sgpo profile with this config"
        )
    if expected_model is not None and not same_model(meta, expected_model):
        raise DataError(
            f"{source}: field 'model' is {meta.get('model')!r} but the config's model is "
            f"{expected_model!r} (another folder or hub id, and not the same weights); re-run "
            "sgpo profile with this config"
        )
    if all_settings or config.train.reuse_profile:
        check_profile_settings(meta, config, source, expected_model, config.train.reuse_profile)
    else:
        check_profile_samples(meta, config, source, expected_model)
    return task


# A local datasets folder as an earlier sgpo recorded it: by its path as written
# ("datasets:/data/gsm8k_local/train@sha256:..."), where sgpo now records its name.
_FOLDER_PATH = re.compile(r"datasets:(?:[^,@)]*/)?([^/,@)]+)/+(?=[^/,@)]+@sha256:)")


def same_model(meta: dict, model: str) -> bool:
    """Whether model is the one the profile recorded: the same text, or a local folder written
    otherwise (a trailing slash, a relative path, moved or copied) holding the weights the
    profile recorded (or, for a profile without their sha256, the same folder)."""
    recorded = meta.get("model")
    if recorded == model:
        return True
    here = Path(model).expanduser()
    if not here.is_dir():  # a hub id: its name is all there is
        return False
    weights = (meta.get("inputs") or {}).get("model_sha256")
    if weights is not None:
        return rundir.weights_sha256(model) == weights
    there = Path(str(recorded)).expanduser()
    return there.is_dir() and there.resolve() == here.resolve()


def warn_of_other_sampling(meta: dict, config: RunConfig, source: str) -> None:
    """A warning naming the SAMPLING_SETTINGS in which config differs from the profile (sgpo
    plan refuses them; a plan trained so is what a user may want, but rarely by accident)."""
    differ = differing_settings(meta, config, None, SAMPLING_SETTINGS)
    if differ:
        log.warning(
            "%s: profiled with other sampling than this run (%s): the plan's success rates, "
            "filter and group sizes were measured at the profile's; for a plan of this "
            "sampling re-run sgpo profile and sgpo plan with this config",
            source,
            shown(differ),
        )


def check_profile_covers(
    profile_rows: list[dict], meta: dict, task: TaskData, source: Path
) -> None:
    """A profile must hold every training query once: a profile chunk, or a profile with rows
    deleted, would plan (and train) a part of the data, the rest left out without a word."""
    from sgpo.profile import CHUNK_SIZE_KEY

    expected = {q.query_id for q in task.train}
    profiled = {r["query_id"] for r in profile_rows}
    missing, extra = expected - profiled, profiled - expected
    if missing or extra:
        said = [f"{len(missing)} of the task's {len(expected)} training queries are not in it"]
        if missing:
            said[-1] += f" (e.g. {sorted(missing)[:3]})"
        if extra:
            said.append(f"{len(extra)} of its queries are not the task's, e.g. {sorted(extra)[:3]}")
        if CHUNK_SIZE_KEY in meta:
            said.append("it is one chunk of a profile: plan from the whole profile.parquet")
        raise DataError(f"{source}: " + "; ".join(said))
    check_task_text(
        ((r["query_id"], r["prompt"], r["answer"]) for r in profile_rows),
        {q.query_id: q for q in task.train},
        source,
        "sgpo plan copies it into the plan, which the TRL path and the verl export train on; "
        "change the task's data and profile again rather than edit the profile's text",
    )


# Config keys that change what a profile's samples are (verifier, prompt formatting, sampling)
# or how finely p_hat is measured (samples per query); with the task and model
# (check_profile_matches) they must be the profile's for sgpo plan and train.reuse_profile.
# Execution settings (sampling.batch_size, profile.chunk_size, profile.engine, device) and the
# seed (another draw of the same distribution) are left out; of the adaptive settings only
# what the plan's reading of p_hat depends on counts (check_profile_settings).
# Of them, what a sample is and how it is scored: a plan's p_hat means nothing under others,
# so training on a plan (or exporting it) needs these to be its profile's, whatever else changes.
# How a sample is scored: what a TRL reward function (sgpo.trl.VerifierReward) must share.
VERIFIER_SETTINGS = ("task.verifier", "task.verifier_kwargs", "task.verifier_reward_range")
# How a response is scored and which scores count as successes (n_correct, p_hat, accuracy).
SCORING_SETTINGS = (*VERIFIER_SETTINGS, "task.success_threshold")
SAMPLE_SETTINGS = (
    *SCORING_SETTINGS,
    "model.use_chat_template",
    "model.system_prompt",
    "model.prompt_template",
)
# How a sample is drawn: a plan drawn otherwise still trains (its queries and groups are
# valid), but its p_hat, filter and G were measured at the profile's sampling.
SAMPLING_SETTINGS = ("sampling.temperature", "sampling.top_p", "sampling.max_new_tokens")
PROFILE_SETTINGS = (*SAMPLE_SETTINGS, *SAMPLING_SETTINGS, "profile.k")


def settings_of(flat: dict, keys: tuple[str, ...] = PROFILE_SETTINGS) -> dict:
    """The `keys` entries of a flattened config (dotted keys)."""
    return {
        key: value
        for key, value in flat.items()
        if any(key == name or key.startswith(name + ".") for name in keys)
    }


def profiled_settings(meta: dict) -> dict:
    """The PROFILE_SETTINGS a profile was made with, from its metadata: the config keys it
    records ("inputs"; a key an older sgpo did not have yet takes its default), or for a
    profile written before that, its sampling fields and k only."""
    recorded = (meta.get("inputs") or {}).get("config")
    if isinstance(recorded, dict):
        defaults = rundir.flatten(RunConfig().model_dump(mode="json"))
        missing = {
            key: value
            for key, value in defaults.items()
            if not any(
                k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in recorded
            )
        }
        return settings_of(missing | recorded)
    flat = {f"sampling.{k}": v for k, v in (meta.get("sampling") or {}).items()}
    if "k" in meta:
        flat["profile.k"] = meta["k"]
    return settings_of(flat)


def profiled_success_threshold(meta: dict) -> float:
    """The rescaled reward from which the profile counted a sample correct (its
    task.correct_threshold; the default for a profile that does not record its task)."""
    profiled = profiled_settings(meta)
    return TaskConfig(
        verifier_reward_range=profiled.get("task.verifier_reward_range") or (0.0, 1.0),
        success_threshold=profiled.get("task.success_threshold"),
    ).correct_threshold


def check_profile_settings(
    meta: dict, config: RunConfig, source: str, expected_model: str | None, reuse: bool = False
) -> None:
    """Refuse a profile made with other PROFILE_SETTINGS than config's, other initial weights
    (model_sha256, for a local model), or stopped at each query's first success when config
    reads p_hat as an estimate of p (a full or both-outcomes profile serves a first-success
    config: its plan only tells solved from never-solved); names each key with both values."""
    differ = differing_settings(meta, config, expected_model, PROFILE_SETTINGS)
    wanted = config.profile
    if not p_hat_estimates_p(meta) and not (
        wanted.adaptive and wanted.adaptive_stop == "first_success"
    ):
        # every adaptive setting the profile ran with that the config lacks, in one message
        recorded = (meta.get("inputs") or {}).get("config") or {}
        for key in ("profile.adaptive", "profile.adaptive_round", "profile.adaptive_stop"):
            current = getattr(wanted, key.removeprefix("profile."))
            if key in recorded and recorded[key] != current:
                differ[key] = (recorded[key], current)
        if wanted.adaptive:
            differ.setdefault("profile.adaptive_stop", ("first_success", wanted.adaptive_stop))
        else:
            differ.setdefault("profile.adaptive", (True, False))
    if differ:
        use = "its samples cannot be reused (train.reuse_profile)" if reuse else "not plannable"
        raise DataError(
            f"{source}: profiled with other settings than this config ({shown(differ)}); {use} "
            f"with this config: {fix_for(differ, 're-run sgpo profile (and sgpo plan) with it')}"
        )


def check_profile_samples(
    meta: dict, config: RunConfig, source: str, expected_model: str | None
) -> None:
    """Refuse a plan (or profile) whose samples config would draw or score otherwise
    (SAMPLE_SETTINGS: verifier, prompt formatting) or from other initial weights."""
    differ = differing_settings(meta, config, expected_model, SAMPLE_SETTINGS)
    if differ:
        raise DataError(
            f"{source}: profiled with other settings than this config ({shown(differ)}): its "
            "p_hat was measured on other samples or scores; "
            f"{fix_for(differ, 're-run sgpo profile and sgpo plan with this config')}"
        )


def differing_settings(
    meta: dict, config: RunConfig, expected_model: str | None, keys: tuple[str, ...]
) -> dict[str, tuple]:
    """{key: (profile's value, config's value)} for the `keys` that differ, and model_sha256
    when expected_model (a local model) holds other weights than the profile recorded."""
    profiled = settings_of(profiled_settings(meta), keys)
    current = settings_of(rundir.flatten(config.model_dump(mode="json")), keys)
    if "inputs" not in meta:  # an older profile: only what it recorded can be compared
        current = {k: v for k, v in current.items() if k in profiled}
    differ = {
        key: (profiled.get(key), current.get(key))
        for key in sorted(profiled.keys() | current.keys())
        if profiled.get(key) != current.get(key)
    }
    other = other_weights(meta, expected_model)
    if other is not None:
        differ["model_sha256"] = other
    if any(key in VERIFIER_SETTINGS for key in keys) and "task.verifier" not in differ:
        from sgpo.tasks import verifier_spec
        from sgpo.verify import verifier_code_sha256, verifier_file

        spec = verifier_spec(config.task)
        recorded = (meta.get("inputs") or {}).get(rundir.VERIFIER_CODE_KEY)
        code = verifier_code_sha256(spec) if recorded else None
        if code and code != recorded:  # the same verifier, edited since
            edited = f"{rundir.VERIFIER_CODE_KEY} (the code of {spec}, {verifier_file(spec)})"
            differ[edited] = (recorded, code)
    return differ


def check_chat_template(meta: dict, template_sha256: str | None, source: str) -> None:
    """Refuse a plan whose profile's prompts went through another chat template than this
    run's (template_sha256: models.chat_template_sha256 of the run's tokenizer), which no
    setting names; a profile from before the record is not checked."""
    if rundir.CHAT_TEMPLATE_KEY not in meta or meta[rundir.CHAT_TEMPLATE_KEY] == template_sha256:
        return
    profiled = meta[rundir.CHAT_TEMPLATE_KEY]
    raise DataError(
        f"{source}: its profile's prompts went through the chat template with sha256 "
        f"{str(profiled)[:12]}, this run's go through {str(template_sha256)[:12]} (None: "
        "plain prompts): its p_hat was measured on other prompts; re-run sgpo profile and "
        "sgpo plan with this tokenizer, or put back the tokenizer's chat template"
    )


def other_weights(meta: dict, model: str | None) -> tuple[str, str] | None:
    """(the profile's, model's) weights sha256 when model, a local folder, holds other weights
    than the profile recorded; None when they are the same or either is unknown (a hub id)."""
    recorded = (meta.get("inputs") or {}).get("model_sha256")
    current = rundir.weights_sha256(model) if recorded and model else None
    return (recorded, current) if current and current != recorded else None


def fix_for(differ: dict[str, tuple], profile_it: str) -> str:
    """What to do about the differences: profile_it (re-run the profile with this config), or
    set the config's keys back, or put the model's weights or the verifier's file back (which
    no key sets)."""
    ways = [profile_it]
    if any(key.startswith(("model.", "task.", "sampling.", "profile.")) for key in differ):
        ways.append("set these keys to the profile's values")
    if any(key.startswith(("model_sha256", rundir.VERIFIER_CODE_KEY)) for key in differ):
        ways.append("put back the weights or verifier file the profile was made with")
    return ", or ".join(ways)


def shown(differ: dict[str, tuple]) -> str:
    return "; ".join(
        f"{k}: profile {_setting(k, a)}, config {_setting(k, b)}" for k, (a, b) in differ.items()
    )


def _setting(key: str, value: object) -> str:
    # an unset threshold (or its default given explicitly, stored unset) is not "no threshold"
    if key == "task.success_threshold" and value is None:
        return "None (the middle of task.verifier_reward_range)"
    return repr(value)
