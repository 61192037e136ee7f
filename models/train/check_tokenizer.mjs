// Check our tokenizer export against the Hugging Face JavaScript reference.
//   node check_tokenizer.mjs HF_DIR LINES.jsonl
// LINES.jsonl: {"text": ..., "ids": [...]} per line (ids from our Python
// encoder).  Also renders the chat template.  Run from a directory where
// `npm install --ignore-scripts @huggingface/transformers` was done
// (NODE_PATH does not work for ES modules; copy this file there).
import fs from 'node:fs';
import path from 'node:path';
import { AutoTokenizer, env } from '@huggingface/transformers';

const [dir, lines] = process.argv.slice(2);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(dir)) + path.sep;
env.useBrowserCache = false;
env.useFSCache = false;
const tok = await AutoTokenizer.from_pretrained(path.basename(path.resolve(dir)), { local_files_only: true });
let bad = 0, n = 0;
for (const line of fs.readFileSync(lines, 'utf8').split('\n')) {
  if (!line) continue;
  const { text, ids } = JSON.parse(line);
  const got = Array.from(tok.encode(text, { add_special_tokens: false }));
  n++;
  if (JSON.stringify(got) !== JSON.stringify(ids)) {
    if (bad++ < 5) console.log('MISMATCH', JSON.stringify(text).slice(0, 200), '\n ours', JSON.stringify(ids).slice(0, 200), '\n   hf', JSON.stringify(got).slice(0, 200));
  }
  if (tok.decode(got) !== text.normalize('NFC')) { if (bad++ < 5) console.log('DECODE MISMATCH', JSON.stringify(text).slice(0, 100)); }
}
const chat = tok.apply_chat_template([{ role: 'user', content: 'Hello' }], { tokenize: false, add_generation_prompt: true });
console.log('chat template:', JSON.stringify(chat));
console.log(`${n} lines, ${bad} mismatches`);
process.exit(bad ? 1 : 0);
