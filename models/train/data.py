#!/usr/bin/python3
"""Build the training / held-out text of the demo model from a Debian package.

Source: Debian package r-cran-janeaustenr (MIT licence; the novels themselves
are in the public domain, via Project Gutenberg).  It stores Jane Austen's six
completed novels as R character vectors (one element per line of the Gutenberg
text) in an R lazy-load database (data/Rdata.rdx + data/Rdata.rdb).  This
script reads that database with a small pure-Python reader of R's XDR
serialization format, so R itself is not needed at build time (only the
package's files).

    data.py [--pkgdir DIR] -o OUTDIR

writes OUTDIR/train.txt, OUTDIR/heldout.txt and OUTDIR/data.json.
Documents are paragraphs (blank-line separated, inner line breaks joined with
one space, whitespace runs collapsed).  Held-out split (deterministic): the
last 2% of the paragraphs of every novel (by character count), so held-out
text is never seen in training.  Paragraphs are separated by one blank line in
the output files.
"""
import argparse
import gzip
import json
import os
import re
import struct
import sys
import zlib

PKG = "r-cran-janeaustenr"
DEFAULT_DIR = "/usr/lib/R/site-library/janeaustenr"
NOVELS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma",
          "northangerabbey", "persuasion"]
HELDOUT_FRAC = 0.02


class RReader:
    """Minimal reader of R's binary XDR serialization (format 2 and 3):
    enough for character vectors, lists, pairlists and symbols."""

    def __init__(self, buf):
        self.b, self.p, self.refs = buf, 0, []

    def int(self):
        v = struct.unpack_from(">i", self.b, self.p)[0]
        self.p += 4
        return v

    def bytes(self, n):
        v = self.b[self.p:self.p + n]
        self.p += n
        return v

    def header(self):
        assert self.bytes(2) == b"X\n", "not XDR serialization"
        version = self.int()
        self.int(); self.int()
        if version == 3:
            self.bytes(self.int())      # native encoding

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
        if t == 254 or t == 242:        # NILVALUE / EMPTYENV
            return None
        if t == 255:                    # REFSXP
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            return self.refs[idx - 1]
        if t == 1:                      # SYMSXP
            s = self.item()
            self.refs.append(("sym", s))
            return ("sym", s)
        if t == 9:                      # CHARSXP
            n = self.int()
            return None if n == -1 else self.bytes(n).decode("utf-8", "replace")
        if t in (2, 6, 17):             # LISTSXP, LANGSXP, DOTSXP (pairlists)
            out = []
            while True:
                attr = self.item() if has_attr else None
                tag = self.item() if has_tag else None
                out.append((tag, self.item()))
                flags = self.int()
                t = flags & 0xFF
                has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
                if t == 254:
                    return out
                if t not in (2, 6, 17):
                    raise ValueError("improper pairlist")
        if t in (16, 19, 20):           # STRSXP, VECSXP, EXPRSXP
            n = self.int()
            v = [self.item() for _ in range(n)]
        elif t == 13 or t == 10:        # INTSXP, LGLSXP
            n = self.int()
            v = list(struct.unpack_from(">%di" % n, self.b, self.p))
            self.p += 4 * n
        elif t == 14:                   # REALSXP
            n = self.int()
            v = list(struct.unpack_from(">%dd" % n, self.b, self.p))
            self.p += 8 * n
        else:
            raise NotImplementedError("R SEXP type %d" % t)
        if has_attr:
            self.item()
        return v


def unserialize(buf):
    r = RReader(buf)
    r.header()
    return r.item()


def read_novels(pkgdir):
    base = os.path.join(pkgdir, "data", "Rdata")
    with gzip.open(base + ".rdx", "rb") as f:
        raw = f.read()
    r = RReader(raw)
    r.header()
    flags = r.int()
    assert flags & 0xFF == 19, "rdx: expected a list"
    n = r.int()
    parts = [r.item() for _ in range(n)]
    # attributes: names of the list
    attrs = r.item()
    keys = [v for (_, v) in attrs][0]
    index = dict(zip(keys, parts))
    variables = index["variables"]      # [offset, length] per object
    # RReader drops attributes of nested objects, so the names of
    # `variables` are read by a second pass.
    rdb = open(base + ".rdb", "rb").read()
    out = {}
    for name, (off, length) in zip(_names_of_variables(raw), variables):
        blob = rdb[off:off + length]
        size = struct.unpack(">i", blob[:4])[0]
        data = zlib.decompress(blob[4:])
        assert len(data) == size
        out[name] = unserialize(data)
    return out


def _names_of_variables(raw):
    """The names attribute of index$variables (first STRSXP after the pairs)."""
    r = RReader(raw)
    r.header()
    r.int(); r.int()                  # VECSXP, length
    r.int()                           # variables: VECSXP with attributes
    n = r.int()
    for _ in range(n):
        r.item()
    r.int()                           # attribute pairlist: tag "names", STRSXP
    r.item()
    return r.item()


def paragraphs(lines):
    paras, cur = [], []
    for line in lines + [""]:
        line = (line or "").strip()
        if line:
            cur.append(line)
        elif cur:
            paras.append(re.sub(r"\s+", " ", " ".join(cur)))
            cur = []
    return paras


def clean(p):
    # Gutenberg italics markers _word_ -> word; keep everything else.
    p = re.sub(r"(?<!\w)_([^_]+)_(?!\w)", r"\1", p)
    return p.replace("_", "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pkgdir", default=DEFAULT_DIR)
    ap.add_argument("-o", "--outdir", required=True)
    a = ap.parse_args()
    novels = read_novels(a.pkgdir)
    os.makedirs(a.outdir, exist_ok=True)
    train, held, stats = [], [], {}
    for name in NOVELS:
        paras = [clean(p) for p in paragraphs(novels[name])]
        total = sum(len(p) for p in paras)
        acc, cut = 0, len(paras)
        for i, p in enumerate(paras):
            if acc >= total * (1 - HELDOUT_FRAC):
                cut = i
                break
            acc += len(p)
        train += paras[:cut]
        held += paras[cut:]
        stats[name] = {"paragraphs": len(paras), "chars": total,
                       "heldout_paragraphs": len(paras) - cut}
    with open(os.path.join(a.outdir, "train.txt"), "w") as f:
        f.write("\n\n".join(train) + "\n")
    with open(os.path.join(a.outdir, "heldout.txt"), "w") as f:
        f.write("\n\n".join(held) + "\n")
    info = {"package": PKG, "pkgdir": a.pkgdir, "novels": stats,
            "train_chars": sum(map(len, train)), "heldout_chars": sum(map(len, held))}
    with open(os.path.join(a.outdir, "data.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
