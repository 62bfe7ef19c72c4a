"""The docs cannot drift from the code: every relative link and image in README.md and docs/*.md points at a file (and,
for a link into a page, at one of its headings), and every command in their fenced shell blocks names scripts that
exist, with only the flags that the script's own --help lists.

Each script's --help runs once (cached; a few seconds each, mostly torch's import). Flags after a bare `--` of
benchmarks/sweep.py go to the ppo scripts its --scripts names, and so do its --grid keys that are not env.KEY."""

import concurrent.futures
import functools
import glob
import os
import re
import shlex
import subprocess
import sys

from conftest import ROOT

DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}  # fenced blocks whose lines are commands (the layout is ```text)
SCRIPT = re.compile(r"(?:\./)?((?:ppo_\w+\.py)|(?:(?:benchmarks|plots)/\w+\.(?:py|sh)))")
REPO_FILE = re.compile(r"(?:\./)?((?:tests|benchmarks|plots|envs)/[\w/.-]+\.(?:py|sh))")
FLAG = re.compile(r"--([a-z0-9][\w-]*)(?:=.*)?", re.S)
# scripts that pass flags after `--` (sweep.py) or their --grid keys (both) on to ppo_<script>.py, with their default
# --scripts when a command names none
FORWARDS_TO_PPO = {"benchmarks/sweep.py": ["agalite", "gtrxl", "lstm"], "benchmarks/tmaze_ablation.py": ["agalite"]}


def blocks(text):
    """(info string, first line number, lines) of every fenced code block, and the text outside them."""
    found, outside, current = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", line)
        if current is None and fence:
            current = (fence.group(1), fence.group(2).lower(), number + 1, [])
        elif current is not None and line.strip().startswith(current[0]) and not line.strip()[len(current[0]):].strip():
            found.append(current[1:])
            current = None
        elif current is not None:
            current[3].append(line)
        else:
            outside.append(line)
    return found, "\n".join(outside)


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    heading = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(path):
    seen, result = {}, set()
    for line in blocks(open(path, encoding="utf-8").read())[1].splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
    return result


def link_problems(path, text):
    """Relative links and images of one page that point at nothing."""
    problems = []
    _, outside = blocks(text)
    outside = re.sub(r"(`+).*?\1", "", outside)  # code spans are not links
    for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", outside):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(resolved):
            problems.append(f"{os.path.relpath(path, ROOT)}: link to {target}: no such file")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            problems.append(f"{os.path.relpath(path, ROOT)}: link to {target}: no heading with that anchor in "
                            f"{os.path.relpath(resolved, ROOT)}")
    return problems


def strip_comment(line):
    """The line without its shell comment: from a # that starts a word outside quotes."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def commands(text):
    """(line number, tokens) of every command in the page's shell blocks; continuation lines joined, `&&`, `||`, `;`
    and `|` split commands, comments are dropped."""
    for info, first, lines in blocks(text)[0]:
        if info not in SHELL_BLOCKS:
            continue
        number, pending, start = first, "", first
        for line in lines:
            if not pending:
                start = number
            number += 1
            line = strip_comment(line)
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            lexer = shlex.shlex(pending + line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split, lexer.commenters = True, ""
            pending = ""
            try:
                tokens = list(lexer)
            except ValueError as e:  # an unclosed quote
                yield start, ["<unparsable>", str(e)]
                continue
            command = []
            for token in tokens + [";"]:
                if token and set(token) <= set(";&|"):
                    if command:
                        yield start, command
                    command = []
                else:
                    command.append(token)


@functools.lru_cache(maxsize=None)
def help_flags(script):
    """The flags `python <script> --help` lists (tyro prints a boolean as --x, --no-x), or an error string."""
    env = dict(os.environ, COLUMNS="250")  # wide enough that no flag is wrapped
    try:
        out = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return f"`python {script} --help` took more than 180 s"
    if out.returncode != 0:
        return f"`python {script} --help` failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}"
    flags = set()
    for names in re.findall(r"^\W*((?:-h, )?--[a-z0-9][\w-]*(?:, --[a-z0-9][\w-]*)*)", out.stdout, re.M):
        flags.update(re.findall(r"--[a-z0-9][\w-]*", names))
    return frozenset(flags)


def command_problems(path, text, flags_of=None):
    """Scripts a page's commands name that do not exist, and flags their --help does not list (`flags_of`: a script's
    flags, help_flags by default)."""
    problems, where, flags_of = [], os.path.relpath(path, ROOT), flags_of or help_flags

    def check(number, script, flag):
        flags = flags_of(script)
        if isinstance(flags, str):
            problems.append(f"{where}:{number}: {flags}")
        elif flag not in flags:
            problems.append(f"{where}:{number}: {script} has no {flag} (not in its --help)")

    for number, tokens in commands(text):
        if tokens[0] == "<unparsable>":
            problems.append(f"{where}:{number}: cannot parse the command: {tokens[1]}")
            continue
        for token in tokens:
            m = REPO_FILE.fullmatch(token) or SCRIPT.fullmatch(token)
            if m and not os.path.exists(os.path.join(ROOT, m.group(1))):
                problems.append(f"{where}:{number}: {m.group(1)} does not exist")
        at = next((i for i, t in enumerate(tokens) if SCRIPT.fullmatch(t)), None)
        if at is None:
            continue
        script = SCRIPT.fullmatch(tokens[at]).group(1)
        if not script.endswith(".py") or not os.path.exists(os.path.join(ROOT, script)):
            continue
        args = tokens[at + 1:]
        ppo = FORWARDS_TO_PPO.get(script)
        if ppo is not None and "--scripts" in args:
            i = args.index("--scripts") + 1
            ppo = []
            while i < len(args) and not args[i].startswith("-"):
                ppo.append(args[i])
                i += 1
        targets, key = [script], None
        for token in args:
            if token == "--" and script == "benchmarks/sweep.py":
                targets, key = [f"ppo_{s}.py" for s in ppo], None
                continue
            m = FLAG.fullmatch(token)
            if m:
                key = m.group(1)
                for target in targets:
                    check(number, target, f"--{key}")
            elif key == "grid" and ppo is not None and targets == [script] and "=" in token:
                name = token.split("=", 1)[0]
                if not name.startswith("env."):  # a --grid key that is a script option, e.g. gate_bias=-3
                    for s in ppo:
                        check(number, f"ppo_{s}.py", "--" + name.replace("_", "-"))
    return problems


def test_every_link_and_image_exists():
    problems = [p for path in DOCS for p in link_problems(path, open(path, encoding="utf-8").read())]
    assert not problems, "\n".join(problems)


def test_every_command_names_existing_scripts_and_their_flags():
    texts = {path: open(path, encoding="utf-8").read() for path in DOCS}
    needed = set()  # the scripts whose flags the pages use, found by a first pass that runs nothing
    for path, text in texts.items():
        command_problems(path, text, flags_of=lambda script: needed.add(script) or frozenset())
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # fill the --help cache, two at a time
        list(pool.map(help_flags, sorted(needed)))
    problems = [p for path, text in texts.items() for p in command_problems(path, text)]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_broken_link_a_missing_script_and_an_unknown_flag():
    page = os.path.join(ROOT, "docs", "example.md")
    text = "\n".join([
        "# A page", "[ok](../README.md#set-up) [gone](missing.md) ![gone too](../plots/nothing.png) [bad anchor](#nope)",
        "```bash",
        "python ppo_agalite.py --env-id TMaze-v0 --no-compile --not-a-flag 3",
        "python benchmarks/sweep.py --scripts agalite --grid env.corridor_length=10 gate_bias=-3 no_such_option=1 \\",
        "  --seeds 1 -- --num-steps 8 --memory-len 4   # ppo_agalite.py has no --memory-len",
        "python benchmarks/no_such_script.py --x",
        "```",
    ])
    links = link_problems(page, text)
    assert len(links) == 3 and not any("README.md#set-up" in p for p in links), links
    found = command_problems(page, text)
    assert any("--not-a-flag" in p for p in found), found
    assert any("ppo_agalite.py has no --no-such-option" in p for p in found), found
    assert any("ppo_agalite.py has no --memory-len" in p for p in found), found
    assert any("no_such_script.py does not exist" in p for p in found), found
    assert len(found) == 4, found  # --env-id, --no-compile, gate_bias, --num-steps and the sweep's own flags pass
