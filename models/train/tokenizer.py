#!/usr/bin/python3
"""Byte-level BPE tokenizer (GPT-2 / Qwen2 style), trained and applied in
plain Python, exported as a Hugging Face tokenizer.json whose structure
mirrors Qwen3's (NFC normalizer, Split regex + ByteLevel pre-tokenizer,
ByteLevel decoder, BPE model with merges, ChatML special tokens).

    tokenizer.py train -i train.txt -o DIR [--vocab 4096]
        writes DIR/tokenizer.json and DIR/tokenizer_config.json
    tokenizer.py encode DIR "text"      prints ids (our Python encoder)
"""
import argparse
import collections
import json
import os
import re
import sys
import unicodedata

# Qwen2/Qwen3's split regex, as written into tokenizer.json (Rust/JS syntax).
SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# The same for Python's re: \p{L} -> [^\W\d_], \p{N} -> \d.  Exact on this
# corpus (ASCII plus one '£'); the export is checked against the HF reference.
_L, _N = r"[^\W\d_]", r"\d"
PY_REGEX = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\r\n\w]|_)?" + _L + "+|" + _N + "|"
    r" ?(?:[^\s\w]|_)+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (ids 0..255 in this order)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()
U2B = {v: k for k, v in B2U.items()}


def pretokenize(text):
    text = unicodedata.normalize("NFC", text)
    return ["".join(B2U[b] for b in w.encode("utf-8")) for w in PY_REGEX.findall(text)]


def train(text, vocab_size):
    n_merges = vocab_size - 256 - len(SPECIALS)
    counts = collections.Counter()
    for chunk in text.split("\n\n"):
        counts.update(pretokenize(chunk + "\n\n"))
    words = [list(w) for w in counts]
    freq = list(counts.values())
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[a, b] += freq[i]
            where[a, b].add(i)
    # Qwen/GPT-2 number the 256 byte tokens in bytes_to_unicode order.
    vocab = {u: i for i, u in enumerate(B2U.values())}
    merges = []
    for _ in range(n_merges):
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pairs[best] < 2:
            break
        a, b = best
        new = a + b
        merges.append(best)
        vocab[new] = len(vocab)
        for i in list(where[best]):
            w, f = words[i], freq[i]
            for p in zip(w, w[1:]):
                pairs[p] -= f
                if pairs[p] <= 0:
                    del pairs[p]
                where[p].discard(i)
            j, out = 0, []
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pairs[p] += f
                where[p].add(i)
        where.pop(best, None)
    return vocab, merges


class Tokenizer:
    def __init__(self, path):
        tj = json.load(open(os.path.join(path, "tokenizer.json")))
        self.vocab = tj["model"]["vocab"]
        self.inv = {i: t for t, i in self.vocab.items()}
        self.ranks = {tuple(m.split(" ") if isinstance(m, str) else m): r
                      for r, m in enumerate(tj["model"]["merges"])}
        self.special = {t["content"]: t["id"] for t in tj["added_tokens"]}
        for t, i in self.special.items():
            self.inv[i] = t
        self.special_re = re.compile("|".join(map(re.escape, self.special)))
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            best = min(((self.ranks.get(p, 1 << 30), k) for k, p in
                        enumerate(zip(parts, parts[1:]))))
            if best[0] == 1 << 30:
                break
            k = best[1]
            parts[k:k + 2] = [parts[k] + parts[k + 1]]
        ids = [self.vocab[p] for p in parts]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        ids, pos = [], 0
        for m in list(self.special_re.finditer(text)) + [None]:
            seg = text[pos:m.start() if m else len(text)]
            for w in pretokenize(seg):
                ids += self.bpe(w)
            if m:
                ids.append(self.special[m.group()])
                pos = m.end()
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t = self.inv[i]
            if t in self.special:
                out += t.encode()
            else:
                out += bytes(U2B[c] for c in t)
        return out.decode("utf-8", "replace")


def export(vocab, merges, outdir, model_max_length):
    os.makedirs(outdir, exist_ok=True)
    n = len(vocab)
    added = [{"id": n + k, "content": s, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for k, s in enumerate(SPECIALS)]
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
          "use_regex": False}
    tj = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT_REGEX},
             "behavior": "Isolated", "invert": False}, bl]},
        "post_processor": bl, "decoder": bl,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [list(m) for m in merges]},
    }
    with open(os.path.join(outdir, "tokenizer.json"), "w") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
    cfg = {
        "add_bos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": {str(t["id"]): {k: t[k] for k in (
            "content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for t in added},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None, "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
        "errors": "replace", "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>", "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }
    with open(os.path.join(outdir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("-i", "--input", required=True)
    t.add_argument("-o", "--outdir", required=True)
    t.add_argument("--vocab", type=int, default=4096)
    t.add_argument("--ctx", type=int, default=256)
    e = sub.add_parser("encode")
    e.add_argument("dir")
    e.add_argument("text")
    a = ap.parse_args()
    if a.cmd == "train":
        vocab, merges = train(open(a.input).read(), a.vocab)
        export(vocab, merges, a.outdir, a.ctx)
        print(f"vocab {len(vocab)} + {len(SPECIALS)} special, {len(merges)} merges")
    else:
        print(Tokenizer(a.dir).encode(a.text))


if __name__ == "__main__":
    main()
