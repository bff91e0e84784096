"""The docs say what the code does: README snippets run, commands and links resolve."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [
    "README.md",
    "serving/README.md",
    "benchmarks/README.md",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
ENV.pop("PYTEST_CURRENT_TEST", None)


def code_blocks(path, language):
    text = (REPO / path).read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def github_anchor(heading):
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    text = path.read_text(encoding="utf-8")
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("index", range(len(code_blocks("README.md", "python"))))
def test_readme_python_snippet_runs_as_written(index, tmp_path):
    snippet = code_blocks("README.md", "python")[index]
    result = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"snippet {index}:\n{snippet}\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_and_anchors_resolve(doc):
    path = REPO / doc
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an external URL
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{doc}: links to nothing: {broken}"


def shell_commands(doc):
    """Command lines of the doc's bash blocks, continuation lines joined, comments cut."""
    commands = []
    for block in code_blocks(doc, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def console_scripts():
    """{script name: module} of setup.py's console_scripts."""
    text = (REPO / "setup.py").read_text(encoding="utf-8")
    return dict(re.findall(r'"([\w-]+) = ([\w.]+):\w+"', text))


def documented_invocations():
    """(doc, words after `python`) of every script, module or console-script call."""
    scripts, calls = console_scripts(), []
    for doc in DOCS:
        for command in shell_commands(doc):
            words = shlex.split(command.split("|")[0].split("&&")[-1])
            words = [w for w in words if "=" not in w or w.startswith("-")]  # drop VAR=value
            if words and words[0] == "python":
                calls.append((doc, words[1:]))
            elif words and words[0] in scripts:
                calls.append((doc, ["-m", scripts[words[0]], *words[1:]]))
    return calls


def test_client_examples_ask_for_items_the_bundled_data_has():
    from hybrid_tfrs.data import SYNTHETIC_DEFAULTS

    known = {f"i{i}" for i in range(1, SYNTHETIC_DEFAULTS["num_items"] + 1)}
    unknown = []
    for doc, words in documented_invocations():
        if "--history" in words and "hybrid" in words:  # the synthetic run's export
            ids = [w for w in words[words.index("--history") + 1 :] if not w.startswith("-")]
            unknown += [f"{doc}: {i}" for i in ids if i not in known]
    assert not unknown, f"items the synthetic data does not have: {unknown}"


def _flags_of(target):
    """Flag names that ``python target --helpfull`` (absl) or ``--help`` (argparse) lists."""
    for help_flag in ("--helpfull", "--help"):  # absl exits 1 after its help
        result = subprocess.run(
            [sys.executable, *target, help_flag],
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        names = set(re.findall(r"--(?:\[no\])?([\w-]+)", result.stdout))
        if names:
            return names
    raise AssertionError(f"python {' '.join(target)}: no help listing\n{result.stderr[-2000:]}")


def test_documented_commands_exist_and_take_the_flags_shown():
    cache, problems = {}, []
    for doc, words in documented_invocations():
        target = words[:2] if words[0] == "-m" else words[:1]
        if target[0] != "-m" and not (REPO / target[0]).exists():
            problems.append(f"{doc}: {target[0]} does not exist")
            continue
        key = tuple(target)
        if key not in cache:
            cache[key] = _flags_of(target)
        for word in words[len(target) :]:
            if not word.startswith("--"):
                continue
            name = word[2:].split("=")[0]
            if name not in cache[key] and name.removeprefix("no") not in cache[key]:
                problems.append(f"{doc}: python {' '.join(target)} has no flag --{name}")
            if name == "flagfile" and not (REPO / word.split("=", 1)[1]).exists():
                problems.append(f"{doc}: {word}: no such file")
    assert not problems, "\n".join(problems)


# The package's modules whose docstrings hold examples (">>>"), as import names.
DOCTESTED = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts)
    for path in (REPO / "hybrid_tfrs").rglob("*.py")
    if ">>>" in path.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("module", DOCTESTED)
def test_docstring_examples_run_as_written(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted and not result.failed, module
