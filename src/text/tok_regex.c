/*
 * tok_regex.c — the split patterns of tokenizer.json, run with PCRE2.
 *
 * tokenizer.json patterns are written for Oniguruma (the Rust library's
 * engine). The reference (transformers.js) rewrites them into JavaScript
 * regexes with fixed rules, and we rewrite them into PCRE2 with the same
 * rules, so that both engines mean the same thing:
 *   \s \S      -> White_Space (not JavaScript's \s, which adds U+FEFF, drops U+0085)
 *   \d \w \h   -> \p{Nd}; letters, marks, digits, connectors; hex digits
 *   .          -> [^\n];  ^ $ -> line anchors on \n only
 *   (?i:...)   -> ASCII-only case folding ('S' and 's', never U+017F)
 *   (?>...) and possessive ++ *+ ?+ -> plain groups and greedy quantifiers
 *   {n,m}+     -> (?:X{n,m})+ (a repeated repeat, as in Oniguruma)
 *   \v         -> U+000B (PCRE2's \v is a class)
 * Constructs the reference cannot express either (nested classes,
 * intersections, negated POSIX classes, unknown escapes) fail with a message.
 *
 * \p{X} for a general category (and Alphabetic) is widened with the code
 * points that PCRE2's Unicode tables do not place in X yet but the
 * reference's newer Unicode does (tok_unicode_data.c), so new letters and
 * emoji split as in the reference.
 *
 * Matching follows String.prototype.matchAll with the g and u flags: after an
 * empty match the search moves on by one code point.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tok_internal.h"
#include "text/tok_unicode_data.h"

/* ---- Unicode additions ---- */

static const char *const gc_long[][2] = {
    {"Letter", "L"}, {"Cased_Letter", "LC"}, {"Uppercase_Letter", "Lu"}, {"Lowercase_Letter", "Ll"},
    {"Titlecase_Letter", "Lt"}, {"Modifier_Letter", "Lm"}, {"Other_Letter", "Lo"}, {"Mark", "M"},
    {"Combining_Mark", "M"}, {"Nonspacing_Mark", "Mn"}, {"Spacing_Mark", "Mc"}, {"Enclosing_Mark", "Me"},
    {"Number", "N"}, {"Decimal_Number", "Nd"}, {"digit", "Nd"}, {"Letter_Number", "Nl"}, {"Other_Number", "No"},
    {"Punctuation", "P"}, {"punct", "P"}, {"Connector_Punctuation", "Pc"}, {"Dash_Punctuation", "Pd"},
    {"Open_Punctuation", "Ps"}, {"Close_Punctuation", "Pe"}, {"Initial_Punctuation", "Pi"},
    {"Final_Punctuation", "Pf"}, {"Other_Punctuation", "Po"}, {"Symbol", "S"}, {"Math_Symbol", "Sm"},
    {"Currency_Symbol", "Sc"}, {"Modifier_Symbol", "Sk"}, {"Other_Symbol", "So"}, {"Separator", "Z"},
    {"Space_Separator", "Zs"}, {"Line_Separator", "Zl"}, {"Paragraph_Separator", "Zp"}, {"Other", "C"},
    {"Control", "Cc"}, {"cntrl", "Cc"}, {"Format", "Cf"}, {"Surrogate", "Cs"}, {"Private_Use", "Co"},
    {"Unassigned", "Cn"},
};

/* Canonical PCRE2 name of a JavaScript property expression (into buf). */
static void property_name(const char *body, size_t n, char *buf, size_t cap) {
    char tmp[128];
    if (n >= sizeof tmp) n = sizeof tmp - 1;
    memcpy(tmp, body, n);
    tmp[n] = 0;
    const char *v = tmp;
    if (strncmp(v, "gc=", 3) == 0) v += 3;
    else if (strncmp(v, "General_Category=", 17) == 0) v += 17;
    for (size_t i = 0; i < sizeof gc_long / sizeof gc_long[0]; i++)
        if (strcmp(v, gc_long[i][0]) == 0) { v = gc_long[i][1]; break; }
    snprintf(buf, cap, "%s", v);
}

/* Appends to out the ranges the tables of PCRE2 lack for property name. */
static void put_additions(tok_bytes *out, const char *name) {
    int alpha = strcmp(name, "Alphabetic") == 0 || strcmp(name, "Alpha") == 0;
    size_t nl = strlen(name);
    int lc = strcmp(name, "LC") == 0;
    if (!alpha && !lc && (nl < 1 || nl > 2)) return;
    for (int i = 0; i < tok_unicode_n_additions; i++) {
        const tok_urange *r = &tok_unicode_additions[i];
        const char *gc = tok_unicode_gc_names[r->gc];
        int hit;
        if (alpha) hit = r->alpha;
        else if (!r->gc_new) hit = 0;
        else if (lc) hit = strcmp(gc, "Lu") == 0 || strcmp(gc, "Ll") == 0 || strcmp(gc, "Lt") == 0;
        else if (nl == 1) hit = gc[0] == name[0];
        else hit = strcmp(gc, name) == 0;
        if (!hit) continue;
        char b[48];
        if (r->lo == r->hi) snprintf(b, sizeof b, "\\x{%X}", (unsigned)r->lo);
        else snprintf(b, sizeof b, "\\x{%X}-\\x{%X}", (unsigned)r->lo, (unsigned)r->hi);
        tok_bytes_put(out, b, strlen(b));
    }
}

static int has_additions(const char *name) {
    tok_bytes t = {0};
    put_additions(&t, name);
    int r = t.n > 0;
    tok_bytes_free(&t);
    return r;
}

/* ---- translation ---- */

#define WORD_IN_CLASS "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}"
#define WORD_CHARS WORD_IN_CLASS "\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}"
#define WORD_CLASS "[" WORD_CHARS "]"
#define NON_WORD_CLASS "[^" WORD_CHARS "]"
#define WS_CHARS "\\p{White_Space}"

typedef struct tx {
    const char *s;
    size_t n;
    tok_bytes out;
    char err[200];
} tx;

static int is_alpha(int c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
static int is_alnum(int c) { return is_alpha(c) || (c >= '0' && c <= '9'); }
static int is_hex(int c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static int js_syntax(int c) { return c && strchr("^$\\.*+?()[]{}|/", c) != NULL; }

static size_t char_len(const tx *t, size_t i) {
    uint8_t b = (uint8_t)t->s[i];
    size_t l = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    return i + l <= t->n ? l : t->n - i;
}

static void put(tx *t, const char *p) { tok_bytes_put(&t->out, p, strlen(p)); }
static void putn(tx *t, const char *p, size_t n) { tok_bytes_put(&t->out, p, n); }

/* "\x{...}" for an ASCII letter under (?i:...) becomes [aA]; returns 1 if done */
static int put_folded_hex(tx *t, const char *hex, size_t n) {
    if (n == 0 || n > 8) return 0;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_hex(hex[i])) return 0;
        int c = hex[i];
        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 32) - 'a' + 10);
    }
    if (v > 127 || !is_alpha((int)v)) return 0;
    char b[8];
    snprintf(b, sizeof b, "[%c%c]", (char)((int)v | 32), (char)((int)v & ~32));
    put(t, b);
    return 1;
}

/* Parses a braced escape \p{..} \P{..} \x{..} \u{..} at i; returns its length, 0 if none. */
static size_t braced(const tx *t, size_t i, char *kind, size_t *body, size_t *body_n) {
    if (i + 2 >= t->n || t->s[i] != '\\' || !strchr("pPxu", t->s[i + 1]) || t->s[i + 2] != '{') return 0;
    size_t j = i + 3;
    while (j < t->n && t->s[j] != '}') j++;
    if (j >= t->n) return 0;
    *kind = t->s[i + 1];
    *body = i + 3;
    *body_n = j - (i + 3);
    return j + 1 - i;
}

/* \xHH \uHHHH \cX at i; returns its length, 0 if none. */
static size_t fixed_width(const tx *t, size_t i) {
    if (i + 1 >= t->n || t->s[i] != '\\') return 0;
    char k = t->s[i + 1];
    if (k == 'x' && i + 3 < t->n && is_hex(t->s[i + 2]) && is_hex(t->s[i + 3])) return 4;
    if (k == 'u' && i + 5 < t->n && is_hex(t->s[i + 2]) && is_hex(t->s[i + 3]) && is_hex(t->s[i + 4]) &&
        is_hex(t->s[i + 5]))
        return 6;
    if (k == 'c' && i + 2 < t->n && is_alpha(t->s[i + 2])) return 3;
    return 0;
}

static const char *raw_ws(char c) {
    switch (c) {
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    case '\f': return "\\f";
    case '\v': return "\\x{0B}";
    default: return NULL;
    }
}

/* A property escape: name is canonical; in a class only the fragment. */
static void put_property(tx *t, char kind, const char *name, int in_class) {
    char b[160];
    int add = has_additions(name);
    if (in_class) {
        snprintf(b, sizeof b, "\\%c{%s}", kind, name);
        put(t, b);
        if (kind == 'p') put_additions(&t->out, name);
        return;
    }
    if (!add) {
        snprintf(b, sizeof b, "\\%c{%s}", kind, name);
        put(t, b);
        return;
    }
    snprintf(b, sizeof b, "[%s\\p{%s}", kind == 'P' ? "^" : "", name);
    put(t, b);
    put_additions(&t->out, name);
    put(t, "]");
}

static int fail(tx *t, const char *fmt, size_t at) {
    snprintf(t->err, sizeof t->err, fmt, (unsigned long)at);
    return -1;
}

/* Membership of one ASCII character in a compiled class atom. */
static int class_has(pcre2_code *code, pcre2_match_data *md, char c) {
    return pcre2_match(code, (PCRE2_SPTR)&c, 1, 0, 0, md, NULL) >= 0;
}

/* Parses the class at s[i] == '['; appends its PCRE2 form; returns the index after it. */
static long parse_class(tx *t, size_t i, int fold) {
    size_t start = i;
    i++;
    int negated = i < t->n && t->s[i] == '^';
    if (negated) i++;
    size_t first = i;
    tok_bytes frag = {0};
    enum { T_NONE, T_SCALAR, T_SET, T_RANGE, T_COMPLETE } tail = T_NONE;
    tx sub = *t; /* only used to emit into frag through put() */
    sub.out = frag;
#define FRAG(str) tok_bytes_put(&sub.out, (str), strlen(str))
#define APPEND(str, setv)                                                                      \
    do {                                                                                       \
        if ((setv) && tail == T_RANGE) { tok_bytes_free(&sub.out); return fail(t, "regex: range with a set in a character class at %lu", i); } \
        FRAG(str);                                                                             \
        tail = tail == T_RANGE ? T_COMPLETE : ((setv) ? T_SET : T_SCALAR);                     \
    } while (0)
    while (i < t->n) {
        char c = t->s[i];
        if (c == '\\') {
            char kind;
            size_t body, bn;
            size_t bl = braced(t, i, &kind, &body, &bn);
            if (bl) {
                if ((kind == 'p' || kind == 'P') && bn == 4 && memcmp(t->s + body, "Word", 4) == 0) {
                    if (kind == 'P') { tok_bytes_free(&sub.out); return fail(t, "regex: \\P{Word} inside a character class (at %lu) is not supported", i); }
                    APPEND(WORD_IN_CLASS, 1);
                } else if (kind == 'p' || kind == 'P') {
                    char name[128];
                    property_name(t->s + body, bn, name, sizeof name);
                    if (tail == T_RANGE) { tok_bytes_free(&sub.out); return fail(t, "regex: range with a set in a character class at %lu", i); }
                    put_property(&sub, kind, name, 1);
                    tail = T_SET;
                } else {
                    char b[32];
                    if (bn > 8) { tok_bytes_free(&sub.out); return fail(t, "regex: bad code point escape at %lu", i); }
                    snprintf(b, sizeof b, "\\x{%.*s}", (int)bn, t->s + body);
                    APPEND(b, 0);
                }
                i += bl;
                continue;
            }
            size_t fw = fixed_width(t, i);
            if (fw) {
                char b[32];
                if (t->s[i + 1] == 'u') snprintf(b, sizeof b, "\\x{%.4s}", t->s + i + 2);
                else snprintf(b, sizeof b, "%.*s", (int)fw, t->s + i);
                APPEND(b, 0);
                i += fw;
                continue;
            }
            if (i + 1 >= t->n) { tok_bytes_free(&sub.out); return fail(t, "regex: unterminated escape in a character class at %lu", i); }
            char nx = t->s[i + 1];
            const char *ws = raw_ws(nx);
            if (ws) { APPEND(ws, 0); i += 2; continue; }
            switch (nx) {
            case 'h': APPEND("0-9A-Fa-f", 1); break;
            case 'w': APPEND(WORD_IN_CLASS, 1); break;
            case 'd': APPEND("\\p{Nd}", 1); break;
            case 'D': APPEND("\\P{Nd}", 1); break;
            case 's': APPEND(WS_CHARS, 1); break;
            case 'S': APPEND("\\P{White_Space}", 1); break;
            case 'a': APPEND("\\x07", 0); break;
            case 'e': APPEND("\\x1B", 0); break;
            case 'v': APPEND("\\x{0B}", 0); break;
            case 'W': case 'H':
                tok_bytes_free(&sub.out);
                return fail(t, "regex: \\W or \\H inside a character class (at %lu) is not supported", i);
            default:
                if (strchr("fnrtb0", nx)) {
                    char b[3] = {'\\', nx, 0};
                    APPEND(b, 0);
                } else if (is_alnum(nx)) {
                    tok_bytes_free(&sub.out);
                    return fail(t, "regex: unsupported escape in a character class at %lu", i);
                } else if ((uint8_t)nx < 0x80) {
                    char b[3] = {'\\', nx, 0};
                    APPEND(b, 0);
                } else {
                    size_t l = char_len(t, i + 1);
                    char b[8] = {0};
                    memcpy(b, t->s + i + 1, l);
                    APPEND(b, 0);
                    i += l + 1;
                    continue;
                }
            }
            i += 2;
            continue;
        }
        if (c == ']') {
            if (i == first) { APPEND("\\]", 0); i++; continue; }
            if (tail == T_NONE) { tok_bytes_free(&sub.out); return fail(t, "regex: empty character class at %lu", start); }
            tok_bytes cls = {0};
            tok_bytes_put(&cls, negated ? "[^" : "[", negated ? 2 : 1);
            tok_bytes_put(&cls, sub.out.p, sub.out.n);
            tok_bytes_put(&cls, "]", 1);
            if (fold && !cls.oom) {
                /* add the other case of ASCII letters, judged on the positive class */
                tok_bytes pos = {0};
                tok_bytes_put(&pos, "^[", 2);
                tok_bytes_put(&pos, sub.out.p, sub.out.n);
                tok_bytes_put(&pos, "]$", 2);
                int e;
                PCRE2_SIZE off;
                pcre2_code *code = pos.oom ? NULL : pcre2_compile((PCRE2_SPTR)pos.p, pos.n, PCRE2_UTF | PCRE2_UCP, &e, &off, NULL);
                tok_bytes_free(&pos);
                if (code) {
                    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
                    char add[64];
                    int na = 0;
                    for (int k = 0; k < 26 && md; k++) {
                        int up = class_has(code, md, (char)('A' + k)), lo = class_has(code, md, (char)('a' + k));
                        if (up != lo) add[na++] = up ? (char)('a' + k) : (char)('A' + k);
                    }
                    pcre2_match_data_free(md);
                    pcre2_code_free(code);
                    if (na) {
                        cls.n = 0;
                        tok_bytes_put(&cls, negated ? "[^" : "[", negated ? 2 : 1);
                        tok_bytes_put(&cls, sub.out.p, sub.out.n);
                        tok_bytes_put(&cls, add, (size_t)na);
                        tok_bytes_put(&cls, "]", 1);
                    }
                }
            }
            tok_bytes_free(&sub.out);
            if (cls.oom) { tok_bytes_free(&cls); return fail(t, "regex: out of memory at %lu", i); }
            putn(t, cls.p, cls.n);
            tok_bytes_free(&cls);
            return (long)(i + 1);
        }
        if (c == '&' && i + 1 < t->n && t->s[i + 1] == '&') {
            tok_bytes_free(&sub.out);
            return fail(t, "regex: character-class intersection (&&) at %lu is not supported", i);
        }
        if (c == '[') {
            static const char *const posix[][2] = {
                {"alpha", "\\p{Alphabetic}"}, {"alnum", "\\p{Alphabetic}\\p{Nd}"}, {"digit", "\\p{Nd}"},
                {"lower", "\\p{Lowercase}"}, {"upper", "\\p{Uppercase}"}, {"space", "\\p{White_Space}"},
                {"blank", "\\t\\p{Zs}"}, {"punct", "\\p{P}\\p{S}"}, {"cntrl", "\\p{Cc}"},
                {"word", WORD_IN_CLASS}, {"xdigit", "0-9A-Fa-f"},
            };
            int done = 0;
            if (i + 1 < t->n && t->s[i + 1] == ':') {
                for (size_t k = 0; k < sizeof posix / sizeof posix[0]; k++) {
                    size_t l = strlen(posix[k][0]);
                    if (i + 4 + l <= t->n && memcmp(t->s + i + 2, posix[k][0], l) == 0 &&
                        t->s[i + 2 + l] == ':' && t->s[i + 3 + l] == ']') {
                        if (fold && (k == 3 || k == 4)) {
                            tok_bytes_free(&sub.out);
                            return fail(t, "regex: POSIX case class under (?i:) at %lu is not supported", i);
                        }
                        APPEND(posix[k][1], 1);
                        i += 4 + l;
                        done = 1;
                        break;
                    }
                }
            }
            if (done) continue;
            tok_bytes_free(&sub.out);
            return fail(t, "regex: nested character class or negated POSIX class at %lu is not supported", i);
        }
        if (c == '-') {
            int terminal = i + 1 < t->n && (t->s[i + 1] == ']' || (t->s[i + 1] == '&' && i + 2 < t->n && t->s[i + 2] == '&'));
            if (tail == T_SET && !terminal) { tok_bytes_free(&sub.out); return fail(t, "regex: range with a set in a character class at %lu", i); }
            if (tail == T_NONE || tail == T_RANGE || tail == T_COMPLETE || terminal) {
                APPEND("\\-", 0);
            } else {
                FRAG("-");
                tail = T_RANGE;
            }
            i++;
            continue;
        }
        size_t l = char_len(t, i);
        if (c == '^' && sub.out.n == 0) {
            APPEND("\\^", 0);
        } else if (c == '[' || c == '\\') {
            char b[3] = {'\\', c, 0};
            APPEND(b, 0);
        } else {
            char b[8] = {0};
            memcpy(b, t->s + i, l);
            APPEND(b, 0);
        }
        i += l;
    }
    tok_bytes_free(&sub.out);
    return fail(t, "regex: unterminated character class at %lu", start);
#undef FRAG
#undef APPEND
}

static int translate(tx *t) {
    long atom_start = -1;
    int lwq = 0, fold = 0;
    struct { long atom; int fold; } stack[256];
    int depth = 0;
#define EMIT_ATOM_BEGIN() do { atom_start = (long)t->out.n; lwq = 0; } while (0)
    for (size_t i = 0; i < t->n;) {
        char c = t->s[i];
        if (c == '\\') {
            char kind;
            size_t body, bn;
            size_t bl = braced(t, i, &kind, &body, &bn);
            if (bl) {
                EMIT_ATOM_BEGIN();
                if (kind == 'x' || kind == 'u') {
                    if (bn > 8) return fail(t, "regex: bad code point escape at %lu", i);
                    if (!(fold && put_folded_hex(t, t->s + body, bn))) {
                        char b[32];
                        snprintf(b, sizeof b, "\\x{%.*s}", (int)bn, t->s + body);
                        put(t, b);
                    }
                } else if (bn == 4 && memcmp(t->s + body, "Word", 4) == 0) {
                    put(t, kind == 'p' ? WORD_CLASS : NON_WORD_CLASS);
                } else {
                    char name[128];
                    property_name(t->s + body, bn, name, sizeof name);
                    put_property(t, kind, name, 0);
                }
                i += bl;
                continue;
            }
            size_t fw = fixed_width(t, i);
            if (fw) {
                EMIT_ATOM_BEGIN();
                char k = t->s[i + 1];
                if (fold && k != 'c' && put_folded_hex(t, t->s + i + 2, fw - 2)) {
                } else if (k == 'u') {
                    char b[16];
                    snprintf(b, sizeof b, "\\x{%.4s}", t->s + i + 2);
                    put(t, b);
                } else {
                    putn(t, t->s + i, fw);
                }
                i += fw;
                continue;
            }
            if (i + 1 >= t->n) return fail(t, "regex: trailing backslash at %lu", i);
            char nx = t->s[i + 1];
            size_t l = char_len(t, i + 1);
            i += 1 + l;
            if (nx == 'G') continue;
            const char *ws = raw_ws(nx);
            EMIT_ATOM_BEGIN();
            if (ws) { put(t, ws); continue; }
            switch (nx) {
            case 'A': put(t, "(?<![\\s\\S])"); continue;
            case 'z': put(t, "(?![\\s\\S])"); continue;
            case 'Z': put(t, "(?=\\n?(?![\\s\\S]))"); continue;
            case 'h': put(t, "[0-9A-Fa-f]"); continue;
            case 'H': put(t, "[^0-9A-Fa-f]"); continue;
            case 'w': put(t, WORD_CLASS); continue;
            case 'W': put(t, NON_WORD_CLASS); continue;
            case 'd': put_property(t, 'p', "Nd", 0); continue;
            case 'D': put_property(t, 'P', "Nd", 0); continue;
            case 's': put(t, "[" WS_CHARS "]"); continue;
            case 'S': put(t, "[^" WS_CHARS "]"); continue;
            case 'b': put(t, "(?:(?<!" WORD_CLASS ")(?=" WORD_CLASS ")|(?<=" WORD_CLASS ")(?!" WORD_CLASS "))"); continue;
            case 'B': put(t, "(?:(?<!" WORD_CLASS ")(?!" WORD_CLASS ")|(?<=" WORD_CLASS ")(?=" WORD_CLASS "))"); continue;
            case 'a': put(t, "\\x07"); continue;
            case 'e': put(t, "\\x1B"); continue;
            case 'v': put(t, "\\x{0B}"); continue;
            default: break;
            }
            if (strchr("fnrt", nx) || (nx >= '0' && nx <= '9') || nx == 'k') {
                char b[3] = {'\\', nx, 0};
                put(t, b);
            } else if (is_alpha(nx)) {
                return fail(t, "regex: unsupported escape at %lu", i - 2);
            } else if (js_syntax(nx) || ((uint8_t)nx < 0x80 && !is_alnum(nx) && nx > ' ')) {
                char b[3] = {'\\', nx, 0};
                put(t, b);
            } else {
                putn(t, t->s + i - l, l);
            }
            continue;
        }
        switch (c) {
        case '[': {
            EMIT_ATOM_BEGIN();
            long end = parse_class(t, i, fold);
            if (end < 0) return -1;
            i = (size_t)end;
            continue;
        }
        case ']': EMIT_ATOM_BEGIN(); put(t, "\\]"); i++; continue;
        case '.': EMIT_ATOM_BEGIN(); put(t, "[^\\n]"); i++; continue;
        case '^': EMIT_ATOM_BEGIN(); put(t, "(?:(?<![\\s\\S])|(?<=\\n))"); i++; continue;
        case '$': EMIT_ATOM_BEGIN(); put(t, "(?:(?=\\n)|(?![\\s\\S]))"); i++; continue;
        case '(': {
            const char *pfx = "(";
            size_t src_len = 1;
            int ci = 0;
            if (i + 3 < t->n && memcmp(t->s + i, "(?i:", 4) == 0) { pfx = "(?:"; src_len = 4; ci = 1; }
            else if (i + 1 < t->n && t->s[i + 1] == '?') {
                static const char *const forms[] = {"(?<=", "(?<!", "(?:", "(?=", "(?!", "(?>"};
                src_len = 0;
                for (size_t k = 0; k < sizeof forms / sizeof forms[0]; k++) {
                    size_t fl = strlen(forms[k]);
                    if (i + fl <= t->n && memcmp(t->s + i, forms[k], fl) == 0) {
                        pfx = k == 5 ? "(?:" : forms[k];
                        src_len = fl;
                        break;
                    }
                }
                if (!src_len && i + 2 < t->n && t->s[i + 2] == '<') {
                    size_t j = i + 3;
                    while (j < t->n && (is_alnum(t->s[j]) || t->s[j] == '_')) j++;
                    if (j < t->n && t->s[j] == '>' && j > i + 3 && !(t->s[i + 3] >= '0' && t->s[i + 3] <= '9')) {
                        src_len = j + 1 - i;
                        pfx = NULL;
                    }
                }
                if (!src_len) return fail(t, "regex: unsupported group syntax at %lu", i);
            }
            if (depth == (int)(sizeof stack / sizeof stack[0])) return fail(t, "regex: groups nested too deep at %lu", i);
            stack[depth].atom = (long)t->out.n;
            stack[depth].fold = fold;
            depth++;
            if (ci) fold = 1;
            if (pfx) put(t, pfx);
            else putn(t, t->s + i, src_len);
            lwq = 0;
            i += src_len;
            continue;
        }
        case ')':
            put(t, ")");
            if (depth > 0) {
                depth--;
                atom_start = stack[depth].atom;
                fold = stack[depth].fold;
            } else {
                atom_start = -1;
                fold = 0;
            }
            lwq = 0;
            i++;
            continue;
        case '|': put(t, "|"); atom_start = -1; lwq = 0; i++; continue;
        case '{': {
            /* {n}, {n,}, {n,m}, {,m} */
            size_t j = i + 1, d1 = 0, d2 = 0;
            int comma = 0;
            while (j < t->n && t->s[j] >= '0' && t->s[j] <= '9') { j++; d1++; }
            if (j < t->n && t->s[j] == ',') {
                comma = 1;
                j++;
                while (j < t->n && t->s[j] >= '0' && t->s[j] <= '9') { j++; d2++; }
            }
            int ok = j < t->n && t->s[j] == '}' && (d1 > 0 || (comma && d2 > 0));
            if (!ok || atom_start < 0) {
                EMIT_ATOM_BEGIN();
                put(t, "\\{");
                i++;
                continue;
            }
            char body[64];
            size_t bl = j - (i + 1);
            if (bl > 40) return fail(t, "regex: quantifier too long at %lu", i);
            if (d1 == 0) snprintf(body, sizeof body, "0%.*s", (int)bl, t->s + i + 1);
            else snprintf(body, sizeof body, "%.*s", (int)bl, t->s + i + 1);
            i = j + 1;
            if (i < t->n && (t->s[i] == '+' || t->s[i] == '*')) {
                tok_bytes atom = {0};
                tok_bytes_put(&atom, t->out.p + atom_start, t->out.n - (size_t)atom_start);
                t->out.n = (size_t)atom_start;
                put(t, "(?:");
                if (atom.n) putn(t, atom.p, atom.n);
                tok_bytes_free(&atom);
                put(t, "{");
                put(t, body);
                put(t, "})");
                putn(t, t->s + i, 1);
                i++;
            } else {
                put(t, "{");
                put(t, body);
                put(t, "}");
            }
            lwq = 1;
            continue;
        }
        case '}': EMIT_ATOM_BEGIN(); put(t, "\\}"); i++; continue;
        case '+':
            if (!lwq) { put(t, "+"); lwq = 1; }
            i++;
            continue;
        case '*':
        case '?':
            putn(t, &c, 1);
            lwq = 1;
            i++;
            continue;
        default: {
            size_t l = char_len(t, i);
            EMIT_ATOM_BEGIN();
            if (fold && is_alpha(c)) {
                char b[5] = {'[', (char)(c | 32), (char)(c & ~32), ']', 0};
                put(t, b);
            } else {
                putn(t, t->s + i, l);
            }
            i += l;
            continue;
        }
        }
    }
#undef EMIT_ATOM_BEGIN
    return t->out.oom ? fail(t, "regex: out of memory%lu", 0) : 0;
}

/* ---- compile ---- */

static int compile(tok_regex *re, const char *pat, size_t n, const char *what, moe_error *err) {
    int e;
    PCRE2_SIZE off;
    re->code = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | PCRE2_UCP, &e, &off, NULL);
    if (!re->code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(e, msg, sizeof msg);
        return moe_fail(err, "%s: the regex does not compile (%s at offset %lu)", what, (const char *)msg,
                        (unsigned long)off);
    }
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* optional: the interpreter runs otherwise */
    pcre2_pattern_info(re->code, PCRE2_INFO_CAPTURECOUNT, &re->capture_count);
    return 0;
}

int tok_regex_compile_onig(tok_regex *re, const char *src, size_t n, const char *what, moe_error *err) {
    *re = (tok_regex){0};
    if (!tok_utf8_valid(src, n)) return moe_fail(err, "%s: the regex is not valid UTF-8", what);
    tx t = {.s = src, .n = n};
    if (translate(&t)) {
        tok_bytes_free(&t.out);
        return moe_fail(err, "%s: %s", what, t.err);
    }
    int r = compile(re, t.out.p ? t.out.p : "", t.out.n, what, err);
    tok_bytes_free(&t.out);
    return r;
}

int tok_regex_compile_literal(tok_regex *re, const char *s, size_t n, int capture, moe_error *err) {
    *re = (tok_regex){0};
    tok_bytes b = {0};
    if (capture) tok_bytes_put(&b, "(", 1);
    tok_bytes_put(&b, "\\Q", 2);
    /* \Q...\E quotes everything except "\E" itself */
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n && s[i + 1] == 'E') {
            tok_bytes_put(&b, "\\E\\\\\\Q", 6);
            continue;
        }
        tok_bytes_putc(&b, s[i]);
    }
    tok_bytes_put(&b, "\\E", 2);
    if (capture) tok_bytes_put(&b, ")", 1);
    int r = b.oom ? moe_fail(err, "out of memory compiling a pattern") : compile(re, b.p, b.n, "pattern", err);
    tok_bytes_free(&b);
    return r;
}

int tok_regex_compile_raw(tok_regex *re, const char *pat, moe_error *err) {
    *re = (tok_regex){0};
    return compile(re, pat, strlen(pat), "built-in pattern", err);
}

int tok_regex_compile_pattern(tok_regex *re, const tok_pattern *p, int capture, const char *what, moe_error *err) {
    if (p->kind == TOK_PAT_STRING) {
        if (!tok_utf8_valid(p->src.p, p->src.n)) return moe_fail(err, "%s: the string is not valid UTF-8", what);
        if (tok_regex_compile_literal(re, p->src.p, p->src.n, capture, err)) return moe_fail_prefix(err, "%s: ", what);
        return 0;
    }
    return tok_regex_compile_onig(re, p->src.p, p->src.n, what, err);
}

void tok_regex_free(tok_regex *re) {
    if (re->code) pcre2_code_free(re->code);
    *re = (tok_regex){0};
}

/* ---- matching ---- */

int tok_matcher_init(tok_matcher *m) {
    m->md = pcre2_match_data_create(32, NULL);
    m->error = 0;
    return m->md ? 0 : -1;
}

void tok_matcher_free(tok_matcher *m) {
    if (m->md) pcre2_match_data_free(m->md);
    m->md = NULL;
}

int tok_regex_find(const tok_regex *re, tok_matcher *m, const char *s, size_t n, size_t pos, int anchored,
                   size_t *ms, size_t *me) {
    uint32_t opt = PCRE2_NO_UTF_CHECK | (anchored ? PCRE2_ANCHORED : 0);
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, opt, m->md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, opt | PCRE2_NO_JIT, m->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        if (!m->error) m->error = rc;
        return 0;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

static size_t next_char(const char *s, size_t n, size_t i) {
    if (i >= n) return n + 1;
    uint8_t b = (uint8_t)s[i];
    size_t l = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    return i + l;
}

int tok_regex_foreach(const tok_regex *re, tok_matcher *m, const char *s, size_t n, tok_match_fn fn, void *user) {
    size_t pos = 0, ms, me;
    while (pos <= n && tok_regex_find(re, m, s, n, pos, 0, &ms, &me)) {
        if (fn) fn(user, ms, me, m);
        pos = me > ms ? me : next_char(s, n, me);
    }
    return m->error ? -1 : 0;
}

int tok_regex_replace_all(const tok_regex *re, tok_matcher *m, const char *s, size_t n, const char *content,
                          size_t cn, tok_bytes *out) {
    size_t pos = 0, last = 0, ms, me;
    while (pos <= n && tok_regex_find(re, m, s, n, pos, 0, &ms, &me)) {
        tok_bytes_put(out, s + last, ms - last);
        /* GetSubstitution: $$ $& $` $' $n $nn */
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
        for (size_t k = 0; k < cn; k++) {
            char c = content[k];
            if (c != '$' || k + 1 >= cn) { tok_bytes_putc(out, c); continue; }
            char d = content[k + 1];
            if (d == '$') { tok_bytes_putc(out, '$'); k++; }
            else if (d == '&') { tok_bytes_put(out, s + ms, me - ms); k++; }
            else if (d == '`') { tok_bytes_put(out, s, ms); k++; }
            else if (d == '\'') { tok_bytes_put(out, s + me, n - me); k++; }
            else if (d >= '0' && d <= '9') {
                unsigned g = (unsigned)(d - '0'), used = 1;
                if (k + 2 < cn && content[k + 2] >= '0' && content[k + 2] <= '9') {
                    unsigned g2 = g * 10 + (unsigned)(content[k + 2] - '0');
                    if (g2 >= 1 && g2 <= re->capture_count) { g = g2; used = 2; }
                }
                if (g >= 1 && g <= re->capture_count) {
                    if (ov[2 * g] != PCRE2_UNSET) tok_bytes_put(out, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
                    k += used;
                } else {
                    tok_bytes_putc(out, c);
                }
            } else {
                tok_bytes_putc(out, c);
            }
        }
        last = me;
        pos = me > ms ? me : next_char(s, n, me);
    }
    tok_bytes_put(out, s + last, n - last);
    return m->error || out->oom ? -1 : 0;
}
