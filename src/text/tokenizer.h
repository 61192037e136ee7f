/*
 * tokenizer.h — the tokenizers of Hugging Face's tokenizer.json, run the way
 * the reference implementation (transformers.js / @huggingface/tokenizers)
 * runs them, id for id: byte-level BPE with the split regexes of GPT-2 /
 * GPT-NeoX, Llama 3 / Qwen2 / Qwen3, DeepSeek-V3 and gpt-oss (o200k), and
 * SentencePiece-style BPE with byte fallback (Mixtral, Mistral, Llama 2).
 *
 * What is read: model (BPE: vocab, merges as "a b" or [a, b], unk_token,
 * byte_fallback, fuse_unk, ignore_merges, suffixes), normalizer (NFC, NFD,
 * NFKC, NFKD, Prepend, Replace, Strip, Sequence), pre_tokenizer (Split,
 * ByteLevel, Metaspace, Digits, Sequence), post_processor
 * (TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing,
 * Sequence), decoder (ByteLevel, Replace, ByteFallback, Fuse, Strip,
 * Metaspace, Sequence), added_tokens; and from tokenizer_config.json
 * bos/eos/pad tokens, additional_special_tokens, clean_up_tokenization_spaces,
 * remove_space. Anything else fails with a message naming the field.
 *
 * Regexes of tokenizer.json are translated the way the reference translates
 * them for JavaScript (\s is White_Space, (?i:...) folds ASCII only, ...) and
 * run by PCRE2 in UTF mode with Unicode properties; characters that PCRE2's
 * Unicode tables do not know yet get their category from a generated table
 * (tok_unicode_data.c), so \p{L}, \p{N}, \p{P}, \p{S} agree with the
 * reference's newer Unicode.
 *
 * Text in: UTF-8. Invalid UTF-8 is first decoded the way the reference sees it
 * (TextDecoder: every maximal invalid subsequence becomes U+FFFD), then
 * tokenized. Text out: UTF-8; bytes that do not form UTF-8 become U+FFFD, as
 * the reference's decoder makes them.
 *
 * Like the reference, tokenizer_config.json's add_bos_token/add_eos_token do
 * not change encoding: the post_processor alone adds BOS/EOS (the flags are
 * available through moe_tokenizer_add_bos/eos for callers that want Python's
 * behaviour).
 *
 * A tokenizer is immutable once built: any number of threads may encode and
 * decode with it at once. A stream decoder belongs to one thread.
 */
#ifndef MOE_TEXT_TOKENIZER_H
#define MOE_TEXT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "moe.h"

typedef struct moe_tokenizer moe_tokenizer;

/* Builds a tokenizer from tokenizer.json and (optionally, may be NULL)
 * tokenizer_config.json, both as bytes. */
moe_tokenizer *moe_tokenizer_from_hf(const char *tokenizer_json, size_t len, const char *config_json,
                                     size_t config_len, moe_error *err);

/* The compact binary form stored in a .moe file, and back. *out is the
 * caller's to free(). Deserializing validates everything (bounds, indices,
 * patterns) and fails with a message instead of crashing on a corrupt blob. */
int moe_tokenizer_serialize(const moe_tokenizer *t, uint8_t **out, size_t *len, moe_error *err);
moe_tokenizer *moe_tokenizer_deserialize(const uint8_t *data, size_t len, moe_error *err);

void moe_tokenizer_free(moe_tokenizer *t);

/* One past the largest token id (model vocab and added tokens). */
int moe_tokenizer_n_vocab(const moe_tokenizer *t);

/* Encodes len bytes of text. add_special: add what the post_processor adds
 * (BOS for Llama/Mistral), as add_special_tokens=true does in the reference;
 * special-token text inside the input is matched either way. *ids is the
 * caller's to free() (NULL when *n_ids is 0). */
int moe_tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids,
                         int *n_ids, moe_error *err);

/* Decodes ids to UTF-8 text (NUL-terminated; *len excludes the NUL; the
 * caller frees *out). skip_special drops special tokens, as
 * skip_special_tokens=true does. Ids without a piece decode as the unknown
 * token, or to nothing when there is none, as in the reference. */
int moe_tokenizer_decode(const moe_tokenizer *t, const int32_t *ids, int n, int skip_special, char **out,
                         size_t *len, moe_error *err);

/* The vocab string of an id (byte-level pieces are in the byte-level
 * alphabet, e.g. "Ġthe"), NUL-terminated; NULL if the id has none. */
const char *moe_tokenizer_piece(const moe_tokenizer *t, int32_t id, size_t *len);
/* The id of a vocab string or added token; -1 if none. */
int32_t moe_tokenizer_piece_id(const moe_tokenizer *t, const char *piece, size_t len);
/* BOS / EOS / PAD tokens named by tokenizer_config.json; -1 if none. */
int32_t moe_tokenizer_bos(const moe_tokenizer *t);
int32_t moe_tokenizer_eos(const moe_tokenizer *t);
int32_t moe_tokenizer_pad(const moe_tokenizer *t);
/* tokenizer_config.json add_bos_token / add_eos_token: 1, 0, or -1 if absent. */
int moe_tokenizer_add_bos(const moe_tokenizer *t);
int moe_tokenizer_add_eos(const moe_tokenizer *t);
/* 1 if id is a special added token (skipped by skip_special). */
int moe_tokenizer_is_special(const moe_tokenizer *t, int32_t id);

/*
 * Streaming decoder: feed ids one at a time as they are generated; each call
 * returns only text that is final: a character whose bytes are split across
 * tokens comes out once it is whole, and text that a later token could still
 * change (clean-up of " ." and the like) waits for it. The concatenation of
 * everything returned, finish included, equals moe_tokenizer_decode of all
 * the ids. The returned text lives in the stream until the next call.
 */
typedef struct moe_detok_stream moe_detok_stream;

moe_detok_stream *moe_detok_stream_new(const moe_tokenizer *t, int skip_special, moe_error *err);
int moe_detok_stream_feed(moe_detok_stream *s, int32_t id, const char **text, size_t *len, moe_error *err);
/* Ends the text: whatever was held back comes out (an incomplete character as U+FFFD). */
int moe_detok_stream_finish(moe_detok_stream *s, const char **text, size_t *len, moe_error *err);
/* Starts a new text with the same tokenizer. */
void moe_detok_stream_reset(moe_detok_stream *s);
void moe_detok_stream_free(moe_detok_stream *s);

#endif
