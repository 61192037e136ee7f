// tokenizer_golden.mjs — the reference outputs for tests/text/test_tokenizer.c.
// For each tokenizer of tokenizers.json (real tokenizer.json files, checked
// against their sha256, and variants of them that exercise settings the real
// files do not use: see "patch" there) it loads @huggingface/transformers' AutoTokenizer from
// local files only and writes golden/<name>.jsonl.gz: one line per corpus.jsonl
// string, in order:
//   {"ids": [...]}            encode(s, {add_special_tokens: false})
//   "pre": [...], "post": [...] encode(s) with add_special_tokens: true is pre + ids + post, or
//   "sp": [...]               encode(s) with add_special_tokens: true, when it is not ids nor pre + ids
//   "rt": true|false          decode(encode(s)) === s
//   "dec": base64             decode(ids), when it is not the corpus bytes themselves
//   "dsk": base64             decode(ids, {skip_special_tokens: true}), when it differs from decode(ids)
// The input string is what the reference sees for the corpus bytes:
// new TextDecoder('utf-8', {ignoreBOM: true}).decode(bytes), so invalid UTF-8
// arrives as U+FFFD. Regenerate with:
//   cd tests/text/tokenizer && npm ci --ignore-scripts && node gen_corpus.mjs && node tokenizer_golden.mjs
import crypto from 'node:crypto';
import fs from 'node:fs';
import zlib from 'node:zlib';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoTokenizer, env } from '@huggingface/transformers';

const here = path.dirname(fileURLToPath(import.meta.url));
const list = JSON.parse(fs.readFileSync(path.join(here, 'tokenizers.json'), 'utf8'));
const only = process.argv.slice(2);
const corpus = fs.readFileSync(path.join(here, 'corpus.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const texts = corpus.map((c) => decoder.decode(Buffer.from(c.b64, 'base64')));
const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');
const sha = (p) => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-tok-'));
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = tmp + path.sep;
env.useBrowserCache = false;
env.useFSCache = false;

fs.mkdirSync(path.join(here, 'golden'), { recursive: true });
for (const t of list) {
  if (only.length && !only.includes(t.name)) continue;
  const files = [t.tokenizer, t.config];
  files.forEach((f, i) => {
    if (f && sha(path.join(here, f)) !== t.sha256[i]) throw new Error(`${t.name}: ${f} has changed (sha256)`);
  });
  // a local "model" folder holding just the two files; no config: an empty object, as the reference requires one
  const dir = path.join(tmp, t.name);
  fs.mkdirSync(dir, { recursive: true });
  // variants: top-level keys of "patch" replace those of tokenizer.json, "added_tokens_extra"
  // are appended to added_tokens, keys of "config_patch" replace those of the config
  const json = JSON.parse(fs.readFileSync(path.join(here, t.tokenizer), 'utf8'));
  Object.assign(json, t.patch ?? {});
  json.added_tokens = [...json.added_tokens, ...(t.added_tokens_extra ?? [])];
  const config = t.config ? JSON.parse(fs.readFileSync(path.join(here, t.config), 'utf8')) : {};
  Object.assign(config, t.config_patch ?? {});
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  const tok = await AutoTokenizer.from_pretrained(t.name, { local_files_only: true });
  const lines = [];
  const t0 = Date.now();
  let rt = 0;
  for (let i = 0; i < texts.length; i++) {
    const s = texts[i];
    const ids = tok.encode(s, { add_special_tokens: false });
    const sp = tok.encode(s, { add_special_tokens: true });
    const dec = ids.length ? tok.decode(ids) : '';
    const dsk = ids.length ? tok.decode(ids, { skip_special_tokens: true }) : '';
    const o = { ids };
    if (JSON.stringify(sp) !== JSON.stringify(ids)) {
      // with special tokens = pre + ids + post (BOS, EOS, CLS/SEP), usually; else the whole list
      // (the longest such prefix: an empty text with BOS gives pre [BOS], not post [BOS])
      const want = JSON.stringify(ids);
      let k = sp.length - ids.length;
      while (k >= 0 && JSON.stringify(sp.slice(k, k + ids.length)) !== want) k--;
      if (k >= 0) {
        if (k) o.pre = sp.slice(0, k);
        if (k + ids.length < sp.length) o.post = sp.slice(k + ids.length);
      } else {
        o.sp = sp;
      }
    }
    o.rt = dec === s;
    if (o.rt) rt++;
    if (b64(dec) !== corpus[i].b64) o.dec = b64(dec);
    if (dsk !== dec) o.dsk = b64(dsk);
    lines.push(JSON.stringify(o));
  }
  const gz = zlib.gzipSync(Buffer.from(lines.join('\n') + '\n'), { level: 9 });
  fs.writeFileSync(path.join(here, 'golden', `${t.name}.jsonl.gz`), gz);
  console.log(`${t.name}: ${texts.length} strings, ${rt} round-trip, ${(Date.now() - t0) / 1000}s (${tok.constructor.name})`);
}
fs.rmSync(tmp, { recursive: true, force: true });
