#!/usr/bin/python3
"""moe-cli run -p and moe-cli chat end to end, through a pipe and on a
terminal (tmux).

    test_chat.py --convert moe-convert --cli moe-cli --workdir DIR

A tiny random-weight Mixtral with Mixtral's real tokenizer and chat template
(32000 tokens, [INST] framing). Random weights say nothing, so the checks are
about the machinery:
- run -p: greedy text is reproducible and equals detokenizing what run
  --tokens generates from the same prompt ids; --stop cuts the text right
  before the first occurrence of the stop string; a fixed seed repeats;
- chat through a pipe: one reply line per message, and the second reply
  equals a fresh greedy run over the whole rendered conversation (so keeping
  the KV cache between turns changes nothing), while /stats shows that less
  than the whole conversation was evaluated again;
- a conversation longer than the context drops its oldest turns and says so;
- on a terminal (tmux): the prompt, a typed message, Ctrl-C mid-reply stops
  the reply but not the program, /stats and /exit;
- a model without a tokenizer is refused with a message.
Ends with "N passed, M failed".
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import MODEL_META, Tally, checkpoint_with_tokenizer, e2e_args, run  # noqa: E402

MIXTRAL = os.path.join(MODEL_META, "mistralai--Mixtral-8x7B-Instruct-v0.1")


def main():
    args = e2e_args()
    hf = os.path.join(args.workdir, "mixtral-32k")
    checkpoint_with_tokenizer(hf, "mixtral", 32000, MIXTRAL, 7)
    model = hf + ".moe"
    run([args.convert, hf, "-o", model])
    bare_hf = os.path.join(args.workdir, "bare")
    checkpoint_with_tokenizer(bare_hf, "mixtral", 32000, args.workdir, 7)  # no tokenizer files there
    bare = bare_hf + ".moe"
    run([args.convert, bare_hf, "-o", bare])
    cli = args.cli
    tally = Tally()
    check = tally.check

    def tokenize(text, special=False):
        out = run([cli, "tokenize", "-m", model, text] + ([] if special else ["--no-special"])).stdout
        return json.loads(out)

    def detokenize(ids):
        return run([cli, "detokenize", "-m", model, "--skip-special", "--tokens", ",".join(map(str, ids))]).stdout

    def greedy_ids(ids, n):
        out = run([cli, "run", "-m", model, "--tokens", ",".join(map(str, ids)), "-n", str(n)]).stdout
        return [int(x) for x in out.strip().splitlines()[-1].split(",")]

    # ---- run -p
    prompt = "The quick brown fox"
    p1 = run([cli, "run", "-m", model, "-p", prompt, "-n", "24"])
    p2 = run([cli, "run", "-m", model, "-p", prompt, "-n", "24"])
    text = p1.stdout[:-1]  # run -p ends the text with a newline
    check(p1.stdout == p2.stdout and len(text) > 0, "run -p greedy is reproducible")
    check("24 generated" in p1.stderr, f"run -p reports its tokens: {p1.stderr.strip()}")
    want = detokenize(greedy_ids(tokenize(prompt, special=True), 24))
    check(text == want, f"run -p text equals detokenized run --tokens: {text!r} vs {want!r}")
    stop = text[len(text) // 2: len(text) // 2 + 3]
    cut = run([cli, "run", "-m", model, "-p", prompt, "-n", "24", "--stop", stop])
    check(stop and cut.stdout[:-1] == text[: text.index(stop)] and "stop string" in cut.stderr,
          f"--stop {stop!r} cuts before the stop string: {cut.stdout!r}")
    s1 = run([cli, "run", "-m", model, "-p", prompt, "-n", "16", "--temp", "1.5", "--seed", "11"]).stdout
    s2 = run([cli, "run", "-m", model, "-p", prompt, "-n", "16", "--temp", "1.5", "--seed", "11"]).stdout
    s3 = run([cli, "run", "-m", model, "-p", prompt, "-n", "16", "--temp", "1.5", "--seed", "12"]).stdout
    check(s1 == s2 and s1 != s3, "a seed repeats its text; another seed differs")
    both = run([cli, "run", "-m", model, "-p", prompt, "--tokens", "1,2"], expect_ok=False)
    check(both.returncode == 2 and "one of them" in both.stderr, "run with both -p and --tokens is refused")

    # ---- chat through a pipe, greedy
    chat = [cli, "chat", "-m", model, "--temp", "0", "-n", "12"]
    msgs = ["Hello there", "Tell me more"]
    p = run(chat, stdin="\n".join([msgs[0], msgs[1], "/stats"]) + "\n")
    replies = p.stdout.split("\n")
    check(len(replies) == 3 and replies[2] == "", f"one reply line per message: {p.stdout!r}")
    conv = [{"role": "user", "content": msgs[0]}, {"role": "assistant", "content": replies[0]},
            {"role": "user", "content": msgs[1]}]
    conv_path = os.path.join(args.workdir, "conv.json")
    with open(conv_path, "w") as f:
        json.dump(conv, f)
    rendered = run([cli, "render", "-m", model, "--messages", conv_path]).stdout
    ids = tokenize(rendered)
    gen = greedy_ids(ids, 12)
    want = detokenize(gen[: gen.index(2)] if 2 in gen else gen)
    check(replies[1] == want, f"second reply equals a fresh run over the rendered conversation: {replies[1]!r} vs {want!r}")
    m = re.search(r"prompt:\s+(\d+) tokens evaluated", p.stderr)
    check(m and int(m.group(1)) < len(ids) + 8, f"/stats: {m and m.group(1)} prompt tokens evaluated over two turns, "
          f"the second conversation alone is {len(ids)}")
    check("context:" in p.stderr and "t/s" in p.stderr, "/stats shows context use and speed")
    kv16 = re.search(r"KV cache f16, ([\d.]+) MiB", p.stderr)
    p32 = run(chat + ["--kv-type", "f32"], stdin="Hello there\n/stats\n")
    kv32 = re.search(r"KV cache f32, ([\d.]+) MiB", p32.stderr)
    check(kv16 and kv32 and abs(float(kv32.group(1)) - 2 * float(kv16.group(1))) < 0.11,
          f"/stats names the KV cache's type and size, f32 twice f16: {kv16 and kv16.group(0)}, {kv32 and kv32.group(0)}")
    p_again = run(chat, stdin="\n".join(msgs) + "\n")
    check(p_again.stdout == "\n".join(replies[:2]) + "\n", "greedy chat is reproducible")
    reset = run(chat, stdin=f"{msgs[0]}\n/reset\n{msgs[0]}\n")
    r = reset.stdout.split("\n")
    check(len(r) == 3 and r[0] == r[1] == replies[0], "after /reset the same message gets the same first reply")

    # ---- context full through a pipe: the oldest turns go
    long_msg = " ".join(["word"] * 40)
    full = run([cli, "chat", "-m", model, "--temp", "0", "-n", "8", "-c", "160"], stdin=(long_msg + "\n") * 5)
    check(full.returncode == 0 and len(full.stdout.split("\n")) == 6 and "dropped the oldest turns" in full.stderr,
          f"a full context drops old turns and says so: {full.stderr.strip()[-200:]}")
    toolong = run([cli, "chat", "-m", model, "-n", "8", "-c", "32"], stdin=long_msg + "\n")
    check(toolong.returncode == 0 and "does not fit" in toolong.stderr, "a message longer than the context is refused")

    # ---- errors
    bad = run([cli, "chat", "-m", bare], expect_ok=False, stdin="hi\n")
    check(bad.returncode == 1 and "no tokenizer" in bad.stderr and bare in bad.stderr,
          f"chat without a tokenizer: {bad.stderr.strip()}")
    bad = run([cli, "chat", "-m", model, "--chat-template", "nonesuch"], expect_ok=False, stdin="hi\n")
    check(bad.returncode == 1 and "nonesuch" in bad.stderr, f"unknown --chat-template: {bad.stderr.strip()}")
    ok = run([cli, "chat", "-m", model, "--chat-template", "chatml", "-n", "4"], stdin="hi\n")
    check(len(ok.stdout.split("\n")) == 2, "--chat-template chatml works")

    # ---- on a terminal
    if check(shutil.which("tmux"), "tmux is not installed (scripts/install-deps.sh installs it)"):
        ok, why = tmux_session(cli, model, args.workdir)
        check(ok, f"tmux: {why}")
    return tally.finish()


def tmux_session(cli, model, workdir):
    """Types into moe-cli chat on a real terminal and reads the screen."""
    sock = os.path.join(workdir, "tmux.sock")
    tmux = ["tmux", "-S", sock]
    subprocess.run(tmux + ["kill-server"], capture_output=True)
    cmd = f"{cli} chat -m {model} -c 4096 --ignore-eos --temp 1; echo EXITED $?; sleep 30"
    subprocess.run(tmux + ["new-session", "-d", "-x", "120", "-y", "40", cmd], check=True,
                   env=dict(os.environ, TERM="xterm"))

    def screen():
        return subprocess.run(tmux + ["capture-pane", "-p", "-S", "-200"], capture_output=True, text=True).stdout

    def wait_for(pattern, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            s = screen()
            if re.search(pattern, s, re.M):
                return s
            time.sleep(0.2)
        return None

    def keys(*k):
        subprocess.run(tmux + ["send-keys"] + list(k), check=True)

    try:
        if not wait_for(r"^>\s*$"):
            return False, "no prompt:\n" + screen()
        keys("Write a long story", "Enter")
        time.sleep(1.5)  # the reply streams for tens of seconds without an end token
        keys("C-c")
        s = wait_for(r"\[interrupted\]\n>", 30)
        if not s:
            return False, "Ctrl-C did not stop the reply:\n" + screen()
        keys("/stats", "Enter")
        s = wait_for(r"replies: \d+ tokens generated")
        if not s:
            return False, "/stats printed nothing:\n" + screen()
        n = int(re.search(r"replies: (\d+) tokens generated", s).group(1))
        if not 0 < n < 4000:
            return False, f"/stats says {n} tokens were generated before Ctrl-C"
        keys("/exit", "Enter")
        if not wait_for(r"EXITED 0"):
            return False, "/exit did not end the program with status 0:\n" + screen()
        return True, ""
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
