#!/usr/bin/python3
"""End-to-end bad-input tests for moe-convert and moe-cli.

    test_bad_input.py --convert build/tools/convert/moe-convert \
                      --cli build/tools/cli/moe-cli \
                      --gen tests/gen_checkpoint.py --workdir DIR

The rule every case holds the tools to: bad input gets ONE clear error line
on stderr (lines with "warning:" aside) naming the file and the offending
field / tensor / value (and not saying "PATH: PATH:"), exit status 1 or 2
(never a signal), and a failed moe-convert leaves nothing in the output
folder: no OUT, no OUT.tmp.* temp file, and an OUT that was there before
keeps its exact bytes (every failing conversion runs twice: into an empty
folder, and over an existing OUT).

What is fed to the tools, all made from one tiny qwen3_moe checkpoint (plus
a 3-shard one, a mixtral one, and a ~100 MB mixtral one for interrupts):
  .moe files    truncated at several sizes, a trailing byte, one flipped byte
                in a tensor's data (info passes, info --verify names the
                tensor), wrong magic / version, flipped bytes in the checksummed
                metadata / tensor table / header hash, a header whose parts do
                not fit, and -- with the header checksum recomputed through
                libxxhash, so the reader's deeper checks are reached -- tensors
                out of bounds, overlapping, with a bad dtype / rank / shape, and
                bad hyperparameter metadata;
  moe-cli run   token ids outside the vocabulary, unparsable --tokens, a
                missing model file, a directory as the model, an unwritable
                --logits-out;
  checkpoints   a missing tensor, wrong shapes, unsupported dtypes, corrupt
                safetensors headers and data ranges, missing / unreadable /
                incomplete config.json, unknown model_type, sharded checkpoints
                with a missing shard or a wrong index;
  moe-convert   an output folder that does not exist, an output path that is a
                directory, a write error (RLIMIT_FSIZE), and SIGINT / SIGTERM
                in the middle of writing (then: either no OUT and no temp file,
                or a finished OUT that passes moe-cli info --verify).

Prints "ok  NAME" or "FAIL NAME: why" per case (with -v, each "ok" line is
followed by the error lines the case saw; "skip NAME: why" where a case
cannot run here, not counted) and ends with exactly "N passed, M failed";
the exit status is non-zero if any case failed.
"""

import argparse
import ctypes
import ctypes.util
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from types import SimpleNamespace

sys.dont_write_bytecode = True      # keep tests/ free of __pycache__

TIMEOUT = 60                        # seconds per tool run
SEEN_ERRORS = []                    # error lines of the current case, for -v
SENTINEL = b"an existing output file: a failed conversion must leave these bytes alone\n"
OUT_NAME = "model.moe"

FAMILY = "qwen3_moe"                # the base checkpoint of most cases
VOCAB = 288                         # its vocab_size (gen_checkpoint.py)
FLIP_TENSOR = "blk.1.exp.3.up"      # expert 3 of layer 1, up projection
MISSING_TENSOR = "model.layers.1.mlp.experts.2.down_proj.weight"
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"      # [96, 64] in the base


class CaseFailure(Exception):
    pass


class CaseSkipped(Exception):
    pass


def check(cond, why):
    if not cond:
        raise CaseFailure(why)


def short(text, limit=600):
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --------------------------------------------------------------------------
# Running the tools and judging their failures
# --------------------------------------------------------------------------

def run(cmd, **kw):
    """Run cmd to completion, capturing stdout and stderr as text."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                              timeout=TIMEOUT, **kw)
    except subprocess.TimeoutExpired:
        raise CaseFailure(f"timed out after {TIMEOUT}s: {' '.join(cmd)}")


def describe(needle):
    if isinstance(needle, re.Pattern):
        return f"/{needle.pattern}/"
    if isinstance(needle, tuple):
        return " or ".join(repr(n) for n in needle)
    return repr(needle)


def mentions(text, needle):
    """needle: a string (case-insensitive), a tuple of alternatives, or a regex."""
    if isinstance(needle, re.Pattern):
        return needle.search(text) is not None
    if isinstance(needle, tuple):
        return any(mentions(text, n) for n in needle)
    return needle.lower() in text.lower()


def shape_re(*dims):
    """Matches a shape written as "96, 64", "96 x 64", "[96,64]" and the like."""
    return re.compile(r"(?<!\d)" + r"\D{1,3}".join(str(d) for d in dims) + r"(?!\d)")


def exit_status_ok(res):
    if res.returncode < 0:
        raise CaseFailure(f"killed by {signal.Signals(-res.returncode).name}; "
                          f"stderr: {short(res.stderr)}")
    check(res.returncode in (1, 2),
          f"exit status {res.returncode}, expected 1 or 2; stderr: {short(res.stderr)}")


def expect_error(res, *needles):
    """res failed cleanly with one error line that mentions every needle."""
    exit_status_ok(res)
    lines = [l for l in res.stderr.splitlines() if l.strip() and "warning:" not in l]
    check(len(lines) == 1,
          f"expected one error line on stderr, got {len(lines)}: {short(res.stderr)}")
    for n in needles:
        check(mentions(lines[0], n), f"the error does not mention {describe(n)}: {lines[0]!r}")
    repeated = re.search(r"(\S+): \1:", lines[0])
    check(not repeated, f"the error repeats {repeated and repeated.group(1)!r}: {lines[0]!r}")
    SEEN_ERRORS.append(lines[0])
    return lines[0]


def expect_success(res, what):
    check(res.returncode == 0,
          f"{what} exited {res.returncode}, expected success; stderr: {short(res.stderr)}")


# --------------------------------------------------------------------------
# Files: safetensors and .moe
# --------------------------------------------------------------------------

def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def edited(buf, edit):
    """edit(buf) changes the bytearray in place or returns a new one."""
    result = edit(buf)
    return buf if result is None else bytearray(result)


def read_safetensors(path):
    """{name: [dtype, shape, bytes]} in file order, and the __metadata__ entry."""
    raw = read_bytes(path)
    (hlen,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + hlen])
    data = raw[8 + hlen:]
    meta = header.pop("__metadata__", None)
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    tensors = {name: [e["dtype"], list(e["shape"]), data[e["data_offsets"][0]:e["data_offsets"][1]]]
               for name, e in entries}
    return tensors, meta


def write_safetensors(path, tensors, meta=None):
    """Write {name: [dtype, shape, bytes or an int byte count]} as safetensors.

    An int stands for that many zero bytes, left as a hole in the file."""
    header, offset = {}, 0
    for name, (dtype, shape, data) in tensors.items():
        n = data if isinstance(data, int) else len(data)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if meta is not None:
        header["__metadata__"] = meta
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, _, data in tensors.values():
            if isinstance(data, int):
                f.seek(data, os.SEEK_CUR)
            else:
                f.write(data)
        f.truncate()


def edit_safetensors(path, edit):
    """Rewrite the safetensors file at path after edit(tensors) changed the dict."""
    tensors, meta = read_safetensors(path)
    edit(tensors)
    write_safetensors(path, tensors, meta)


def edit_config(hf, edit):
    path = os.path.join(hf, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    edit(cfg)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


MOE_HEADER = struct.Struct("<8sII8Q")       # 80 bytes
MOE_FIELDS = ("magic", "version", "header_size", "meta_offset", "meta_size", "table_offset",
              "table_size", "n_tensors", "data_offset", "file_size", "header_hash")
HASH_POS = 72                                # header_hash: the last u64 of the header
META_SIZES = {0: 4, 1: 4, 2: 4, 3: 8, 4: 8, 5: 1}   # u32 i32 f32 u64 f64 bool
META_STR, META_ARR = 6, 7


def skip_meta_value(buf, p, typ):
    if typ == META_STR:
        (n,) = struct.unpack_from("<I", buf, p)
        return p + 4 + n
    return p + META_SIZES[typ]


def parse_header(buf):
    return SimpleNamespace(**dict(zip(MOE_FIELDS, MOE_HEADER.unpack_from(buf, 0))))


def parse_moe(buf):
    """Header fields, metadata entries and tensor table entries of a .moe file,
    each entry with the absolute positions of its parts."""
    h = parse_header(buf)
    meta, p = {}, h.meta_offset + 4
    for _ in range(struct.unpack_from("<I", buf, h.meta_offset)[0]):
        start = p
        (klen,) = struct.unpack_from("<H", buf, p)
        key = bytes(buf[p + 2:p + 2 + klen]).decode()
        typ, value_pos = buf[p + 2 + klen], p + 3 + klen
        p = value_pos
        if typ == META_ARR:
            elem, count = buf[p], struct.unpack_from("<Q", buf, p + 1)[0]
            p += 9
            for _ in range(count):
                p = skip_meta_value(buf, p, elem)
        else:
            p = skip_meta_value(buf, p, typ)
        meta[key] = SimpleNamespace(type=typ, start=start, value_pos=value_pos, end=p)
    tensors, p = {}, h.table_offset
    for _ in range(h.n_tensors):
        (nlen,) = struct.unpack_from("<H", buf, p)
        name = bytes(buf[p + 2:p + 2 + nlen]).decode()
        dtype_pos = p + 2 + nlen
        n_dims = buf[dtype_pos + 1]
        dims = struct.unpack_from(f"<{n_dims}Q", buf, dtype_pos + 2)
        offset_pos = dtype_pos + 2 + 8 * n_dims
        offset, size, _ = struct.unpack_from("<3Q", buf, offset_pos)
        tensors[name] = SimpleNamespace(dtype_pos=dtype_pos, dims=dims, offset_pos=offset_pos,
                                        offset=offset, size=size)
        p = offset_pos + 24
    return h, meta, tensors


def load_xxh3():
    """XXH3_64bits(bytes) -> int through the system libxxhash, or None."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
        fn = lib.XXH3_64bits
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_uint64
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lambda data: fn(bytes(data), len(data))


XXH3 = load_xxh3()


def header_hash(buf):
    """The header checksum: header minus its hash, then metadata and table."""
    h = parse_header(buf)
    return XXH3(bytes(buf[:HASH_POS]) +
                bytes(buf[h.meta_offset:h.meta_offset + h.meta_size + h.table_size]))


def rehash(buf):
    """Recompute the header checksum of a .moe file edited in memory."""
    struct.pack_into("<Q", buf, HASH_POS, header_hash(buf))


# --------------------------------------------------------------------------
# The test context: tools, scratch folders, base inputs
# --------------------------------------------------------------------------

class Tests:
    def __init__(self, args):
        self.convert, self.cli, self.gen = args.convert, args.cli, args.gen
        self.workdir = args.workdir
        self.counter = 0
        self._bases = {}
        self._good_moe = None

    def scratch(self, tag):
        """A new empty folder under the workdir."""
        self.counter += 1
        path = os.path.join(self.workdir, f"{self.counter:03d}-{tag}")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def base(self, family=FAMILY, shards=1):
        """A pristine generated checkpoint (made once; never modified)."""
        key = (family, shards)
        if key not in self._bases:
            hf = os.path.join(self.workdir, "base", f"{family}-{shards}")
            shutil.rmtree(hf, ignore_errors=True)
            res = run([sys.executable, self.gen, "--family", family, "--dtype", "f32",
                       "--shards", str(shards), "-o", hf])
            if res.returncode != 0:
                raise CaseFailure(f"gen_checkpoint.py failed: {short(res.stderr)}")
            self._bases[key] = hf
        return self._bases[key]

    def checkpoint(self, family=FAMILY, shards=1):
        """A fresh copy of a base checkpoint for one case to damage."""
        hf = os.path.join(self.scratch("hf"), "hf")
        shutil.copytree(self.base(family, shards), hf)
        return hf

    def big_checkpoint(self):
        """A ~100 MB mixtral checkpoint (zeros; expert width 48 -> 8192), so
        that converting it takes a moment (made once)."""
        if "big" not in self._bases:
            hf = os.path.join(self.workdir, "base", "mixtral-big")
            shutil.rmtree(hf, ignore_errors=True)
            shutil.copytree(self.base("mixtral"), hf)
            tensors, meta = read_safetensors(os.path.join(hf, "model.safetensors"))
            for name, entry in tensors.items():
                if ".experts." in name:     # [48, 64] or [64, 48]
                    entry[1] = [8192 if d == 48 else d for d in entry[1]]
                    entry[2] = 4 * entry[1][0] * entry[1][1]
            write_safetensors(os.path.join(hf, "model.safetensors"), tensors, meta)
            edit_config(hf, lambda c: c.update(intermediate_size=8192))
            self._bases["big"] = hf
        return self._bases["big"]

    def good_moe(self):
        """The base checkpoint converted (made once; never modified)."""
        if self._good_moe is None:
            out = os.path.join(self.scratch("good"), OUT_NAME)
            res = run([self.convert, self.base(), "-o", out])
            expect_success(res, "moe-convert of the base checkpoint")
            self._good_moe = out
        return self._good_moe

    def moe_copy(self, tag, edit):
        """A copy of the good .moe with edit(bytearray) applied; returns its path."""
        buf = edited(bytearray(read_bytes(self.good_moe())), edit)
        path = os.path.join(self.scratch(tag), f"{tag}.moe")
        write_bytes(path, buf)
        return path

    def info(self, path, *extra):
        return run([self.cli, "info", "-m", path, *extra])

    def cli_run(self, *args):
        return run([self.cli, "run", *args])

    def convert_fails(self, hf, *needles, names_output=False, preexec=None):
        """moe-convert hf fails cleanly, twice: into an empty folder (nothing may
        appear there) and over an existing OUT (its bytes must stay). The error
        must name the checkpoint folder (or with names_output, OUT) and every
        needle."""
        for existing in (False, True):
            folder = self.scratch("out")
            out = os.path.join(folder, OUT_NAME)
            if existing:
                write_bytes(out, SENTINEL)
            res = run([self.convert, hf, "-o", out], preexec_fn=preexec)
            when = "over an existing OUT" if existing else "into an empty folder"
            try:
                expect_error(res, out if names_output else hf, *needles)
            except CaseFailure as e:
                raise CaseFailure(f"{when}: {e}")
            left = sorted(os.listdir(folder))
            want = [OUT_NAME] if existing else []
            check(left == want, f"{when}: the output folder holds {left}, expected {want}")
            if existing:
                check(read_bytes(out) == SENTINEL, f"{when}: the existing OUT was changed")


# --------------------------------------------------------------------------
# Cases: functions of the Tests object, registered in order by @case(NAME);
# each raises CaseFailure to fail.
# --------------------------------------------------------------------------

CASES = []


def case(name):
    def register(fn):
        CASES.append((name, fn))
        return fn
    return register


@case("sanity: the base checkpoint converts, verifies and runs")
def _(t):
    good = t.good_moe()
    expect_success(t.info(good, "--verify"), "moe-cli info --verify")
    res = t.cli_run("-m", good, "--tokens", "1,2,3", "-n", "2")
    expect_success(res, "moe-cli run")
    check(re.fullmatch(r"\d+,\d+", res.stdout.strip().splitlines()[-1]),
          f"moe-cli run printed {short(res.stdout)}")


# ---- damaged .moe files -----------------------------------------------------

def truncation_case(size_of):
    def body(t):
        full = os.path.getsize(t.good_moe())
        size = size_of(full)
        path = t.moe_copy(f"trunc{size}", lambda b: b[:size])
        needles = [path] + (["truncated"] if size >= 8 else [])
        expect_error(t.info(path), *needles)
    return body


for label, size_of in [("0 bytes", lambda n: 0), ("5 bytes", lambda n: 5),
                       ("10 bytes", lambda n: 10), ("79 bytes", lambda n: 79),
                       ("80 bytes (header only)", lambda n: 80), ("half its size", lambda n: n // 2),
                       ("size - 1", lambda n: n - 1)]:
    case(f".moe truncated to {label}: info fails naming the file")(truncation_case(size_of))


@case(".moe with a trailing byte: info fails naming the file")
def _(t):
    path = t.moe_copy("trailing", lambda b: b + b"\0")
    expect_error(t.info(path), path)


def flip_tensor_byte(buf):
    tensor = parse_moe(buf)[2][FLIP_TENSOR]
    buf[tensor.offset + tensor.size // 2] ^= 0xFF


@case(f".moe with a flipped byte in {FLIP_TENSOR}: info (no --verify) still succeeds")
def _(t):
    path = t.moe_copy("flipdata", flip_tensor_byte)
    expect_success(t.info(path), "moe-cli info")


@case(f".moe with a flipped byte in {FLIP_TENSOR}: info --verify names that tensor")
def _(t):
    path = t.moe_copy("flipdata", flip_tensor_byte)
    res = t.info(path, "--verify")
    exit_status_ok(res)
    check(FLIP_TENSOR in res.stderr, f"stderr does not name {FLIP_TENSOR}: {short(res.stderr)}")
    others = set(re.findall(r"blk\.\d+\.[\w.]+", res.stderr)) - {FLIP_TENSOR}
    check(not others, f"stderr also blames {sorted(others)}: {short(res.stderr)}")


@case(".moe with wrong magic: info fails naming the file and the magic")
def _(t):
    def edit(b):
        b[0:4] = b"GGUF"
    path = t.moe_copy("magic", edit)
    expect_error(t.info(path), path, ("magic", "not a .moe file"))


@case(".moe with version 99: info fails naming the version")
def _(t):
    path = t.moe_copy("version", lambda b: struct.pack_into("<I", b, 8, 99))
    expect_error(t.info(path), path, "version", "99")


def flip_front_byte(where):
    def edit(buf):
        h = parse_header(buf)
        pos = {"metadata": h.meta_offset + h.meta_size // 2,
               "tensor table": h.table_offset + h.table_size // 2,
               "header hash": HASH_POS}[where]
        buf[pos] ^= 0x01
    return edit


for where in ("metadata", "tensor table", "header hash"):
    @case(f".moe with a flipped byte in the {where}: info fails (header checksum)")
    def _(t, where=where):
        path = t.moe_copy("flipfront", flip_front_byte(where))
        expect_error(t.info(path), path)


@case(".moe whose header puts the metadata beyond the file: info fails")
def _(t):
    path = t.moe_copy("metasize", lambda b: struct.pack_into("<Q", b, 24, 1 << 62))
    expect_error(t.info(path), path)


# Checksum-valid but inconsistent files: the header hash is recomputed, so
# only the reader's structural checks stand between them and the runtime.

def crafted_case(name, edit, *needles):
    @case(f".moe (header checksum fixed up) {name}")
    def _(t):
        if XXH3 is None:
            raise CaseSkipped("libxxhash not found (needed to recompute the header checksum)")
        good = bytearray(read_bytes(t.good_moe()))
        check(header_hash(good) == parse_header(good).header_hash,
              "the test's header hash does not reproduce the file's")

        def apply(buf):
            buf = edited(buf, edit)
            rehash(buf)
            return buf
        path = t.moe_copy("crafted", apply)
        expect_error(t.info(path), path, *needles)


def set_tensor_field(field, value, fmt="<Q"):
    def edit(buf):
        tensor = parse_moe(buf)[2][FLIP_TENSOR]
        pos = {"offset": tensor.offset_pos, "dtype": tensor.dtype_pos,
               "n_dims": tensor.dtype_pos + 1, "dim0": tensor.dtype_pos + 2}[field]
        struct.pack_into(fmt, buf, pos, value(buf) if callable(value) else value)
    return edit


def neighbour_offset(buf):
    """The data offset of the tensor just before FLIP_TENSOR."""
    tensors = parse_moe(buf)[2]
    mine = tensors[FLIP_TENSOR].offset
    return max(t.offset for t in tensors.values() if t.offset < mine)


def set_meta_i32(key, value):
    def edit(buf):
        entry = parse_moe(buf)[1][key]
        struct.pack_into("<i", buf, entry.value_pos, value)
    return edit


def rename_meta_key(key, new_key):
    def edit(buf):
        entry = parse_moe(buf)[1][key]
        assert len(new_key) == len(key)
        buf[entry.start + 2:entry.start + 2 + len(key)] = new_key.encode()
    return edit


def layer_flags_as_strings(buf):
    """Re-encode moe.layer_is_moe as an array of strings (rebuilding the
    metadata block and moving the tensor table; data offsets stay)."""
    h, meta, _ = parse_moe(buf)
    entry = meta["moe.layer_is_moe"]
    count = struct.unpack_from("<Q", buf, entry.value_pos + 1)[0]
    value = bytes([META_STR]) + struct.pack("<Q", count)
    value += b"".join(struct.pack("<I", 1) + b"\x01" for _ in range(count))
    key = bytes(buf[entry.start:entry.value_pos])       # u16 len, key, type (ARR)
    new_entry = key + value
    meta_block = (bytes(buf[h.meta_offset:entry.start]) + new_entry +
                  bytes(buf[entry.end:h.meta_offset + h.meta_size]))
    table = bytes(buf[h.table_offset:h.table_offset + h.table_size])
    table_offset = h.meta_offset + len(meta_block)
    assert table_offset + len(table) <= h.data_offset
    buf[h.meta_offset:h.data_offset] = (meta_block + table).ljust(h.data_offset - h.meta_offset, b"\0")
    struct.pack_into("<QQ", buf, 24, len(meta_block), table_offset)
    return buf


crafted_case(f"with {FLIP_TENSOR} placed past the end of the file: info fails naming it",
             set_tensor_field("offset", lambda b: (len(b) + 4096) // 64 * 64), FLIP_TENSOR)
crafted_case(f"with {FLIP_TENSOR} overlapping its neighbour: info fails naming it",
             set_tensor_field("offset", neighbour_offset), FLIP_TENSOR)
crafted_case(f"with {FLIP_TENSOR} of dtype code 250: info fails naming it",
             set_tensor_field("dtype", 250, "<B"), FLIP_TENSOR)
crafted_case(f"with {FLIP_TENSOR} of rank 0: info fails naming it",
             set_tensor_field("n_dims", 0, "<B"), FLIP_TENSOR)
crafted_case(f"with {FLIP_TENSOR} of dimension 2^62: info fails naming it",
             set_tensor_field("dim0", 1 << 62), FLIP_TENSOR)
crafted_case("with moe.n_layers = 0: info fails naming the key",
             set_meta_i32("moe.n_layers", 0), "n_layers")
crafted_case("with moe.n_embd = 65 (tensors are 64 wide): info fails naming a tensor",
             set_meta_i32("moe.n_embd", 65), shape_re(288, 64))
crafted_case("with moe.n_experts_used = 99 (8 experts): info fails naming the value",
             set_meta_i32("moe.n_experts_used", 99), "99")
crafted_case("without general.architecture: info fails naming the key",
             rename_meta_key("general.architecture", "general.architecturX"), "general.architecture")
crafted_case("with moe.layer_is_moe as an array of strings: info fails naming the key",
             layer_flags_as_strings, "moe.layer_is_moe")


# ---- moe-cli run / info arguments ------------------------------------------

@case(f"run with token id {VOCAB} (= vocab size): fails naming the id")
def _(t):
    expect_error(t.cli_run("-m", t.good_moe(), "--tokens", f"1,{VOCAB},3", "-n", "1"),
                 re.compile(rf"(?<!\d){VOCAB}(?!\d)"))


@case("run with token id 2147483647: fails naming the id")
def _(t):
    expect_error(t.cli_run("-m", t.good_moe(), "--tokens", "2147483647", "-n", "1"), "2147483647")


for label, tokens in [("1,x,3", "1,x,3"), ("-1", "-1"), ("99999999999", "99999999999"),
                      ("empty", ""), ("1,,2", "1,,2")]:
    @case(f"run with --tokens {label}: fails")
    def _(t, tokens=tokens):
        expect_error(t.cli_run("-m", t.good_moe(), "--tokens", tokens, "-n", "1"), "tokens")


@case("run -m a nonexistent file: fails naming it")
def _(t):
    path = os.path.join(t.workdir, "no-such-model.moe")
    expect_error(t.cli_run("-m", path, "--tokens", "1", "-n", "1"), path)


@case("info -m a nonexistent file: fails naming it")
def _(t):
    path = os.path.join(t.workdir, "no-such-model.moe")
    expect_error(t.info(path), path)


@case("info -m a directory: fails naming it")
def _(t):
    path = t.scratch("dir-as-model")
    expect_error(t.info(path), path)


@case("run --logits-out into a nonexistent folder: fails naming it")
def _(t):
    path = os.path.join(t.workdir, "no-such-folder", "logits.bin")
    expect_error(t.cli_run("-m", t.good_moe(), "--tokens", "1,2", "-n", "1", "--logits-out", path), path)


# ---- bad checkpoints: tensors -----------------------------------------------

def model_st(hf):
    return os.path.join(hf, "model.safetensors")


@case("checkpoint missing a tensor: convert fails naming it")
def _(t):
    hf = t.checkpoint()
    edit_safetensors(model_st(hf), lambda ts: ts.pop(MISSING_TENSOR))
    t.convert_fails(hf, MISSING_TENSOR)


@case("config.json hidden_size 72 (tensors are 64): convert fails naming a tensor and both shapes")
def _(t):
    hf = t.checkpoint()
    edit_config(hf, lambda c: c.update(hidden_size=72))
    t.convert_fails(hf, "model.embed_tokens.weight", shape_re(VOCAB, 64), shape_re(VOCAB, 72))


DS3_FP8 = "model.layers.1.self_attn.kv_b_proj.weight"


@case("DeepSeek-V3: an FP8 weight without its weight_scale_inv: convert fails naming both")
def _(t):
    hf = t.checkpoint("deepseek_v3")
    edit_safetensors(model_st(hf), lambda ts: ts.pop(DS3_FP8 + "_scale_inv"))
    t.convert_fails(hf, DS3_FP8, DS3_FP8 + "_scale_inv")


@case("DeepSeek-V3: weight_scale_inv of the wrong shape: convert fails naming it and the block grid")
def _(t):
    hf = t.checkpoint("deepseek_v3")

    def edit(ts):
        ts[DS3_FP8 + "_scale_inv"] = ["F32", [2, 1], bytes(8)]
    edit_safetensors(model_st(hf), edit)
    t.convert_fails(hf, DS3_FP8 + "_scale_inv", "[1, 1]")


@case("DeepSeek: topk_method \"bogus\" and scoring_func \"tanh\": convert fails naming the field and value")
def _(t):
    hf = t.checkpoint("deepseek_v3")
    edit_config(hf, lambda c: c.update(topk_method="bogus"))
    t.convert_fails(hf, "topk_method", "bogus")
    hf = t.checkpoint("deepseek_v2")
    edit_config(hf, lambda c: c.update(scoring_func="tanh"))
    t.convert_fails(hf, "scoring_func", "tanh")


@case("q_proj written as [64, 64] (config implies [96, 64]): convert fails naming it and both shapes")
def _(t):
    hf = t.checkpoint()

    def edit(ts):
        ts[Q_PROJ] = ["F32", [64, 64], bytes(64 * 64 * 4)]
    edit_safetensors(model_st(hf), edit)
    t.convert_fails(hf, Q_PROJ, shape_re(64, 64), shape_re(96, 64))


for st_dtype, size in (("F64", 8), ("I8", 1)):
    @case(f"q_proj stored as {st_dtype}: convert fails naming the tensor and the dtype")
    def _(t, st_dtype=st_dtype, size=size):
        hf = t.checkpoint()

        def edit(ts):
            ts[Q_PROJ] = [st_dtype, [96, 64], bytes(96 * 64 * size)]
        edit_safetensors(model_st(hf), edit)
        t.convert_fails(hf, Q_PROJ, st_dtype)


# ---- bad checkpoints: safetensors structure ---------------------------------

def patch_file(path, edit):
    write_bytes(path, edited(bytearray(read_bytes(path)), edit))


def st_case(name, edit, *needles):
    @case(f"model.safetensors {name}: convert fails naming the file")
    def _(t):
        hf = t.checkpoint()
        patch_file(model_st(hf), edit)
        t.convert_fails(hf, model_st(hf), *needles)


def huge_header_length(buf):
    struct.pack_into("<Q", buf, 0, len(buf) + 100)


def garbage_json(buf):
    (hlen,) = struct.unpack_from("<Q", buf, 0)
    buf[8:8 + hlen] = (b"{this is not json ]" * hlen)[:hlen]


def rewrite_header(edit_entries):
    """Edit the raw header entries (offsets as written) of a safetensors image."""
    def edit(buf):
        (hlen,) = struct.unpack_from("<Q", buf, 0)
        header = json.loads(buf[8:8 + hlen])
        edit_entries(header, len(buf) - 8 - hlen)
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        return bytearray(struct.pack("<Q", len(text)) + text) + buf[8 + hlen:]
    return edit


def offsets_past_end(header, data_len):
    header[Q_PROJ]["data_offsets"][1] = data_len + 4096


def offsets_wrong_size(header, data_len):
    b = header[Q_PROJ]["data_offsets"][0]
    header[Q_PROJ]["data_offsets"][1] = b + 96 * 64 * 4 - 4


def last_tensor(buf):
    (hlen,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(buf[8:8 + hlen])
    header.pop("__metadata__", None)
    return max(header, key=lambda n: header[n]["data_offsets"][1])


st_case("with a header length larger than the file", huge_header_length)
st_case("with garbage instead of the JSON header", garbage_json)
st_case("with a header of length 0", lambda b: b"\0" * 8 + b[8:])
st_case("of 5 bytes", lambda b: b[:5])
st_case(f"with {Q_PROJ}'s data_offsets past the end", rewrite_header(offsets_past_end), Q_PROJ)
st_case(f"with {Q_PROJ}'s data_offsets 4 bytes short of its shape",
        rewrite_header(offsets_wrong_size), Q_PROJ)


@case("model.safetensors cut 1000 bytes short: convert fails naming the file and the last tensor")
def _(t):
    hf = t.checkpoint()
    name = last_tensor(read_bytes(model_st(hf)))
    patch_file(model_st(hf), lambda b: b[:-1000])
    t.convert_fails(hf, model_st(hf), name)


# ---- bad checkpoints: sharding ----------------------------------------------

SHARD2 = "model-00002-of-00003.safetensors"


@case("3-shard checkpoint with a shard deleted: convert fails naming the shard")
def _(t):
    hf = t.checkpoint(shards=3)
    os.remove(os.path.join(hf, SHARD2))
    t.convert_fails(hf, SHARD2)


@case("3-shard checkpoint whose index puts a tensor in the wrong shard: convert fails naming it")
def _(t):
    hf = t.checkpoint(shards=3)
    index = os.path.join(hf, "model.safetensors.index.json")
    with open(index) as f:
        doc = json.load(f)
    shards = sorted(set(doc["weight_map"].values()))
    doc["weight_map"][Q_PROJ] = next(s for s in shards if s != doc["weight_map"][Q_PROJ])
    with open(index, "w") as f:
        json.dump(doc, f)
    t.convert_fails(hf, Q_PROJ)


@case("3-shard checkpoint with an index that is not JSON: convert fails naming the index")
def _(t):
    hf = t.checkpoint(shards=3)
    write_bytes(os.path.join(hf, "model.safetensors.index.json"), b"{\"weight_map\": [oops")
    t.convert_fails(hf, "model.safetensors.index.json")


@case("checkpoint folder without safetensors: convert fails naming the folder")
def _(t):
    hf = t.checkpoint()
    os.remove(model_st(hf))
    t.convert_fails(hf, "safetensors")


@case("checkpoint folder that does not exist: convert fails naming it")
def _(t):
    t.convert_fails(os.path.join(t.workdir, "no-such-checkpoint"))


# ---- bad checkpoints: config.json -------------------------------------------

def config_case(name, edit, *needles, family=FAMILY):
    @case(f"config.json {name}: convert fails")
    def _(t):
        hf = t.checkpoint(family)
        edit(hf)
        t.convert_fails(hf, "config.json", *needles)


def config_edit(fn):
    return lambda hf: edit_config(hf, fn)


config_case("missing", lambda hf: os.remove(os.path.join(hf, "config.json")))
config_case("is a directory", lambda hf: (os.remove(os.path.join(hf, "config.json")),
                                          os.mkdir(os.path.join(hf, "config.json"))))
config_case("not JSON", lambda hf: write_bytes(os.path.join(hf, "config.json"), b"{\"hidden_size\": 64,"))
config_case("without hidden_size (names it)", config_edit(lambda c: c.pop("hidden_size")), "hidden_size")
config_case("without model_type (names it)", config_edit(lambda c: c.pop("model_type")), "model_type")
config_case('with model_type "llama4_text" (names it and the value)',
            config_edit(lambda c: c.update(model_type="llama4_text")), "model_type", "llama4_text")
config_case('with hidden_size "64" (a string; names it)',
            config_edit(lambda c: c.update(hidden_size="64")), "hidden_size")
config_case("with hidden_size 64.5 (names it)",
            config_edit(lambda c: c.update(hidden_size=64.5)), "hidden_size")
config_case("with vocab_size -1 (names it)",
            config_edit(lambda c: c.update(vocab_size=-1)), "vocab_size")
config_case("with num_experts_per_tok 9 > num_experts 8 (names it)",
            config_edit(lambda c: c.update(num_experts_per_tok=9)), "num_experts_per_tok")
config_case("with num_key_value_heads 3 (4 heads; names it)",
            config_edit(lambda c: c.update(num_key_value_heads=3)), "num_key_value_heads")
config_case("with mlp_only_layers [7] (3 layers; names it)",
            config_edit(lambda c: c.update(mlp_only_layers=[7])), "mlp_only_layers")
config_case("(mixtral) without num_local_experts (names it)",
            config_edit(lambda c: c.pop("num_local_experts")), "num_local_experts", family="mixtral")


# ---- moe-convert output ------------------------------------------------------

@case("convert into a folder that does not exist: fails naming the path")
def _(t):
    parent = os.path.join(t.scratch("nodir"), "no", "such")
    out = os.path.join(parent, OUT_NAME)
    res = run([t.convert, t.base(), "-o", out])
    expect_error(res, out)
    check(not os.path.exists(os.path.dirname(parent)), "moe-convert created the missing folder")


@case("convert onto a path that is a directory: fails, the directory and folder unchanged")
def _(t):
    folder = t.scratch("outdir")
    out = os.path.join(folder, OUT_NAME)
    os.mkdir(out)
    write_bytes(os.path.join(out, "keep"), SENTINEL)
    expect_error(run([t.convert, t.base(), "-o", out]), out)
    check(sorted(os.listdir(folder)) == [OUT_NAME], f"the folder holds {sorted(os.listdir(folder))}")
    check(os.listdir(out) == ["keep"] and read_bytes(os.path.join(out, "keep")) == SENTINEL,
          "the directory's contents changed")


def file_size_limit():
    """In the child: writes past 64 KiB fail with EFBIG (as on a full disk)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))


@case("convert hitting a write error (RLIMIT_FSIZE 64 KiB): fails, no temp file, OUT intact")
def _(t):
    t.convert_fails(t.base(), names_output=True, preexec=file_size_limit)


# ---- interrupts ------------------------------------------------------------

def interrupt_case(sig, existing):
    when = "over an existing OUT" if existing else "into an empty folder"

    @case(f"convert interrupted by {sig.name} while writing, {when}: no temp file, "
          "OUT absent/intact or complete and valid")
    def _(t):
        hf = t.big_checkpoint()
        folder = t.scratch("interrupt")
        out = os.path.join(folder, OUT_NAME)
        if existing:
            write_bytes(out, SENTINEL)
        proc = subprocess.Popen([t.convert, hf, "-o", out], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + TIMEOUT
        while (proc.poll() is None and time.monotonic() < deadline and
               not any(n.startswith(OUT_NAME + ".tmp") for n in os.listdir(folder))):
            time.sleep(0.001)
        time.sleep(0.02)                    # into the tensor data
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise CaseFailure(f"moe-convert did not stop after {sig.name}")
        rc, left = proc.returncode, sorted(os.listdir(folder))
        if rc == 0:                          # finished before the signal landed
            check(left == [OUT_NAME], f"finished, but the folder holds {left}")
            expect_success(t.info(out, "--verify"), "moe-cli info --verify of the finished OUT")
            return
        check(rc in (-sig, 128 + sig, 1), f"exit status {rc} after {sig.name}; stderr: {short(err)}")
        want = [OUT_NAME] if existing else []
        check(left == want, f"interrupted (exit {rc}): the folder holds {left}, expected {want}")
        if existing:
            check(read_bytes(out) == SENTINEL, "interrupted: the existing OUT was changed")


for sig in (signal.SIGINT, signal.SIGTERM):
    for existing in (False, True):
        interrupt_case(sig, existing)


# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--convert", required=True, help="path to moe-convert")
    ap.add_argument("--cli", required=True, help="path to moe-cli")
    ap.add_argument("--gen", required=True, help="path to tests/gen_checkpoint.py")
    ap.add_argument("--workdir", required=True, help="scratch directory (created)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also print the error lines each passing case saw")
    args = ap.parse_args(argv)
    for opt in ("convert", "cli", "gen"):
        path = getattr(args, opt)
        if not os.path.isfile(path):
            ap.error(f"--{opt} {path}: no such file")
        setattr(args, opt, os.path.abspath(path))
    os.makedirs(args.workdir, exist_ok=True)
    args.workdir = os.path.abspath(args.workdir)

    t = Tests(args)
    passed = failed = 0
    for name, body in CASES:
        SEEN_ERRORS.clear()
        try:
            body(t)
            print(f"ok  {name}", flush=True)
            if args.verbose:
                for line in dict.fromkeys(SEEN_ERRORS):
                    print(f"      {line}")
            passed += 1
        except CaseSkipped as e:
            print(f"skip {name}: {e}", flush=True)
        except CaseFailure as e:
            print(f"FAIL {name}: {e}", flush=True)
            failed += 1
        except Exception as e:  # a bug in the test itself: still count it and go on
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
