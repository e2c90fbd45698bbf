"""The methods `sgpo compare` trains by default (DEFAULT_METHODS; a compare config's `methods`
replaces them): each one a list of config overrides, `key=value` as `--set` takes them, applied
to the compare's base config and built from the named settings here. Where each row comes from:
benchmarks/ROUNDS.md."""

# The abstract's rule, spelled out so a base config with another plan does not change it.
ABSTRACT_RULE = [
    "plan.g_rule=inverse_p",
    "plan.c=1.0",
    "plan.g_min=2",
    "plan.g_max=16",
    "plan.unsolvable_keep_fraction=0.1",
    "plan.drop_trivial=true",
    "plan.trivial_above=1.0",
    "plan.bucket_width=0.0",
]
TWO_SIDED = ["plan.g_rule=two_sided", "plan.c=2.3"]
# Two-sided G and no never-solved query kept: every kept group can be informative.
DENSE = [*TWO_SIDED, "plan.unsolvable_keep_fraction=0"]
# A mixed curriculum (bucket_width 1: the kept queries in one shuffled bucket), no easy-first dip.
MIXED = ["plan.bucket_width=1.0"]
ONLINE = ["train.online.reestimate=true", "train.online.replan_every=8"]
# A 16-sample profile: fewer queries with p ~ 0.9 look all-correct and are dropped as trivial.
K16 = ["profile.k=16"]
# Every 8 steps re-profile 32 dropped queries (4 samples each): those that show both outcomes
# come back; kept queries the training groups now show solved are dropped.
REPROFILE = [
    "train.online.reprofile_every=8",
    "train.online.reprofile_sample=32",
    "train.online.reprofile_k=4",
]
# Grow until mixed up to 128 responses, train the planned G of each group (both outcomes in
# turn), and re-plan every 4 steps with decay 0.3, so a query whose grown group came back all
# correct is dropped at the next re-plan (dev rounds 14-15, benchmarks/ROUNDS.md).
GROW = [
    "train.grow_max=128",
    "train.grow_train=balanced",
    "train.online.reestimate=true",
    "train.online.replan_every=4",
    "train.online.decay=0.3",
]
# PODS (Xu et al. 2025): each group generated whole, only its 4 most varied responses trained.
DOWNSAMPLE_4 = ["train.downsample_to=4"]
# ... or only 2: one success and one failure of each mixed group (dev round 25).
DOWNSAMPLE_2 = ["train.downsample_to=2"]
# The profile drops only the never-solved queries (p_hat = 1 kept), G = 8 for every query, one
# shuffled bucket: GRPO(G=8) without the queries it generates every epoch and never trains
# (dev round 23, benchmarks/ROUNDS.md).
SOLVABLE_G8 = [
    "plan.unsolvable_keep_fraction=0",
    "plan.drop_trivial=false",
    "plan.g_min=8",
    "plan.g_max=8",
    *MIXED,
]
# GRESO (Zheng et al. 2025): a query whose last z groups came back all equal is generated at
# its next epoch with probability 0.5^z (dev round 26).
HISTORY_SKIP = ["train.history_explore=0.5"]
# The profile stops at each query's first correct sample (dev round 33): SOLVABLE_G8's plan,
# the same kept queries, about 1/p samples per query instead of k.
FIRST_SUCCESS_PROFILE = [
    "profile.adaptive=true",
    "profile.adaptive_round=1",
    "profile.adaptive_stop=first_success",
]
# Dead groups leave the batch after generation, never refilled (dev round 36): a trainer that
# trains every rollout pays only for the mixed groups.
DROP_EQUAL = ["train.drop_equal_groups=true"]
# ... with the token-mean still over the whole batch (report round 37): the update is exactly
# the row's without the drop, at what this trainer's FLOPs cost in a train-all trainer too.
DROP_EQUAL_SAME_UPDATE = [*DROP_EQUAL, "train.drop_equal_denominator=generated"]
# The easy mix's fastest row in train-all FLOPs (report round 37): the solvable plan, PODS to
# 4, history skips with full steps, the first-success profile, dead groups dropped.
EASY_BEST = [
    "train.method=sgpo",
    *ABSTRACT_RULE,
    *SOLVABLE_G8,
    *DOWNSAMPLE_4,
    *HISTORY_SKIP,
    "train.history_fill=true",
    *FIRST_SUCCESS_PROFILE,
    *DROP_EQUAL_SAME_UPDATE,
]
DEFAULT_METHODS = {
    "grpo-g8": ["train.method=grpo", "train.group_size=8"],
    "grpo-g8-ds4": ["train.method=grpo", "train.group_size=8", *DOWNSAMPLE_4],
    "grpo-g16": ["train.method=grpo", "train.group_size=16"],
    "dapo": ["train.method=dapo", "train.group_size=8"],
    "sgpo": ["train.method=sgpo", *ABSTRACT_RULE],
    # The paper builds on DAPO: zero-variance groups dropped after generation, step refilled.
    "sgpo-paper": ["train.method=sgpo", "plan.preset=paper", "train.filter_groups=true"],
    "sgpo-two-sided": ["train.method=sgpo", *ABSTRACT_RULE, *TWO_SIDED],
    "sgpo-adaptive": ["train.method=sgpo", *ABSTRACT_RULE, "profile.adaptive=true"],
    "sgpo-reuse": ["train.method=sgpo", *ABSTRACT_RULE, "train.reuse_profile=true"],
    "sgpo-online-mixed": ["train.method=sgpo", *ABSTRACT_RULE, *TWO_SIDED, *MIXED, *ONLINE],
    "sgpo-all": [
        "train.method=sgpo",
        *ABSTRACT_RULE,
        *TWO_SIDED,
        *MIXED,
        *ONLINE,
        "profile.adaptive=true",
        "train.reuse_profile=true",
    ],
    "sgpo-dense": ["train.method=sgpo", *ABSTRACT_RULE, *DENSE],
    "sgpo-dense-mixed": ["train.method=sgpo", *ABSTRACT_RULE, *DENSE, *MIXED],
    "sgpo-dense-k16": ["train.method=sgpo", *ABSTRACT_RULE, *DENSE, *K16],
    "sgpo-dense-k16-reprofile": ["train.method=sgpo", *ABSTRACT_RULE, *DENSE, *K16, *REPROFILE],
    "sgpo-dense-grow": ["train.method=sgpo", *ABSTRACT_RULE, *DENSE, *GROW],
    "sgpo-solvable-g8-ds4": ["train.method=sgpo", *ABSTRACT_RULE, *SOLVABLE_G8, *DOWNSAMPLE_4],
    "sgpo-solvable-g8-ds4-fs": [
        "train.method=sgpo",
        *ABSTRACT_RULE,
        *SOLVABLE_G8,
        *DOWNSAMPLE_4,
        *FIRST_SUCCESS_PROFILE,
    ],
    "sgpo-solvable-g8-ds2": ["train.method=sgpo", *ABSTRACT_RULE, *SOLVABLE_G8, *DOWNSAMPLE_2],
    "sgpo-solvable-g8-ds4-greso": [
        "train.method=sgpo",
        *ABSTRACT_RULE,
        *SOLVABLE_G8,
        *DOWNSAMPLE_4,
        *HISTORY_SKIP,
    ],
    # ... with steps kept full across epochs (dev round 28).
    "sgpo-solvable-g8-ds4-greso-fill": [
        "train.method=sgpo",
        *ABSTRACT_RULE,
        *SOLVABLE_G8,
        *DOWNSAMPLE_4,
        *HISTORY_SKIP,
        "train.history_fill=true",
    ],
    "sgpo-solvable-g8-ds4-greso-fill-fs": [
        "train.method=sgpo",
        *ABSTRACT_RULE,
        *SOLVABLE_G8,
        *DOWNSAMPLE_4,
        *HISTORY_SKIP,
        "train.history_fill=true",
        *FIRST_SUCCESS_PROFILE,
    ],
    "sgpo-solvable-g8-ds4-fs-drop": [
        "train.method=sgpo",
        *ABSTRACT_RULE,
        *SOLVABLE_G8,
        *DOWNSAMPLE_4,
        *FIRST_SUCCESS_PROFILE,
        *DROP_EQUAL,
    ],
    "sgpo-solvable-g8-ds4-greso-fill-fs-drop": [
        "train.method=sgpo",
        *ABSTRACT_RULE,
        *SOLVABLE_G8,
        *DOWNSAMPLE_4,
        *HISTORY_SKIP,
        "train.history_fill=true",
        *FIRST_SUCCESS_PROFILE,
        *DROP_EQUAL,
    ],
    "sgpo-solvable-g8-ds4-fs-drop-same-update": [
        "train.method=sgpo",
        *ABSTRACT_RULE,
        *SOLVABLE_G8,
        *DOWNSAMPLE_4,
        *FIRST_SUCCESS_PROFILE,
        *DROP_EQUAL_SAME_UPDATE,
    ],
    "sgpo-solvable-g8-ds4-greso-fill-fs-drop-same-update": EASY_BEST,
    "sgpo-solvable-g8-ds2-greso-fill-fs-drop-same-update": [*EASY_BEST, *DOWNSAMPLE_2],
    # The easy-best row with 96 rollouts per step: 12 groups of 8 where the benchmark's base
    # takes 16 (128), a fixed size whatever the base's train.rollout_budget (dev round 42: a
    # smaller step that still trains ~6 mixed groups; below the incumbents on the report seeds,
    # report round 42).
    "sgpo-solvable-g8-ds4-greso-fill-fs-drop-same-update-b96": [
        *EASY_BEST,
        "train.rollout_budget=96",
    ],
    # The easy-best row with its skip on history started from the profile (dev round 48).
    "sgpo-solvable-g8-ds4-greso-fill-fs-drop-same-update-hp": [
        *EASY_BEST,
        "train.history_from_profile=true",
    ],
}
