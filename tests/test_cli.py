"""The command-line tools' checks that need no TensorFlow: flags, --config, --help, run folders.

Each command runs in its own interpreter, as a user starts it; none of these
tests trains a model.
"""

import ast
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from hybrid_tfrs.cli.config import ConfigError, available_configs, expand_config, flagfile_path
from hybrid_tfrs.tensorflow_logs import CPP_LOG_LINE

COMMANDS = ("train", "evaluate", "export")


def _command(repo_root, command, *args, cwd=None, timeout=120):
    """Runs ``python -m hybrid_tfrs.cli.<command> args`` with TensorFlow's log level unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(repo_root)
    return subprocess.run(
        [sys.executable, "-m", f"hybrid_tfrs.cli.{command}", *args],
        cwd=cwd or repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _python(repo_root, code, *args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(repo_root)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(result, message):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs=abc"], "--epochs=abc"),
        (["--bogus=1"], "Unknown command line flag 'bogus'"),
        (["stray"], "unexpected arguments: stray"),
        (["--chunk_size=0"], "--chunk_size=0: must be >= 1"),
        (["--hidden_dim=0"], "--hidden_dim=0: must be >= 1"),
        (["--num_heads=3"], "--hidden_dim=64: must be divisible by --num_heads=3"),
        (["--num_layers=0"], "--num_layers=0: must be >= 1"),
        (
            ["--model=fmlp", "--branch_loss_weight=0.5"],
            "--branch_loss_weight=0.5: needs --model=hybrid",
        ),
        (["--shared_blocks=2"], "--shared_blocks=2: must be in 0..num_layers - 1 = 1"),
        (["--normalize_first"], "--normalize_first=True: is built for the baselines"),
        (
            ["--fusion=layer", "--gate_mode=hidden_state"],
            "--gate_mode='hidden_state': --fusion=layer gates before any layer runs",
        ),
        (["--fusion=layer", "--share_ffn"], "--fusion='layer': has one FFN a layer"),
        (["--config=nope"], "available: "),
        (["--dataset=nope"], "unknown dataset 'nope'"),
        (["--dataset=beauty", "--data_dir=/nonexistent"], "Beauty.txt not found"),
    ],
)
def test_bad_train_flags_fail_in_one_line_before_tensorflow_loads(
    repo_root, tmp_path, args, message
):
    code = f"""
        import sys
        from hybrid_tfrs.cli import train
        try:
            train.run(["hybrid-tfrs-train", "--output_dir={tmp_path / "run"}", *{args!r}])
        except SystemExit as exit:
            print("exit", exit.code, "tensorflow" in sys.modules, "keras" in sys.modules)
            raise
    """
    result = _python(repo_root, code)
    assert result.stdout.strip() == "exit 2 False False", result.stdout + result.stderr
    _one_line_error(result, message)
    assert not (tmp_path / "run").exists()


def test_num_heads_need_not_divide_hidden_dim_for_fmlp(repo_root):
    code = """
        from hybrid_tfrs.config import TrainConfig
        TrainConfig(model="fmlp", hidden_dim=64, num_heads=3).validate()
        print("ok")
    """
    assert _python(repo_root, code).stdout.strip() == "ok"


def test_output_dir_that_is_a_file_is_refused(repo_root, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    for output_dir in (afile, afile / "run"):
        result = _command(repo_root, "train", f"--output_dir={output_dir}")
        _one_line_error(result, f"--output_dir={output_dir}: {afile} is a file")
    assert afile.read_text() == "mine"


def test_an_export_dir_that_is_a_file_is_refused_before_training(repo_root, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    run = tmp_path / "run"
    result = _command(repo_root, "train", f"--output_dir={run}", f"--export_dir={afile}")
    _one_line_error(result, f"--export_dir={afile}: {afile} is a file, expected a folder")
    assert afile.read_text() == "mine" and not run.exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_lists_the_commands_flags(repo_root, command):
    result = _command(repo_root, command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"hybrid-tfrs-{command}: ")
    own_flags = {"train": ("--config", "--max_len"), "evaluate": ("--run_dir",)}
    for flag in ("--[no]verbose", *own_flags.get(command, ("--export_dir",))):
        assert f"\n  {flag}: " in result.stdout, (flag, result.stdout)


@pytest.mark.parametrize(
    "command, args, message",
    [
        ("evaluate", [], "--run_dir: required"),
        ("evaluate", ["--run_dir=/nonexistent"], "/nonexistent/config.json not found"),
        ("evaluate", ["--run_dir=.", "--splits=train"], "--splits: unknown ['train']"),
        ("evaluate", ["--run_dir=.", "--protocols=top-1"], "--protocols: unknown ['top-1']"),
        ("evaluate", ["--run_dir=.", "--chunk_size=0"], "--chunk_size=0: 0 is not a positive"),
        ("export", ["--run_dir=/nonexistent", "--export_dir=x"], "--run_dir=/nonexistent: no such"),
        ("export", ["--run_dir=."], "--export_dir: required"),
        ("export", ["--run_dir=.", "--export_dir=x", "--top_k=0"], "--top_k"),
    ],
)
def test_bad_evaluate_and_export_flags_fail_in_one_line(repo_root, command, args, message):
    _one_line_error(_command(repo_root, command, *args), message)


def test_evaluate_names_a_broken_config_json(repo_root, tmp_path):
    (tmp_path / "config.json").write_text('{"dataset": "synth')
    _one_line_error(
        _command(repo_root, "evaluate", f"--run_dir={tmp_path}"),
        f"{tmp_path / 'config.json'}: unreadable",
    )


def test_config_by_name_becomes_the_shipped_flagfile_in_place(repo_root):
    argv = ["prog", "--epochs=3", "--config=synthetic_hybrid", "--patience=1"]
    assert expand_config(argv) == [
        "prog",
        "--epochs=3",
        f"--flagfile={repo_root / 'flags' / 'synthetic_hybrid.flags'}",
        "--patience=1",
    ]
    assert expand_config(["prog", "--config", "beauty_hybrid"])[1].endswith("beauty_hybrid.flags")
    names = {p.name[: -len(".flags")] for p in (repo_root / "flags").glob("*.flags")}
    assert available_configs() == sorted(names)


def test_config_by_path_and_unknown_configs(tmp_path):
    mine = tmp_path / "mine.flags"
    mine.write_text("--epochs=2\n")
    assert flagfile_path(str(mine)) == str(mine)
    with pytest.raises(ConfigError, match="no such file"):
        flagfile_path(str(tmp_path / "missing.flags"))
    with pytest.raises(ConfigError, match="available: beauty_fmlp, beauty_hybrid"):
        flagfile_path("beauty")
    with pytest.raises(ConfigError, match="needs a name"):
        expand_config(["prog", "--config"])


def test_flags_after_config_override_it_and_flags_before_do_not(repo_root):
    code = """
        from hybrid_tfrs.cli import train
        from hybrid_tfrs.cli.config import expand_config
        train.FLAGS(expand_config(["p", "--seed=7", "--config=synthetic_hybrid", "--patience=1"]))
        config = train.config_from_flags()
        print(config.patience, config.seed, config.output_dir, config.epochs)
    """
    result = _python(repo_root, code)
    flagfile = (repo_root / "flags" / "synthetic_hybrid.flags").read_text()
    epochs = re.search(r"--epochs=(\d+)", flagfile).group(1)
    assert result.stdout.split() == ["1", "0", "runs/synthetic_hybrid", epochs], result.stderr


def test_make_train_trains_what_the_synthetic_flagfile_says(repo_root):
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "train", "ARGS=--epochs=2"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    train_line = result.stdout.strip().splitlines()[-1]  # (under `make test` too)
    assert "hybrid_tfrs.cli.train --config=synthetic_hybrid --epochs=2" in train_line


def test_synthetic_flagfile_stops_early_before_its_epoch_limit(repo_root):
    flagfile = (repo_root / "flags" / "synthetic_hybrid.flags").read_text()
    settings = dict(re.findall(r"^--(\w+)=(\S+)$", flagfile, re.MULTILINE))
    assert int(settings["patience"]) < int(settings["epochs"]) // 4


def test_python_m_hybrid_tfrs_lists_the_commands(repo_root):
    result = _python(
        repo_root, "import runpy; runpy.run_module('hybrid_tfrs', run_name='__main__')"
    )
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert f"hybrid-tfrs-{command}" in result.stdout
        assert f"python -m hybrid_tfrs.cli.{command}" in result.stdout


def test_the_uninstalled_command_list_is_setup_pys_console_scripts(repo_root):
    from hybrid_tfrs.cli import COMMANDS as LISTED

    scripts = re.findall(
        r'"(hybrid-tfrs-[\w-]+) = ([\w.]+):run"', (repo_root / "setup.py").read_text()
    )
    assert scripts and LISTED == dict(scripts)


def test_train_help_names_every_setting_a_resume_may_change(repo_root):
    from hybrid_tfrs.config import RESUMABLE_WITH_OTHER

    # read, not imported: importing the command defines its flags in this process
    source = (repo_root / "hybrid_tfrs" / "cli" / "train.py").read_text()
    named = set(re.findall(r"--(?:no)?(\w+)", ast.get_docstring(ast.parse(source))))
    assert RESUMABLE_WITH_OTHER <= named


def test_importing_the_package_and_checking_a_config_loads_no_tensorflow(repo_root):
    code = """
        import sys
        import hybrid_tfrs, hybrid_tfrs.cli.train, hybrid_tfrs.run_dir, hybrid_tfrs.run_data
        from hybrid_tfrs.config import TrainConfig
        TrainConfig().validate()
        print("tensorflow" in sys.modules, "keras" in sys.modules)
        from hybrid_tfrs import SequentialRetrievalModel, build_encoder
        print(build_encoder.__module__, SequentialRetrievalModel.__module__)
    """
    result = _python(repo_root, code, timeout=300)
    assert result.stdout.split() == [
        "False",
        "False",
        "hybrid_tfrs.encoders",
        "hybrid_tfrs.retrieval",
    ], result.stderr[-2000:]


def test_tensorflow_loads_quietly_and_verbose_brings_its_log_lines_back(repo_root):
    code = """
        import os, sys
        from hybrid_tfrs.cli import common
        common.FLAGS(["p", *sys.argv[1:]])
        common.quiet_tensorflow()
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    """
    quiet = _python(repo_root, code, timeout=300)
    verbose = _python(repo_root, code, "--verbose", timeout=300)
    assert (quiet.stdout.strip(), verbose.stdout.strip()) == ("3", "0")
    assert quiet.stderr == "", quiet.stderr
    assert any(CPP_LOG_LINE.match(line) for line in verbose.stderr.splitlines()), verbose.stderr


def test_quiet_import_keeps_other_stderr_and_drops_cpp_log_lines(repo_root):
    code = r"""
        import os, sys
        from hybrid_tfrs import tensorflow_logs
        with tensorflow_logs.without_cpp_log_lines():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are x\n")
            os.write(2, b"E0000 00:00:1796150154.614900   3951 cuda_platform.cc:52] cuInit\n")
            os.write(2, b"a real warning\n")
        print("done")
    """
    result = _python(repo_root, code)
    assert result.stdout.strip() == "done"
    assert result.stderr == "a real warning\n"


def _write_run(folder, **settings):
    """A run folder as training leaves it after two epochs (no model needed for the checks)."""
    from hybrid_tfrs.config import TrainConfig

    config = TrainConfig(output_dir=str(folder), **settings)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config.to_json()))
    state = {"best_score": 0.2, "best_epoch": 2, "waited": 0, "epochs_done": 2, "history": []}
    (folder / "checkpoints" / "state.json").write_text(json.dumps(state))
    for name in ("model.keras", "checkpoints/last.keras", "metrics.json", "vocabulary.txt"):
        (folder / name).write_text(f"old {name}")
    return config


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "args, named",
    [
        (["--max_len=100"], "--max_len=50 there, 100 now"),
        (["--learning_rate=0.01"], "--learning_rate=0.001 there, 0.01 now"),
        (["--model=sasrec", "--seed=3"], "--model='hybrid' there, 'sasrec' now, --seed=0 there, 3"),
    ],
)
def test_a_run_with_other_settings_is_not_resumed_nor_touched(repo_root, tmp_path, args, named):
    run = tmp_path / "run"
    _write_run(run)
    before = _snapshot(run)
    result = _command(repo_root, "train", f"--output_dir={run}", *args)
    _one_line_error(result, named)
    assert "--noresume" in result.stderr and "--output_dir" in result.stderr
    assert _snapshot(run) == before


def test_settings_that_do_not_change_the_model_may_differ_on_resume(tmp_path):
    from hybrid_tfrs.config import TrainConfig
    from hybrid_tfrs.run_dir import check_run_dir

    _write_run(tmp_path / "run")
    config = TrainConfig(
        output_dir=str(tmp_path / "run"),
        epochs=40,
        patience=9,
        max_train_minutes=3.0,
        protocols="full",
        eval_batch_size=64,
        data_dir=str(tmp_path),
        export_dir=str(tmp_path / "export"),
        top_k=5,
    )
    assert check_run_dir(config)["epochs_done"] == 2
    config.resume = False
    assert check_run_dir(config) is None


def test_bucket_widths_may_differ_on_resume_only_where_every_target_weighs_the_same():
    from hybrid_tfrs.config import TrainConfig

    for weighting, changes in (("target", {}), ("batch", {"bucket_widths": ("", "2,4,8")})):
        before = TrainConfig(loss_normalization=weighting)
        after = TrainConfig(loss_normalization=weighting, bucket_widths="2,4,8")
        assert after.differences(before) == changes


def test_a_run_started_under_the_old_loss_default_must_name_it_to_resume():
    """The default became "target" on 3 December 2026: a run saved with "batch" differs
    from the same command now, in that flag alone, so the trainer stops and names it."""
    from hybrid_tfrs.config import TrainConfig

    saved = TrainConfig.from_json(dict(TrainConfig().to_json(), loss_normalization="batch"))
    assert TrainConfig().differences(saved) == {"loss_normalization": ("batch", "target")}
    assert TrainConfig(loss_normalization="batch").differences(saved) == {}


def test_a_run_started_under_the_old_gate_default_resumes_where_the_gate_is_not_read():
    """The default gate became one learned alpha on 4 December 2026: a hybrid saved with
    the statistics gate must name it to resume; a baseline, which has no gate, need not."""
    from hybrid_tfrs.config import TrainConfig

    for model, changes in (("hybrid", {"gate_mode": ("statistics", "learned")}), ("fmlp", {})):
        saved = TrainConfig(model=model, gate_mode="statistics", gate_output="vector")
        now = TrainConfig(model=model, gate_output="vector")
        assert now.differences(saved) == changes
    assert TrainConfig(model="fmlp").differences(TrainConfig(model="hybrid")) == {
        "model": ("hybrid", "fmlp")
    }


@pytest.mark.parametrize(
    "broken, content, message",
    [
        ("checkpoints/state.json", '{"best_score": 0.2, "best_ep', "state.json: unreadable"),
        ("checkpoints/state.json", '{"best_score": 0.2}', "state.json: not a training state"),
        ("config.json", '{"dataset": "synth', "config.json: unreadable"),
        ("config.json", '{"dataset": "synthetic", "gru": 1}', "unknown settings ['gru']"),
    ],
)
def test_a_broken_run_file_is_named_with_the_way_out(repo_root, tmp_path, broken, content, message):
    run = tmp_path / "run"
    _write_run(run)
    (run / broken).write_text(content)
    result = _command(repo_root, "train", f"--output_dir={run}")
    _one_line_error(result, f"{run / broken}")
    assert message in result.stderr and "--noresume" in result.stderr


def test_a_missing_last_checkpoint_is_named(repo_root, tmp_path):
    run = tmp_path / "run"
    _write_run(run)
    (run / "checkpoints" / "last.keras").unlink()
    result = _command(repo_root, "train", f"--output_dir={run}")
    _one_line_error(result, f"{run / 'checkpoints' / 'last.keras'}: no such file")


class _KilledWhileSaving:
    """Writes half a file, then dies like a killed process would."""

    def save(self, path):
        with open(path, "w") as handle:
            handle.write("half")
        raise KeyboardInterrupt


def test_a_kill_while_saving_leaves_the_previous_files_whole(tmp_path):
    from hybrid_tfrs import run_dir

    model_path, state_path, vocabulary_path = (
        tmp_path / "model.keras",
        tmp_path / "state.json",
        tmp_path / "vocabulary.txt",
    )
    for path in (model_path, state_path, vocabulary_path):
        path.write_text("previous")
    with pytest.raises(KeyboardInterrupt):
        run_dir.save_model(_KilledWhileSaving(), str(model_path))
    with pytest.raises(KeyboardInterrupt):
        run_dir.save_vocabulary(_KilledWhileSaving(), str(vocabulary_path))
    with pytest.raises(TypeError):  # json.dump fails half way through
        run_dir.write_json(str(state_path), {"epochs_done": 3, "history": [object()]})
    assert [p.read_text() for p in (model_path, state_path, vocabulary_path)] == ["previous"] * 3


def test_a_second_training_in_a_folder_in_use_stops_and_touches_nothing(repo_root, tmp_path):
    from hybrid_tfrs import run_dir

    run = tmp_path / "run"
    tiny = ["--dataset=synthetic", "--synthetic_users=100", "--synthetic_items=300"]
    with run_dir.exclusive(str(run)):  # as a training in progress holds it
        before = _snapshot(run)
        result = _command(
            repo_root, "train", *tiny, "--max_len=10", "--epochs=1", f"--output_dir={run}"
        )
        _one_line_error(
            result, f"--output_dir={run} is in use by another training (process {os.getpid()})"
        )
        assert _snapshot(run) == before


def test_a_killed_trainings_lock_does_not_block_the_rerun(repo_root, tmp_path):
    from hybrid_tfrs import run_dir

    hold = "import sys, time\nfrom hybrid_tfrs import run_dir\n"
    hold += "with run_dir.exclusive(sys.argv[1]):\n"
    hold += "    print('held', flush=True)\n    time.sleep(120)"
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_dir.RunDirError, match=f"process {holder.pid}\\)"):
            with run_dir.exclusive(str(tmp_path)):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_dir.exclusive(str(tmp_path)):  # the kill released it
        assert (tmp_path / run_dir.LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_a_failed_download_through_keras_is_one_quiet_line(repo_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    unreachable = "http://127.0.0.1:9"  # nothing listens: the download fails at once
    env.update(PYTHONPATH=str(repo_root), KERAS_HOME=str(tmp_path / "keras"))
    env.update(HTTPS_PROXY=unreachable, https_proxy=unreachable)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybrid_tfrs.cli.train",
            "--dataset=beauty",
            f"--output_dir={tmp_path}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    _one_line_error(result, "Could not download dataset 'beauty'")
