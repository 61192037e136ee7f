// unicode_dump.mjs — writes, for every code point, the general category and
// the Alphabetic property as this Node's regex engine (the reference's) sees
// them, as runs "lo hi gc alpha" (hex). Read by unicode_additions.c.
// Usage: node unicode_dump.mjs > dump.txt
const GC = ['Lu', 'Ll', 'Lt', 'Lm', 'Lo', 'Mn', 'Mc', 'Me', 'Nd', 'Nl', 'No', 'Pc', 'Pd', 'Ps', 'Pe', 'Pi', 'Pf',
  'Po', 'Sm', 'Sc', 'Sk', 'So', 'Zs', 'Zl', 'Zp', 'Cc', 'Cf', 'Cs', 'Co', 'Cn'];
const res = GC.map((g) => new RegExp(`^\\p{gc=${g}}$`, 'u'));
const alpha = /^\p{Alphabetic}$/u;
const lines = [`# node ${process.versions.node} unicode ${process.versions.unicode}`];
let run = null;
for (let cp = 0; cp <= 0x10ffff; cp++) {
  let gc = 'Cs', a = 0;
  if (cp < 0xd800 || cp > 0xdfff) {
    const s = String.fromCodePoint(cp);
    gc = GC[res.findIndex((r) => r.test(s))];
    a = alpha.test(s) ? 1 : 0;
  }
  if (run && run.gc === gc && run.a === a && run.hi === cp - 1) run.hi = cp;
  else {
    if (run) lines.push(`${run.lo.toString(16)} ${run.hi.toString(16)} ${run.gc} ${run.a}`);
    run = { lo: cp, hi: cp, gc, a };
  }
}
lines.push(`${run.lo.toString(16)} ${run.hi.toString(16)} ${run.gc} ${run.a}`);
process.stdout.write(lines.join('\n') + '\n');
