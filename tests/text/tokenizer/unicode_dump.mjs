// unicode_dump.mjs — writes, for every code point, the general category and
// the Alphabetic property as this Node's regex engine (the reference's) sees
// them, as runs "lo hi gc alpha" (hex); then "N cp nfd nfkd" for every code
// point that NFD or NFKD changes (comma-separated hex), and "P cp a b" for
// every primary composite: NFC(a b) = cp. Read by unicode_additions.c.
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
const hex = (s) => [...s].map((c) => c.codePointAt(0).toString(16)).join(',');
for (let cp = 0; cp <= 0x10ffff; cp++) {
  if (cp >= 0xd800 && cp <= 0xdfff) continue;
  const s = String.fromCodePoint(cp);
  const d = s.normalize('NFD'), kd = s.normalize('NFKD');
  if (d === s && kd === s) continue;
  lines.push(`N ${cp.toString(16)} ${hex(d)} ${hex(kd)}`);
  if (d === s) continue;
  const full = [...d];
  const a = full.slice(0, -1).join('').normalize('NFC'), b = full[full.length - 1];
  if ([...a].length === 1 && (a + b).normalize('NFC') === s) lines.push(`P ${cp.toString(16)} ${hex(a)} ${hex(b)}`);
}
process.stdout.write(lines.join('\n') + '\n');
