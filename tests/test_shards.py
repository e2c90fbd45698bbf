"""Profiling across machines: `sgpo profile --shard I/N` then `sgpo profile merge`; and the
plan exported for verl with `sgpo plan --export verl`."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny_run import stop_profile_at_chunk, tiny_tree, write_config
from typer.testing import CliRunner

from sgpo.cli import app
from sgpo.config import load_config
from sgpo.io import read_table, write_table
from sgpo.profile import run_profile
from sgpo.rundir import CHAT_TEMPLATE_KEY

runner = CliRunner()


def sgpo(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shards")
    config = write_config(root / "cfg.yaml", tiny_tree(root / "models", profile={"chunk_size": 4}))
    sgpo("profile", "-c", config, "-o", root / "whole")
    for index in (2, 0, 1):
        sgpo("profile", "-c", config, "-o", root / f"shard{index}", "--shard", f"{index}/3")
    return root, config


def test_three_shards_merged_equal_the_unsharded_profile(profiles):
    root, _ = profiles
    shards = [root / f"shard{i}" / "profile.parquet" for i in (1, 2, 0)]
    sgpo("profile", "merge", *shards, "-o", root / "merged")
    merged_rows, merged_meta = read_table(root / "merged" / "profile.parquet")
    whole_rows, whole_meta = read_table(root / "whole" / "profile.parquet")
    assert merged_rows == whole_rows
    # the same profile, its samples merged next to it
    assert merged_meta.pop("samples_file") == str(root / "merged" / "profile_samples.parquet")
    # its time: the shards' machine time, summed
    shard_walls = [read_table(path)[1]["profile_wall_s"] for path in shards]
    assert merged_meta.pop("profile_wall_s") == pytest.approx(sum(shard_walls), abs=1e-3)
    timed = ("samples_file", "profile_wall_s")
    assert merged_meta == {k: v for k, v in whole_meta.items() if k not in timed}
    merged_samples = read_table(root / "merged" / "profile_samples.parquet")
    assert merged_samples == read_table(root / "whole" / "profile_samples.parquet")


def test_samples_are_written_a_piece_at_a_time(profiles, tmp_path, monkeypatch):
    """A profile's samples go to disk chunk by chunk and a merge's window by window (memory
    bounded by a piece, whatever the profile's size), and come out as one table would."""
    from sgpo import profile

    root, _ = profiles
    whole = root / "whole" / "profile_samples.parquet"
    rows = read_table(root / "whole" / "profile.parquet")[0]
    assert pq.ParquetFile(whole).metadata.num_row_groups == len(rows) // 4  # chunk_size 4
    monkeypatch.setattr(profile, "MERGE_WINDOW", 5)  # queries 0-4, 5-9, 10-11
    shards = [root / f"shard{i}" / "profile.parquet" for i in (1, 2, 0)]
    sgpo("profile", "merge", *shards, "-o", tmp_path / "merged")
    merged = tmp_path / "merged" / "profile_samples.parquet"
    assert pq.ParquetFile(merged).metadata.num_row_groups == -(-len(rows) // 5)
    assert read_table(merged) == read_table(whole)


def test_merge_refuses_a_shards_samples_out_of_order(profiles, tmp_path):
    """A merge reads each shard's samples front to back: rows reordered by hand are named."""
    import shutil

    root, _ = profiles
    paths = []
    for index in range(3):
        shutil.copytree(root / f"shard{index}", tmp_path / f"s{index}")
        paths.append(tmp_path / f"s{index}" / "profile.parquet")
    samples, meta = read_table(tmp_path / "s1" / "profile_samples.parquet")
    samples[1], samples[2] = samples[2], samples[1]  # sample 2 of the first query before 1
    write_table(tmp_path / "s1" / "profile_samples.parquet", samples, meta)
    result = runner.invoke(app, ["profile", "merge", *map(str, paths), "-o", str(tmp_path / "m")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1
    assert f"{tmp_path / 's1' / 'profile_samples.parquet'}: row 2: fields 'query_id', 'ind" in said


def test_a_shard_resumes_as_it_was_started_without_its_shard_option(profiles, tmp_path):
    import shutil

    root, config = profiles
    shard = Path(shutil.copytree(root / "shard1", tmp_path / "shard1"))
    finished = shard / "profile.parquet"
    # finished: resumed without --shard, it is the shard it was (nothing to do)
    sgpo("profile", "-c", config, "-o", shard, "--resume")
    assert read_table(finished)[0] == read_table(root / "shard1" / "profile.parquet")[0]
    # interrupted after its first chunk: its chunks say which shard it is
    interrupted = tmp_path / "interrupted"
    with pytest.MonkeyPatch.context() as mp:
        stop_profile_at_chunk(mp, 2, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_profile(load_config(config), interrupted, shard=(1, 3))
    said = sgpo("profile", "-c", config, "-o", interrupted, "--resume")
    assert "profile 1/3:" in said  # the progress bar names the shard
    resumed = read_table(interrupted / "profile.parquet")
    assert resumed[0] == read_table(finished)[0] and resumed[1]["shard"] == [1, 3]
    # stopped before its first chunk (which records the shard): resumed without --shard it
    # would profile every query; refused, saying to start it as it was started
    early = tmp_path / "early"
    with pytest.MonkeyPatch.context() as mp:
        stop_profile_at_chunk(mp, 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_profile(load_config(config), early, shard=(1, 3))
    result = runner.invoke(app, ["profile", "-o", str(early), "--resume"])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "stopped before its first chunk" in said, said
    assert "run the command it was started with again" in said and "--overwrite" not in said
    assert not (early / "profile.parquet").exists()
    again = runner.invoke(app, ["profile", "-c", str(config), "-o", str(early), "--shard", "1/3"])
    assert again.exit_code == 0, again.output
    assert read_table(early / "profile.parquet")[0] == read_table(finished)[0]
    # another shard given is refused, naming the one it was started with
    args = ["profile", "-c", str(config), "-o", str(shard), "--resume", "--shard", "2/3"]
    result = runner.invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "resume with --shard 1/3, as it was started" in said


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        ((0, 1), "shards [2] of 3 are missing"),
        ((0, 1, 1, 2), "shard 1/3 given twice"),
        ((0, "whole"), "field 'shard' is empty: not a shard profile"),
    ],
)
def test_merge_refuses_missing_duplicate_and_foreign_profiles(profiles, tmp_path, shards, message):
    root, _ = profiles
    paths = [root / (s if isinstance(s, str) else f"shard{s}") / "profile.parquet" for s in shards]
    result = runner.invoke(app, ["profile", "merge", *map(str, paths), "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "profile.parquet").exists()


def test_merge_refuses_shards_of_different_runs(profiles, tmp_path):
    root, config = profiles
    other = tmp_path / "other"
    sgpo("profile", "-c", config, "-o", other, "--shard", "2/3", "--set", "seed=5")
    paths = [
        root / "shard0" / "profile.parquet",
        root / "shard1" / "profile.parquet",
        other / "profile.parquet",
    ]
    result = runner.invoke(app, ["profile", "merge", *map(str, paths), "-o", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "differ from" in result.output and "not the same run" in result.output


def test_merge_takes_a_shard_of_the_same_weights_at_another_path(profiles, tmp_path):
    """Another machine's copy of the model (or another install's embedded model) is the same
    model: merged, the shards equal the unsharded profile; other weights are refused."""
    import shutil

    from sgpo.models import model_source

    root, config = profiles
    copy = tmp_path / "copy-of-the-model"
    shutil.copytree(model_source(load_config(config)), copy)
    moved = tmp_path / "moved"
    elsewhere = ["--set", f"model.name_or_path={copy}"]
    sgpo("profile", "-c", config, "-o", moved, "--shard", "2/3", *elsewhere)
    paths = [root / "shard0" / "profile.parquet", root / "shard1" / "profile.parquet"]
    sgpo("profile", "merge", *paths, moved / "profile.parquet", "-o", tmp_path / "m")
    merged = read_table(tmp_path / "m" / "profile.parquet")[0]
    assert merged == read_table(root / "whole" / "profile.parquet")[0]
    # a shard interrupted there and resumed with the model at yet another path: the same run
    again = tmp_path / "again"
    shutil.copytree(copy, again)
    interrupted = tmp_path / "interrupted"
    moved_config = load_config(config, [f"model.name_or_path={copy}"])
    with pytest.MonkeyPatch.context() as mp:
        stop_profile_at_chunk(mp, 2, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            run_profile(moved_config, interrupted, shard=(2, 3))
    resume = ["--resume", "--shard", "2/3", "--set", f"model.name_or_path={again}"]
    sgpo("profile", "-c", config, "-o", interrupted, *resume)
    resumed = read_table(interrupted / "profile.parquet")[0]
    assert resumed == read_table(moved / "profile.parquet")[0]
    rows, meta = read_table(moved / "profile.parquet")
    meta["inputs"]["model_sha256"] = "f" * 64  # other weights there
    write_table(tmp_path / "other" / "profile.parquet", rows, meta)
    paths.append(tmp_path / "other" / "profile.parquet")
    result = runner.invoke(app, ["profile", "merge", *map(str, paths), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not the same run" in result.output


def test_merge_checks_each_shards_rows_and_samples(profiles, tmp_path, caplog):
    import shutil

    root, _ = profiles
    shards = [root / f"shard{i}" for i in range(3)]
    # a row removed from shard 2 (its samples beside it): refused, naming it
    rows, meta = read_table(shards[2] / "profile.parquet")
    cut = tmp_path / "cut"
    write_table(cut / "profile.parquet", rows[:-1], meta)
    shutil.copy(shards[2] / "profile_samples.parquet", cut)
    paths = [shards[0] / "profile.parquet", shards[1] / "profile.parquet"]
    merge = ["profile", "merge", *map(str, paths), str(cut / "profile.parquet")]
    result = runner.invoke(app, [*merge, "-o", str(tmp_path / "m1")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and f"{cut / 'profile.parquet'}: holds {len(rows) - 1} qu" in said
    # the three tables gathered in one folder beside one shard's samples: refused
    one = tmp_path / "one"
    one.mkdir()
    for index, shard in enumerate(shards):
        shutil.copy(shard / "profile.parquet", one / f"shard{index}.parquet")
    tables = [str(one / f"shard{i}.parquet") for i in range(3)]
    sgpo("profile", "merge", *tables, "-o", tmp_path / "m0")  # no samples there: merged
    shutil.copy(shards[0] / "profile_samples.parquet", one)
    result = runner.invoke(app, ["profile", "merge", *tables, "-o", str(tmp_path / "m2")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "two shards share one profile_samples.parquet" in said
    # each in a folder of its own, shard 1's beside shard 0's samples: refused
    gathered = tmp_path / "gathered"
    for index, shard in enumerate(shards):
        gathered.joinpath(f"s{index}").mkdir(parents=True)
        shutil.copy(shard / "profile.parquet", gathered / f"s{index}")
        samples_of = shards[0 if index == 1 else index]  # shard 1's folder: shard 0's samples
        shutil.copy(samples_of / "profile_samples.parquet", gathered / f"s{index}")
    tables = [str(gathered / f"s{i}" / "profile.parquet") for i in range(3)]
    result = runner.invoke(app, ["profile", "merge", *tables, "-o", str(tmp_path / "m3")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "its samples do not match its shard's profile" in said
    # no samples beside any: merged, and said
    for index in range(3):
        (gathered / f"s{index}" / "profile_samples.parquet").unlink()
    with caplog.at_level("WARNING", logger="sgpo.profile"):
        sgpo("profile", "merge", *[gathered / f"s{i}" / "profile.parquet" for i in range(3)],
             "-o", tmp_path / "m4")  # fmt: skip
    assert "profile_samples.parquet is not beside every shard" in caplog.text


def test_merge_refuses_shards_drawn_at_another_precision(profiles, tmp_path):
    """model.dtype auto is bfloat16 on a GPU host and float32 on a CPU one: the samples
    differ, so shards of a mixed fleet are not the same run (an older shard records none)."""
    root, _ = profiles
    paths = []
    for index, dtype in ((0, "float32"), (1, None), (2, "bfloat16")):
        rows, meta = read_table(root / f"shard{index}" / "profile.parquet")
        assert meta["dtype"] == "float32"  # as this machine resolved it
        if dtype is None:
            del meta["dtype"]
        else:
            meta["dtype"] = dtype
        paths.append(tmp_path / f"s{index}" / "profile.parquet")
        write_table(paths[-1], rows, meta)
    result = runner.invoke(app, ["profile", "merge", *map(str, paths), "-o", str(tmp_path / "m")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "field(s) dtype (the precision model.dtype resolved" in said
    assert str(paths[2]) in said  # the bfloat16 shard, not the one that records none


def test_merge_compares_chat_templates_past_an_older_sgpos_shard(profiles, tmp_path):
    """The first shard from an sgpo before chat_template_sha256: the other two still disagree."""
    root, _ = profiles
    paths = []
    for index, template in ((0, None), (1, "a" * 64), (2, "b" * 64)):
        rows, meta = read_table(root / f"shard{index}" / "profile.parquet")
        if template is None:
            del meta[CHAT_TEMPLATE_KEY]
        else:
            meta[CHAT_TEMPLATE_KEY] = template
        paths.append(tmp_path / f"s{index}" / "profile.parquet")
        write_table(paths[-1], rows, meta)
    result = runner.invoke(app, ["profile", "merge", *map(str, paths), "-o", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert f"field(s) {CHAT_TEMPLATE_KEY} differ from" in " ".join(result.output.split())


def test_plan_export_verl_writes_curriculum_with_group_sizes(profiles, tmp_path):
    root, config = profiles
    out = tmp_path / "plan"
    out.mkdir()
    (out / "profile.parquet").write_bytes((root / "whole" / "profile.parquet").read_bytes())
    sgpo("plan", "-c", config, "-o", out, "--export", "verl")
    plan_rows, _ = read_table(out / "plan.parquet")
    kept = sorted((r for r in plan_rows if r["kept"]), key=lambda r: r["rank"])
    verl = pq.read_table(out / "verl_train.parquet").to_pylist()
    assert [r["extra_info"]["query_id"] for r in verl] == [r["query_id"] for r in kept]
    assert [r["__rollout_n__"] for r in verl] == [r["group_size"] for r in kept]
    assert verl[0]["prompt"][-1] == {"role": "user", "content": kept[0]["prompt"]}
    assert verl[0]["reward_model"]["ground_truth"] == kept[0]["answer"]
    # what the export does not carry is said, as sgpo export-verl says it
    printed = sgpo(
        "plan", "-c", config, "-o", out, "--export", "verl", "--overwrite",
        "--set", "train.filter_groups=true",
    )  # fmt: skip
    assert "sgpo settings {'train.filter_groups': True} are NOT applied on verl" in " ".join(
        printed.split()
    )
