"""The generated command lines: every `videovla-train(-vae)`, `-eval(-offline)`, `-demo`, `-collect`, `-sim-teleop`,
`-import`, `-export`, `-merge-datasets` and `bringup` command shown in the READMEs still parses, and each flag lands
in the field of its name."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from videovla_model.cli import checked, parse
from videovla_model.dataset_merge import MergeConfig
from videovla_model.evaluate_offline import OfflineEvalConfig
from videovla_model.importers.cli import IMPORT_COMMAND, Conversion, export_command, import_main
from videovla_model.importers.lerobot_actions import ActionConvention
from videovla_model.train_cli import LATEST, parse_args
from videovla_model.train_vae import videovla_train_vae
from videovla_model.training_config import TrainingConfig
from videovla_ros.bringup import BringupConfig
from videovla_ros.eval_config import DEFAULT_CHECKPOINT, DemoConfig, EvalConfig
from videovla_ros.evaluate_cli import demo_main, main
from videovla_ros.sim_teleop import TeleopConfig
from videovla_sim.collect import CollectConfig

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (ROOT / "README.md", ROOT / "checkpoints" / "videovla-sim-small" / "README.md")
COMMANDS = (
    "videovla-train-vae", "videovla-train", "videovla-eval-offline", "videovla-eval", "videovla-demo",
    "videovla-collect", "videovla-sim-teleop", "videovla-import", "videovla-export", "videovla-merge-datasets",
    "bringup",
)  # fmt: skip
PARSED = {
    "videovla-train-vae": videovla_train_vae,
    "videovla-eval-offline": OfflineEvalConfig,
    "videovla-eval": EvalConfig,
    "videovla-demo": DemoConfig,
    "videovla-collect": CollectConfig,
    "videovla-sim-teleop": TeleopConfig,
    "videovla-import": IMPORT_COMMAND,
    "videovla-export": export_command,
    "videovla-merge-datasets": MergeConfig,
    "bringup": BringupConfig,
}
# Flags named differently from their field; fields holding more flags (merged into their parent's).
FIELD_OF_FLAG = {"config": "model_config", "episode-split": "split"}
NESTED = {"training", "format", "limits"}


def _code_snippets(text: str) -> list[str]:
    """Fenced and indented code lines (backslash continuations joined) and inline code spans (which may wrap)."""
    snippets: list[str] = []
    for index, block in enumerate(re.split(r"^```.*$", text, flags=re.MULTILINE)):
        if index % 2 == 1:
            snippets += re.sub(r"\\\n\s*", " ", block).splitlines()
        else:
            snippets += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", block)]
            snippets += re.findall(r"^ {4}(\S.*)$", block, flags=re.MULTILINE)  # indented code blocks
    return snippets


def _documented_commands() -> list[tuple[str, str, list[str]]]:
    """(document, command, its arguments) of every documented command line that passes a flag (not only --help)."""
    found = []
    for document in DOCUMENTS:
        for snippet in _code_snippets(document.read_text()):
            for match in re.finditer(rf"(?:^|[\s/])({'|'.join(COMMANDS)})\s+((?:--|lerobot |rosbag ).*)$", snippet):
                arguments = shlex.split(re.sub(r"<[^>]*>", "PLACEHOLDER", match.group(2)), comments=True)
                if arguments != ["--help"]:
                    found.append((document.relative_to(ROOT).as_posix(), match.group(1), arguments))
    return found


DOCUMENTED = _documented_commands()


def _completed(command: str, arguments: list[str]) -> list[str]:
    """A fragment such as `videovla-train --latent-cache ...` with the flags it leaves out filled in."""
    required = {
        "videovla-train": ("--dataset", "--output"),
        "videovla-train-vae": ("--dataset", "--output"),
        "videovla-collect": ("--output",),
        "videovla-eval-offline": ("--checkpoint", "--dataset"),
    }
    if command not in required:
        return arguments
    missing = [flag for flag in required[command] if flag not in arguments]
    filled = [token for flag in missing for token in (flag, "PLACEHOLDER")]
    if command.startswith("videovla-train") and not {"--preset", "--config", "--init-from"} & set(arguments):
        filled += ["--preset", "tiny"]
    return arguments + filled


def _flags(arguments: list[str]) -> dict[str, list[str]]:
    """--flag -> the values after it."""
    flags: dict[str, list[str]] = {}
    current = None
    for token in arguments:
        if token.startswith("--"):
            current = token[2:]
            flags[current] = []
        elif current is not None:
            flags[current].append(token)
    return flags


def _fields(parsed: object) -> dict[str, object]:
    """What the flags set: a config's fields (or a NamedTuple's), with the `NESTED` ones' fields merged in."""
    if dataclasses.is_dataclass(parsed):
        items = {field.name: getattr(parsed, field.name) for field in dataclasses.fields(parsed)}
    else:
        items = parsed._asdict()
    merged: dict[str, object] = {}
    for name, value in items.items():
        merged.update(_fields(value) if name in NESTED else {name: value})
    return merged


def _parsed_fields(command: str, arguments: list[str]) -> dict[str, object]:
    if command == "videovla-train":
        config, resume = parse_args(arguments)
        return {**_fields(config), "resume": resume}
    return _fields(parse(PARSED[command], arguments, prog=command))


def _check_fields(fields: dict[str, object], flags: dict[str, list[str]]) -> None:
    for flag, values in flags.items():
        negated = flag.startswith("no-") and not values
        name = FIELD_OF_FLAG.get(flag, flag.removeprefix("no-") if negated else flag).replace("-", "_")
        actual = fields[name]
        if name == "resume":
            assert actual == (values[0] if values else LATEST)
        elif isinstance(actual, bool):
            assert actual is (not negated), flag
        elif isinstance(actual, tuple):
            assert actual == tuple(type(item)(value) for item, value in zip(actual, values, strict=True)), flag
        else:
            assert actual == type(actual)(values[0]), flag


def test_the_readmes_show_the_commands_this_test_checks():
    counts = {command: sum(found == command for _, found, _ in DOCUMENTED) for command in COMMANDS}
    assert counts["videovla-train"] >= 10 and counts["videovla-eval"] >= 4, counts
    assert counts["videovla-demo"] >= 1 and counts["videovla-train-vae"] >= 2 and counts["videovla-collect"] >= 4, (
        counts
    )
    assert counts["videovla-import"] >= 2 and counts["videovla-export"] >= 1, counts
    assert counts["videovla-eval-offline"] >= 2 and counts["videovla-sim-teleop"] >= 1, counts
    assert counts["bringup"] >= 3, counts


@pytest.mark.parametrize(
    ("document", "command", "arguments"), DOCUMENTED, ids=[f"{d}:{' '.join(a)}" for d, _, a in DOCUMENTED]
)
def test_a_documented_command_parses_into_the_fields_it_names(document, command, arguments):
    if "--ros-args" in arguments:  # bringup passes what follows to ROS
        arguments = arguments[: arguments.index("--ros-args")]
    arguments = _completed(command, arguments)
    _check_fields(_parsed_fields(command, arguments), _flags(arguments))


def test_train_flags_keep_their_names_and_forms():
    config, resume = parse_args(
        [
            "--dataset", "d", "--output", "o", "--init-from", "ckpt", "--no-video-loss", "--betas", "0.8", "0.9",
            "--add-conditioning", "text_modulation", "--no-gradient-checkpointing", "--resume", "runs/x/checkpoint-4",
        ]
    )  # fmt: skip
    assert config.init_from == "ckpt" and config.video_loss is False and config.betas == (0.8, 0.9)
    assert config.add_conditioning == ("text_modulation",) and config.gradient_checkpointing is False
    assert resume == "runs/x/checkpoint-4"
    config, resume = parse_args(["--dataset", "d", "--output", "o", "--preset", "tiny", "--gradient-checkpointing"])
    assert config.gradient_checkpointing is True and resume is None
    config, _ = parse_args(["--dataset", "d", "--output", "o", "--config", "model.json"])
    assert config == TrainingConfig(dataset="d", output="o", model_config="model.json")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--preset", "tiny", "--lr", "-1"], "lr must be a positive number, got -1.0"),
        (["--preset", "huge"], "preset must be one of ['cogvideox-5b', 'small', 'tiny'], got 'huge'"),
        (["--preset", "tiny", "--optimizer", "sgd"], "optimizer must be one of"),
        ([], "exactly one of preset, model_config, init_from"),
    ],
)
def test_bad_train_settings_exit_2_naming_the_field(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--dataset", "d", "--output", "o", *arguments])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # one line, as argparse prints it: greppable, unwrapped
    assert line.startswith("videovla-train: error: ") and message in line


def test_field_docstrings_are_the_help(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    for flag, help_text in (
        ("--latent-cache", "folder of the frozen VAE's posteriors of every clip"),
        ("--resume [CHECKPOINT]", "continue from a checkpoint folder"),
        ("--video-loss, --no-video-loss", "train on the video loss beside the action loss"),
        ("--gradient-checkpointing, --no-gradient-checkpointing", "recompute activations"),
    ):
        assert f"{flag} {help_text}" in text or (flag in text and help_text in text), flag


def test_eval_defaults_to_the_shipped_checkpoint_and_rejects_bad_values(capsys):
    config = parse(EvalConfig, ["--policy", "expert", "--tasks", "pick", "place"], prog="videovla-eval")
    assert config.checkpoint == str(DEFAULT_CHECKPOINT) and config.tasks == ("pick", "place")
    with pytest.raises(SystemExit) as exit_info:
        main(["--episodes", "0"])
    assert exit_info.value.code == 2
    assert "episodes must be >= 1, got 0" in capsys.readouterr().err


def test_demo_takes_an_instruction_and_has_no_episode_flags(capsys):
    config = parse(DemoConfig, ["--instruction", "pick up the green cylinder"], prog="videovla-demo")
    assert config.tasks == ("pick up the green cylinder",) and config.episodes == 1
    assert config.output == "outputs/demo"
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--episodes", "3"])
    assert exit_info.value.code == 2


def test_bringup_flags_keep_their_names_and_forms(capsys):
    config = parse(
        BringupConfig,
        ["--sim", "--sim-time", "--no-bridge", "--execution-mode", "rtc", "--namespace", "arm1", "--autostart"],
        prog="bringup",
    )
    assert config.sim and config.sim_time and not config.bridge and config.autostart
    assert (config.execution_mode, config.namespace) == ("rtc", "arm1")
    # dry_run: unset leaves the params file's value; --dry-run and --dry-run false override it.
    assert config.dry_run is None and config.launch_choices().dry_run is None
    assert parse(BringupConfig, ["--dry-run"], prog="bringup").dry_run is True
    assert parse(BringupConfig, ["--dry-run", "false"], prog="bringup").dry_run is False
    with pytest.raises(SystemExit) as exit_info:
        parse(BringupConfig, ["--execution-mode", "fast"], prog="bringup")
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bringup: error: execution_mode must be one of")


def test_import_subcommands_share_one_definition_and_keep_their_flags(tmp_path, capsys):
    topics = ["--image-topic", "/i", "--pose-topic", "/p", "--instruction", "pick"]
    rosbag = parse(
        IMPORT_COMMAND,
        ["rosbag", "bag", "out", *topics, "--max-gap", "0.2", "--episode-split", "1.5,3", "--rate-hz", "5"],
        prog="videovla-import",
    )
    lerobot = parse(
        IMPORT_COMMAND, ["lerobot", "data", "out", "--action-convention", "absolute_ee"], prog="videovla-import"
    )
    assert isinstance(rosbag, Conversion) and isinstance(lerobot, Conversion)
    assert (rosbag.source, rosbag.out) == (Path("bag"), Path("out"))
    options = checked(rosbag.format)
    assert options.limits.max_gap_s == 0.2 and options.split.times_s == (1.5, 3.0) and options.rate_hz == 5.0
    assert checked(lerobot.format).action_convention is ActionConvention.ABSOLUTE_EE
    export = parse(export_command, ["lerobot", "episodes", "v3", "--crf", "20"], prog="videovla-export")
    assert export.source == Path("episodes") and export.format.crf == 20
    # A refused value exits 2 with the field named, before anything is read.
    arguments = ["rosbag", str(tmp_path / "none"), str(tmp_path / "out"), "--image-topic", "/i", "--pose-topic", "/p"]
    assert import_main([*arguments, "--instruction", "pick", "--rate-hz", "0"]) == 2
    assert "videovla-import: error: rate_hz must be a finite number > 0 Hz, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
