// gen_corpus.mjs — writes corpus.jsonl, the tokenizer test corpus: one JSON
// object per line, {"kind": ..., "b64": base64 of the UTF-8 (or deliberately
// invalid) bytes}. Deterministic: a seeded generator, no clock, no network.
//
//   node gen_corpus.mjs            (writes corpus.jsonl next to this file)
//
// Kinds: prose in many scripts, code, numbers, emoji (ZWJ, flags, skin tones,
// keycaps, recent Unicode), white space runs, special-token look-alikes,
// contractions, Unicode normalization cases, random code points (new scripts
// and unassigned ones too), markdown/URLs/JSON, chat transcripts, very long
// words, edge cases, every single byte, and invalid UTF-8.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

// mulberry32
let seed = 0x5eed1234;
function rand() {
  seed |= 0;
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const ri = (n) => Math.floor(rand() * n);
const pick = (a) => a[ri(a.length)];
const chance = (p) => rand() < p;

const out = [];
const enc = new TextEncoder();
function add(kind, s) { out.push({ kind, b64: Buffer.from(enc.encode(s)).toString('base64') }); }
function addBytes(kind, bytes) { out.push({ kind, b64: Buffer.from(bytes).toString('base64') }); }

// ---- words of many languages ----
const LANGS = {
  en: { sep: ' ', words: 'the of and to in is you that it he was for on are as with his they I at be this have from or one had by word but not what all were we when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part over new sound take only little work know place year live me back give most very after thing our just name good sentence man think say great where help through much before line right too mean old any same tell boy follow came want show also around form three small set put end does another well large must big even such because turn here why ask went men read need land different home us move try kind hand picture again change off play spell air away animal house point page letter mother answer found study still learn should America world'.split(' '), punct: ['.', ',', '!', '?', ';', ':', '...', ' -', '"', "'"] },
  de: { sep: ' ', words: 'der die und in den von zu das mit sich des auf für ist im dem nicht ein Die eine als auch es an werden aus er hat daß sie nach wird bei einer Der um am sind noch wie einem über einen Das so Sie zum war haben nur oder aber vor zur bis mehr durch man sein wurde sei In Straße Größe Übung Mädchen Fußgängerübergänge Donaudampfschifffahrtsgesellschaft'.split(' '), punct: ['.', ',', '!', '?', '„', '“'] },
  fr: { sep: ' ', words: "le de un à être et en avoir que pour dans ce il qui ne sur se pas plus pouvoir par je avec tout faire son mettre autre on mais nous comme ou si leur y dire elle devant été déjà très où ça l'homme c'est aujourd'hui garçon français œuvre naïve Noël château forêt".split(' '), punct: ['.', ',', ' !', ' ?', ' ;', '«', '»'] },
  es: { sep: ' ', words: 'el la de que y a en un ser se no haber por con su para como estar tener le lo todo pero más hacer o poder decir este ir otro ese si me ya ver porque dar cuando él muy sin vez mucho saber qué sobre mi alguno mismo año niño señor España ¿Cómo ¡Hola acción corazón'.split(' '), punct: ['.', ',', '!', '?', '¿', '¡'] },
  ru: { sep: ' ', words: 'и в не на я быть он с что а по это она этот к но они мы как из у который то за свой что весь год от так о для ты же все тот мочь вы человек такой его сказать только или ещё бы себя один как уже до время если сам когда другой Москва Россия здравствуйте спасибо ёлка объявление'.split(' '), punct: ['.', ',', '!', '?', '—', '«', '»'] },
  uk: { sep: ' ', words: 'і в не на я бути він з що а по це вона цей до але вони ми як Київ Україна їжак ґанок привіт дякую'.split(' '), punct: ['.', ',', '!', '?'] },
  el: { sep: ' ', words: 'και το να του η της με που το ένα σε για δεν είναι θα από τα τον Αθήνα Ελλάδα καλημέρα ευχαριστώ ψυχή ωραίος'.split(' '), punct: ['.', ',', ';', '·'] },
  zh: { sep: '', words: '我 你 他 她 的 是 在 不 了 有 和 人 这 中 大 为 上 个 国 到 说 们 时 要 就 出 会 可 也 你好 世界 中国 北京 上海 我们 今天 天气 很好 学习 机器 学习 人工智能 语言 模型 计算机 程序 数据 测试 谢谢 再见 龘 麤 𠀋 𪚥'.split(' '), punct: ['。', '，', '！', '？', '、', '：', '；', '“', '”', '（', '）'] },
  ja: { sep: '', words: 'こんにちは ありがとう 日本 東京 私 は が を に で と の です ます した カタカナ ひらがな 漢字 コンピューター プログラム テスト 今日 天気 いい ですね ラーメン すし ｶﾀｶﾅ'.split(' '), punct: ['。', '、', '！', '？', '「', '」', '・'] },
  ko: { sep: ' ', words: '안녕하세요 감사합니다 한국 서울 나는 너는 그는 이 그 저 사람 사랑 컴퓨터 프로그램 테스트 오늘 날씨 좋다 학교 학생 선생님 한글 대한민국'.split(' '), punct: ['.', ',', '!', '?'] },
  ar: { sep: ' ', words: 'في من على إلى أن هذا هذه التي الذي كان مع عن ما لا هو هي كل بين قد العربية السلام عليكم شكرا مرحبا القاهرة الكتاب المدرسة مُحَمَّد'.split(' '), punct: ['.', '،', '؟', '!', '؛'] },
  he: { sep: ' ', words: 'של את על הוא זה לא עם כל אני היא גם או אבל ירושלים שלום תודה ספר בית ילד'.split(' '), punct: ['.', ',', '!', '?'] },
  fa: { sep: ' ', words: 'و در به از که این را با است برای آن یک خود تا کرد بر هم نیز تهران ایران سلام ممنون کتاب'.split(' '), punct: ['.', '،', '؟'] },
  hi: { sep: ' ', words: 'के है में की और को से का एक यह पर हैं भी नहीं कि था तो ही हो गया कर लिए नमस्ते धन्यवाद भारत दिल्ली हिन्दी किताब विद्यालय क्षत्रिय'.split(' '), punct: ['।', ',', '!', '?'] },
  bn: { sep: ' ', words: 'আমি তুমি সে এবং কিন্তু বাংলা ঢাকা ধন্যবাদ নমস্কার বই স্কুল'.split(' '), punct: ['।', ',', '?'] },
  ta: { sep: ' ', words: 'நான் நீ அவன் மற்றும் தமிழ் சென்னை நன்றி வணக்கம் புத்தகம் பள்ளி'.split(' '), punct: ['.', ',', '?'] },
  th: { sep: '', words: 'สวัสดี ขอบคุณ ประเทศ ไทย กรุงเทพ ฉัน คุณ เขา และ แต่ ภาษา คอมพิวเตอร์ โปรแกรม ทดสอบ วันนี้ อากาศ ดี มาก ครับ ค่ะ'.split(' '), punct: [' ', '.', '!', '?'] },
  vi: { sep: ' ', words: 'tôi bạn anh ấy và nhưng tiếng Việt Hà Nội cảm ơn xin chào sách trường học người nước được những không của có'.split(' '), punct: ['.', ',', '!', '?'] },
  tr: { sep: ' ', words: 've bir bu da de için ile çok ne ama gibi daha İstanbul Türkiye teşekkürler merhaba kitap okul ığdır şişli'.split(' '), punct: ['.', ',', '!', '?'] },
  pl: { sep: ' ', words: 'i w nie na się z jest że do to jak ale Polska Warszawa dziękuję cześć książka szkoła źdźbło żółć'.split(' '), punct: ['.', ',', '!', '?'] },
  ka: { sep: ' ', words: 'და არის რომ ეს თბილისი საქართველო მადლობა გამარჯობა წიგნი სკოლა'.split(' '), punct: ['.', ',', '!'] },
  hy: { sep: ' ', words: 'և է որ այս Երևան Հայաստան շնորհակալություն բարև գիրք դպրոց'.split(' '), punct: ['։', ',', '՞'] },
  am: { sep: ' ', words: 'ሰላም አመሰግናለሁ ኢትዮጵያ አዲስ አበባ መጽሐፍ ትምህርት ቤት'.split(' '), punct: ['።', '፣'] },
  my: { sep: ' ', words: 'မင်္ဂလာပါ ကျေးဇူးတင်ပါတယ် မြန်မာ ရန်ကုန် စာအုပ် ကျောင်း'.split(' '), punct: ['။', '၊'] },
  km: { sep: '', words: 'សួស្តី អរគុណ កម្ពុជា ភ្នំពេញ សៀវភៅ សាលារៀន'.split(' '), punct: ['។', ' '] },
  si: { sep: ' ', words: 'ආයුබෝවන් ස්තූතියි ශ්‍රී ලංකාව කොළඹ පොත පාසල'.split(' '), punct: ['.', ','] },
  sw: { sep: ' ', words: 'na ya wa kwa ni katika hii huo Jambo asante Tanzania Kenya kitabu shule habari gani'.split(' '), punct: ['.', ',', '!', '?'] },
};
const LANG_KEYS = Object.keys(LANGS);

function sentence(lang) {
  const L = LANGS[lang];
  const n = 1 + ri(14);
  let s = '';
  for (let i = 0; i < n; i++) {
    let w = pick(L.words);
    if (i === 0 && chance(0.5)) w = w.charAt(0).toUpperCase() + w.slice(1);
    if (chance(0.05)) w = w.toUpperCase();
    s += (i ? L.sep : '') + w;
    if (chance(0.15)) s += pick(L.punct);
  }
  if (chance(0.7)) s += pick(L.punct);
  return s;
}

for (let i = 0; i < 420; i++) {
  const lang = LANG_KEYS[i % LANG_KEYS.length];
  let s = sentence(lang);
  if (chance(0.3)) s += (chance(0.5) ? ' ' : '\n') + sentence(chance(0.5) ? lang : pick(LANG_KEYS));
  if (chance(0.1)) s = ' ' + s;
  if (chance(0.1)) s += pick([' ', '  ', '\n', '\n\n', '\t', ' \n']);
  add('prose-' + lang, s);
}
// mixed-script lines
for (let i = 0; i < 60; i++) {
  let s = '';
  const n = 2 + ri(5);
  for (let k = 0; k < n; k++) s += (k ? pick([' ', '', ', ', ' - ', '\n']) : '') + sentence(pick(LANG_KEYS));
  add('prose-mixed', s);
}

// ---- code ----
const IDENT = ['foo', 'bar', 'baz', 'x', 'y', 'i', 'j', 'value', 'result', 'tokenizer', 'self', 'data', 'buf', 'len', 'n_vocab', 'MAX_LEN', 'getUserName', 'HTTPServer', 'utf8_decode', '__init__', '_private', 'camelCaseName', 'snake_case_name', 'SCREAMING_CASE', 'x2', 'v1_0', 'ünïcödé', 'переменная', '变量'];
const CODE = [
  () => `def ${pick(IDENT)}(${pick(IDENT)}, ${pick(IDENT)}=None):\n    """Docstring."""\n    if ${pick(IDENT)} is None:\n        return ${ri(1000)}\n    return ${pick(IDENT)} + ${ri(100)}\n`,
  () => `for (int ${pick(IDENT)} = 0; i < ${ri(1 << 16)}; i++) {\n\tsum += a[i] * b[i];\n}\n`,
  () => `#include <stdio.h>\n\nint main(int argc, char **argv) {\n    printf("%d\\n", argc);\n    return 0;\n}\n`,
  () => `const ${pick(IDENT)} = async (${pick(IDENT)}) => { await fetch(\`/api/v${ri(3)}/\${id}\`); };`,
  () => `{"name": "${pick(IDENT)}", "version": "${ri(10)}.${ri(20)}.${ri(100)}", "deps": [${ri(5)}, null, true, false], "nested": {"a": -${ri(999)}.${ri(999)}e${ri(20)}}}`,
  () => `<div class="${pick(IDENT)}" id='x${ri(99)}'><p>Hello &amp; welcome &lt;b&gt;</p><!-- comment --></div>`,
  () => `SELECT ${pick(IDENT)}, COUNT(*) FROM users WHERE age >= ${ri(100)} AND name LIKE '%${pick(IDENT)}%' GROUP BY 1 ORDER BY 2 DESC;`,
  () => `$ git commit -m "fix: ${pick(IDENT)}" && ./configure --prefix=/usr/local 2>&1 | tee log.txt\n`,
  () => `fn ${pick(IDENT)}<'a, T: Clone>(x: &'a [T]) -> Option<&'a T> { x.iter().max_by(|a, b| a.cmp(b)) }`,
  () => `\\begin{equation}\n  E = mc^2 \\quad \\int_0^\\infty e^{-x^2} dx = \\frac{\\sqrt{\\pi}}{2}\n\\end{equation}`,
  () => `    ${pick(IDENT)} = [${Array.from({ length: 1 + ri(8) }, () => ri(1000)).join(', ')}]\n        \n\t\t# tabs\tand  spaces\n`,
  () => `if x == 0 {\r\n    return;\r\n}\r\n`,
  () => `x=${ri(9)};y=${ri(9)};z=x**y//2%3<<1>>2&4|5^6;a!=b;c<=d;e>=f;g->h;i::j;k+=1;l-=1;m*=2;n/=3;`,
  () => `// TODO(${pick(IDENT)}): handle the "edge" case\n/* multi\n * line\n */\n`,
  () => `regex = r"^(?:[a-z0-9!#$%&'*+/=?^_\`{|}~-]+)@(?:[a-z0-9-]+\\.)+[a-z]{2,}$"`,
];
for (let i = 0; i < 180; i++) add('code', pick(CODE)());

// ---- numbers ----
const digits = (n) => Array.from({ length: n }, () => ri(10)).join('');
const NUM = [
  () => digits(1 + ri(40)),
  () => `${digits(1 + ri(6))}.${digits(1 + ri(8))}`,
  () => `${ri(10)},${digits(3)},${digits(3)},${digits(3)}`,
  () => `-${digits(1 + ri(5))}e-${ri(30)}`,
  () => `0x${ri(1 << 30).toString(16).toUpperCase()} 0b${ri(256).toString(2)} 0o${ri(4096).toString(8)}`,
  () => `${2000 + ri(30)}-${String(1 + ri(12)).padStart(2, '0')}-${String(1 + ri(28)).padStart(2, '0')}T${ri(24)}:${ri(60)}:${ri(60)}Z`,
  () => `+1 (${digits(3)}) ${digits(3)}-${digits(4)}`,
  () => `${ri(100)}% of ${ri(1000)} is ${ri(10000) / 100} (≈${ri(99)}‰) — $${ri(1e6)}.${digits(2)}, €${ri(999)}, ¥${ri(99999)}, £${ri(99)}`,
  () => `version ${ri(9)}.${ri(99)}.${ri(999)}-rc${ri(9)}+build.${digits(6)}`,
  () => `${digits(1 + ri(3))}${pick(['abc', 'K', 'px', 'ms', 'GB', 'x', '_', '½', '²'])}${digits(ri(4))}`,
  () => '١٢٣٤٥٦٧٨٩٠ ' + '०१२३४५६७८९ ' + '０１２３４５６７８９ ' + '一二三四五 ' + 'Ⅻ ⅷ ① ⑳ ⓵ ¹²³ ¼ ½ ¾',
  () => `${digits(3)} ${digits(3)}   ${digits(3)}\t${digits(7)}\n${digits(2)}`,
  () => `π ≈ 3.${digits(30)}`,
  () => Array.from({ length: 1 + ri(10) }, () => ri(1e9)).join(pick([', ', ' ', '+', '*', '/', '-', '\n'])),
];
for (let i = 0; i < 170; i++) add('numbers', pick(NUM)());

// ---- emoji ----
const EMOJI = ['😀', '😂', '🥲', '🤗', '🤔', '👍', '🙏', '❤', '❤️', '🔥', '✨', '🎉', '🚀', '💯', '🐍', '🦀', '🌍', '🌈', '☕', '⚡', '⭐', '✅', '❌', '⚠️', '™', '©', '®', '↔', '☺', '♥', '♻️', '🀄', '🃏', '🅰', '🆗', '🈚', '🉐', '🌀', '🏳', '🏴', '🗿'];
const TONES = ['🏻', '🏼', '🏽', '🏾', '🏿'];
const ZWJ = ['👨‍👩‍👧‍👦', '👩‍💻', '🧑‍🚀', '👨‍🍳', '🏳️‍🌈', '🏳️‍⚧️', '🏴‍☠️', '❤️‍🔥', '❤️‍🩹', '👁️‍🗨️', '🧑‍🤝‍🧑', '👩‍❤️‍💋‍👨', '🐕‍🦺', '🐈‍⬛', '🧔‍♀️', '🙂‍↔️', '🐦‍🔥', '🍋‍🟩', '🍄‍🟫', '🧑‍🧑‍🧒'];
const FLAGS = ['🇺🇸', '🇯🇵', '🇩🇪', '🇫🇷', '🇨🇳', '🇧🇷', '🇮🇳', '🇺🇦', '🇪🇺', '🇺🇳', '🏴󠁧󠁢󠁳󠁣󠁴󠁿', '🏴󠁧󠁢󠁷󠁬󠁳󠁿'];
const KEYCAPS = ['1️⃣', '#️⃣', '*️⃣', '0⃣', '🔟'];
// Unicode 15, 15.1, 16 and 17 emoji: newer than PCRE2's tables
const NEW_EMOJI = ['🫨', '🩷', '🩵', '🩶', '🪿', '🫎', '🪼', '🫏', '🪽', '🫸', '🫷', '🫚', '🫛', '🪮', '🪭', '🛜', '🫩', '🫆', '🪾', '🫜', '🪉', '🪏', '🫟', '\u{1FAEA}', '\u{1FAEF}', '\u{1FA8A}', '\u{1FAC8}', '\u{1FA8E}', '\u{1FACD}'];
function emojiRun() {
  let s = '';
  const n = 1 + ri(6);
  for (let i = 0; i < n; i++) {
    const r = ri(7);
    if (r === 0) s += pick(['👋', '👍', '🧑', '👩', '🙌', '💪']) + pick(TONES);
    else if (r === 1) s += pick(ZWJ);
    else if (r === 2) s += pick(FLAGS);
    else if (r === 3) s += pick(KEYCAPS);
    else if (r === 4) s += pick(NEW_EMOJI);
    else s += pick(EMOJI);
    if (chance(0.3)) s += pick([' ', '', '\n', '!', '.']);
  }
  return s;
}
for (let i = 0; i < 170; i++) {
  const r = ri(3);
  if (r === 0) add('emoji', emojiRun());
  else if (r === 1) add('emoji', sentence(pick(LANG_KEYS)) + ' ' + emojiRun());
  else add('emoji', emojiRun() + sentence(pick(LANG_KEYS)) + emojiRun());
}

// ---- white space ----
const WS = [' ', '  ', '   ', '\t', '\n', '\r\n', '\r', '\n\n', '\u00a0', '\u3000', '\u2009', '\u200b', '\u2028', '\u2029', '\u0085', '\ufeff', '\u000b', '\u000c', '\u1680', '\u202f', '\u205f', '\u180e', '\u200a'];
for (let i = 0; i < 170; i++) {
  let s = '';
  const n = 1 + ri(8);
  for (let k = 0; k < n; k++) {
    if (chance(0.5)) s += pick(WS).repeat(1 + ri(chance(0.2) ? 40 : 4));
    else s += pick(['word', 'x', 'Hello', '123', '.', '你好', 'é', '—', '(', 'a b']);
  }
  add('whitespace', s);
}
for (const n of [1, 2, 3, 7, 16, 23, 24, 25, 31, 32, 33, 64, 100, 257]) {
  add('whitespace-run', ' '.repeat(n));
  add('whitespace-run', 'a' + ' '.repeat(n) + 'b');
  add('whitespace-run', '\n'.repeat(Math.min(n, 40)) + 'x');
  add('whitespace-run', 'x' + '\t'.repeat(Math.min(n, 40)));
  add('whitespace-run', ' \n'.repeat(Math.min(n, 30)));
}

// ---- special tokens and look-alikes ----
const SPECIAL = ['<|im_start|>', '<|im_end|>', '<|endoftext|>', '<|padding|>', '<s>', '</s>', '<unk>', '[INST]', '[/INST]',
  '<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', '<｜User｜>', '<｜Assistant｜>', '<｜▁pad▁｜>', '<｜place▁holder▁no▁7｜>',
  '<|start|>', '<|end|>', '<|message|>', '<|channel|>', '<|return|>', '<|call|>', '<|constrain|>', '<|startoftext|>',
  '<|reserved_200000|>', '<think>', '</think>', '<tool_call>', '</tool_call>', '<|fim_prefix|>', '<|fim_middle|>',
  '<|fim_suffix|>', '<|object_ref_start|>', '<|vision_pad|>', '|||IP_ADDRESS|||', '|||EMAIL_ADDRESS|||', '|||PHONE_NUMBER|||',
  '<tool▁call▁begin>', '<｜tool▁calls▁begin｜>', '<｜fim▁hole｜>', '<extra>', '[[sep]]', '\ufb01x', 'fix'];
const LOOKALIKE = ['<|im_sta', '<|im_start', 'im_start|>', '< s>', '<s >', '<<s>>', '<S>', '<|IM_START|>', '[INST', 'INST]', '[ INST ]',
  '<|endoftext', '<|end of text|>', '<｜begin of sentence｜>', '<|begin▁of▁sentence|>', '<｜User', '｜>', '<|', '|>', '<>', '</', '<|start', 'start|>'];
for (let i = 0; i < 240; i++) {
  let s = '';
  const n = 1 + ri(6);
  for (let k = 0; k < n; k++) {
    const r = ri(4);
    if (r === 0) s += pick(SPECIAL);
    else if (r === 1) s += pick(LOOKALIKE);
    else if (r === 2) s += pick([' ', '\n', '', '  ', 'x', ' hello ', 'user\n', 'assistant', ':', '。']);
    else s += sentence(pick(LANG_KEYS));
  }
  add('special', s);
}
for (const sp of SPECIAL) {
  add('special-exact', sp);
  add('special-exact', ' ' + sp + ' ');
  add('special-exact', sp + sp);
  add('special-exact', 'a' + sp + 'b');
}

// ---- contractions ----
const CONTR = ["it's", "It'S", "don't", "DON'T", "I'm", "I'M", "you're", "YOU'RE", "we've", "WE'VE", "they'll", "THEY'LL", "he'd", "HE'D", "y'all", "o'clock", "rock 'n' roll", "'s", "'S", "'t", "'re", "'ve", "'m", "'ll", "'d", "'LL", "'Ll", "'lL", "it’s", "can’t", "'ſ", "'K", "''s", "'s'", "' s", "dogs'", "'''"];
for (let i = 0; i < 110; i++) {
  let s = '';
  const n = 1 + ri(6);
  for (let k = 0; k < n; k++) s += (k ? pick([' ', '', '  ', '\n']) : '') + (chance(0.6) ? pick(CONTR) : pick(LANGS.en.words));
  add('contractions', s);
}

// ---- normalization ----
const NORM = ['e\u0301', 'E\u0301', 'a\u030a', 'A\u030A', 'o\u0308', 'n\u0303', 'c\u0327', 'a\u0323\u0307', 'a\u0307\u0323',
  '\u1100\u1161\u11a8', '\u1112\u1161\u11ab\u1100\u1173\u11af', '\u212b', '\u2126', '\u00c5', '\u0041\u030a', 'ﬁ', 'ﬀ', '①', 'ＡＢＣ',
  '㎏', '\u00a0', '\u2160', 'ǅ', 'ḕ', 'ẛ\u0323', '\u0344', '\u0958', '\u09cb', '\u0b48', '\u0f73', '\u1e9b', '\u2000',
  'Å', 'é', '한', '\u0915\u093c', '\u05e9\u05bc\u05c1', '\u0627\u0653', '\u30ab\u3099', '\u304b\u3099', '\uff76\uff9e', 'A\u0300\u0301\u0302\u0303\u0304',
  '\u0300abc', 'x\u20dd', '\u0301\u0301\u0301'];
for (let i = 0; i < 120; i++) {
  let s = '';
  const n = 1 + ri(6);
  for (let k = 0; k < n; k++) s += (chance(0.5) ? pick(NORM) : pick(LANGS[pick(['en', 'fr', 'de', 'ko', 'ja', 'hi', 'vi'])].words)) + (chance(0.4) ? ' ' : '');
  add('normalization', s);
}

// characters whose (de)compositions are newer than utf8proc's tables (Unicode 16/17), decomposed and not
for (const s of ['\u{16D67}\u{16D67}', '\u{16D63}\u{16D67}\u{16D67}', 'x\u{16D6A}y', '\u{105D2}\u{0307}', '\u{105D2}\u{0323}\u{0307}',
  '\u{105D2}\u{0307}\u{0323}', '\u{1611E}\u{1611E}\u{1611F}', '\u{11382}\u{113C9} \u{113C2}\u{113C2}', '\u{A7F1}\u{A7F2}\u{1DF2}',
  'a\u{16D67}\u{16D67}b \u{16D68}\u{16D67}']) {
  add('normalization-new', s);
}

// ---- random code points ----
const BLOCKS = [[0x20, 0x7e], [0xa0, 0xff], [0x100, 0x24f], [0x250, 0x2af], [0x2b0, 0x2ff], [0x300, 0x36f], [0x370, 0x3ff],
  [0x400, 0x4ff], [0x530, 0x58f], [0x590, 0x5ff], [0x600, 0x6ff], [0x700, 0x74f], [0x780, 0x7bf], [0x860, 0x8ff], [0x900, 0x97f],
  [0x980, 0x9ff], [0xb80, 0xbff], [0xc00, 0xcff], [0xd00, 0xd7f], [0xe00, 0xe7f], [0xe80, 0xeff], [0xf00, 0xfff], [0x1000, 0x109f],
  [0x10a0, 0x10ff], [0x1100, 0x11ff], [0x1200, 0x137f], [0x13a0, 0x13ff], [0x1780, 0x17ff], [0x1800, 0x18af], [0x1c80, 0x1cbf],
  [0x1e00, 0x1eff], [0x1f00, 0x1fff], [0x2000, 0x206f], [0x2070, 0x209f], [0x20a0, 0x20cf], [0x2100, 0x214f], [0x2190, 0x21ff],
  [0x2200, 0x22ff], [0x2500, 0x257f], [0x2600, 0x26ff], [0x2700, 0x27bf], [0x2c00, 0x2c5f], [0x2e80, 0x2eff], [0x3000, 0x303f],
  [0x3040, 0x30ff], [0x3100, 0x312f], [0x3130, 0x318f], [0x31f0, 0x31ff], [0x3200, 0x32ff], [0x3400, 0x4dbf], [0x4e00, 0x9fff],
  [0xa000, 0xa4cf], [0xa500, 0xa63f], [0xa640, 0xa69f], [0xa960, 0xa97f], [0xac00, 0xd7a3], [0xe000, 0xf8ff], [0xf900, 0xfaff],
  [0xfb00, 0xfb4f], [0xfb50, 0xfdff], [0xfe00, 0xfe0f], [0xfe30, 0xfe4f], [0xfe70, 0xfeff], [0xff00, 0xffef], [0xfff0, 0xfffd],
  [0x10000, 0x1007f], [0x10300, 0x1032f], [0x10400, 0x1044f], [0x10d40, 0x10d8f], [0x11380, 0x113ff], [0x11bc0, 0x11bff],
  [0x11f00, 0x11f5f], [0x13000, 0x1342f], [0x16100, 0x1613f], [0x16d40, 0x16d7f], [0x1d400, 0x1d7ff], [0x1e030, 0x1e08f],
  [0x1e4d0, 0x1e4ff], [0x1e5d0, 0x1e5ff], [0x1f000, 0x1f02f], [0x1f300, 0x1f5ff], [0x1f600, 0x1f64f], [0x1f900, 0x1f9ff],
  [0x1fa70, 0x1faff], [0x20000, 0x2a6df], [0x2a700, 0x2ebe0], [0x2ebf0, 0x2ee5d], [0x30000, 0x3134f], [0x31350, 0x323af],
  [0x323b0, 0x3347f], [0xe0000, 0xe007f], [0xe0100, 0xe01ef], [0xf0000, 0xf00ff], [0x10fff0, 0x10ffff], [0x0, 0x1f], [0x7f, 0x9f]];
function randomCp() {
  for (;;) {
    const [lo, hi] = pick(BLOCKS);
    const cp = lo + ri(hi - lo + 1);
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    return cp;
  }
}
for (let i = 0; i < 300; i++) {
  let s = '';
  const n = 1 + ri(24);
  for (let k = 0; k < n; k++) {
    s += String.fromCodePoint(randomCp());
    if (chance(0.15)) s += ' ';
  }
  add('random-unicode', s);
}

// ---- documents: markdown, URLs, paths, chat transcripts ----
const DOCS = [
  () => `# ${sentence('en')}\n\n- ${sentence('en')}\n- **${pick(IDENT)}**: \`${pick(IDENT)}()\`\n\n> ${sentence('de')}\n\n| a | b |\n|---|---|\n| ${ri(9)} | ${ri(9)} |\n`,
  () => `https://example.com/${pick(IDENT)}?q=${pick(IDENT)}&lang=${pick(LANG_KEYS)}#section-${ri(9)} and mailto:user.${ri(99)}@mail.example.org`,
  () => `C:\\Users\\${pick(IDENT)}\\AppData\\Local\\Temp\\file_${ri(999)}.txt vs /home/${pick(IDENT)}/.config/moe/settings.json`,
  () => `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n${sentence(pick(LANG_KEYS))}<|im_end|>\n<|im_start|>assistant\n`,
  () => `<s>[INST] ${sentence('en')} [/INST] ${sentence('en')}</s>[INST] ${sentence('fr')} [/INST]`,
  () => `<｜begin▁of▁sentence｜>${sentence('zh')}<｜User｜>${sentence('en')}<｜Assistant｜><think>\n${sentence('en')}\n</think>\n\n${sentence('zh')}<｜end▁of▁sentence｜>`,
  () => `<|start|>system<|message|>You are ChatGPT.\nReasoning: high<|end|><|start|>user<|message|>${sentence('en')}<|end|><|start|>assistant<|channel|>analysis<|message|>${sentence('en')}<|end|>`,
  () => `<|endoftext|>${sentence('en')}<|padding|><|padding|>`,
  () => `"${sentence('en')}," she said. '${sentence('en')}' — (${sentence('es')}) [${ri(99)}] {${pick(IDENT)}}`,
  () => `Q: ${sentence('en')}?\nA: ${sentence('en')}.\n\nQ: ${sentence('ru')}?\nA: ${sentence('ru')}.`,
];
for (let i = 0; i < 150; i++) add('document', pick(DOCS)());

// ---- very long words ----
add('long', 'a'.repeat(1000));
add('long', 'a'.repeat(5000));
add('long', 'a'.repeat(20000));
add('long', 'a'.repeat(100000));
add('long', 'ab'.repeat(30000));
add('long', Array.from({ length: 20000 }, () => String.fromCharCode(97 + ri(26))).join(''));
add('long', Array.from({ length: 5000 }, () => pick(['的', '是', '我', '你', '了'])).join(''));
add('long', digits(20000));
add('long', '😀'.repeat(3000));
add('long', '!'.repeat(10000));
add('long', ' '.repeat(10000) + 'x');
add('long', '\n'.repeat(5000));
add('long', 'x' + '\u0301'.repeat(3000));
add('long', Array.from({ length: 3000 }, () => pick(LANGS.en.words)).join(' '));
add('long', Array.from({ length: 2000 }, () => sentence(pick(LANG_KEYS))).join('\n'));
add('long', 'ᄀ'.repeat(2000) + 'ᅡ'.repeat(2000));
add('long', '\u0e01\u0e34'.repeat(4000));
add('long', '<|im_start|>'.repeat(500));
add('long', '<s>'.repeat(2000));

// ---- edge cases ----
for (const s of ['', ' ', '  ', '\n', '\t', '\r\n', 'a', 'A', '0', '.', "'", '"', '\\', '\0', '\0\0', 'a\0b', '\u0001\u0002\u001f\u007f',
  '\u0080\u009f', '\ufeffhello', 'hello\ufeff', '\uffff', '\ufffe', '\ufffd', '\ufffd\ufffd', '\u{10ffff}', '\u{e0001}', '▁', '▁▁',
  '▁hello', 'Ġ', 'Ċ', 'ĠĠ', '<0x41>', '<0xE4><0xB8>', '<0xZZ>', '\u2581 \u2581', 'hello world', ' hello', 'hello ', ' hello ',
  'Hello, World!', '¿Qué?', 'ÀÉÎÕÜ', 'ß', 'ﬃ', 'İstanbul', 'ǈ', 'Σίσυφος', 'ΣΑΣ', 'x\u0300', 'e\u0301\u0301']) {
  add('edge', s);
}

// ---- single bytes ----
for (let b = 0; b < 256; b++) addBytes('byte', [b]);

// ---- invalid UTF-8 ----
const INVALID = [
  [0x80], [0xbf], [0xc0, 0xaf], [0xc1, 0xbf], [0xe0, 0x80, 0xaf], [0xe0, 0x9f, 0xbf], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf],
  [0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80], [0xf0, 0x80, 0x80, 0xaf], [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xfe], [0xff],
  [0xc3], [0xe4, 0xb8], [0xf0, 0x9f, 0x98], [0xf0, 0x9f], [0xe4, 0xb8, 0x41], [0xc3, 0x28], [0xa0, 0xa1], [0xe2, 0x28, 0xa1],
  [0xe2, 0x82, 0x28], [0xf0, 0x28, 0x8c, 0xbc], [0xf0, 0x90, 0x28, 0xbc], [0xf0, 0x28, 0x8c, 0x28], [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0xfc, 0x84, 0x80, 0x80, 0x80, 0x80], [0xef, 0xbb, 0xbf], [0xef, 0xbb], [0xef, 0xbf, 0xbe], [0xc2, 0x80, 0x80],
];
for (const b of INVALID) addBytes('invalid-utf8', b);
for (let i = 0; i < 130; i++) {
  const parts = [];
  const n = 1 + ri(6);
  for (let k = 0; k < n; k++) {
    const r = ri(4);
    if (r === 0) parts.push(...pick(INVALID));
    else if (r === 1) parts.push(...Array.from({ length: 1 + ri(8) }, () => ri(256)));
    else if (r === 2) { const v = enc.encode(sentence(pick(LANG_KEYS))); parts.push(...v.slice(0, ri(v.length + 1))); }
    else parts.push(...enc.encode(pick([' ', 'hello', '你好', '<|im_start|>', '<s>', '\n', '😀', 'é'])));
  }
  addBytes('invalid-utf8', parts);
}

// ---- write ----
fs.writeFileSync(path.join(here, 'corpus.jsonl'), out.map((o) => JSON.stringify(o)).join('\n') + '\n');
const kinds = {};
for (const o of out) kinds[o.kind.split('-')[0]] = (kinds[o.kind.split('-')[0]] ?? 0) + 1;
console.log(`wrote ${out.length} strings:`, kinds);
