/*
 * tmpl_lex.c — turns a chat template into tokens exactly as @huggingface/jinja
 * does: first the same text preprocessing (drop one trailing newline,
 * lstrip_blocks, trim_blocks, remove {% generation %} tags), then its lexer,
 * quirks included (the '-' of {%- trims the text before it, numbers take a
 * sign when they follow an operator, "}}" inside an object literal closes the
 * literal, not the expression). Every token keeps the line:column where it
 * starts in the original source, for error messages.
 */
#include <string.h>

#include "text/tmpl_internal.h"

/* ---- preprocessing: same regular expressions as the reference, by hand ---- */

typedef struct pp {
    char *s;
    uint32_t *o; /* offset in the original of each byte */
    size_t n;
} pp;

static void pp_init(tm_arena *a, pp *p, size_t cap) {
    p->s = tm_alloc(a, cap + 1);
    p->o = tm_alloc(a, (cap + 1) * sizeof *p->o);
    p->n = 0;
}

static void pp_put(pp *dst, const pp *src, size_t from, size_t to) {
    memcpy(dst->s + dst->n, src->s + from, to - from);
    memcpy(dst->o + dst->n, src->o + from, (to - from) * sizeof *dst->o);
    dst->n += to - from;
}

/* Is s[i] just after a line terminator (\n, \r, U+2028, U+2029), or 0? */
static int line_start(const pp *p, size_t i) {
    if (i == 0) return 1;
    char c = p->s[i - 1];
    if (c == '\n' || c == '\r') return 1;
    return i >= 3 && (unsigned char)p->s[i - 3] == 0xE2 && (unsigned char)p->s[i - 2] == 0x80 &&
           ((unsigned char)p->s[i - 1] == 0xA8 || (unsigned char)p->s[i - 1] == 0xA9);
}

/* Length of the JS whitespace character at s[i], or 0. */
static size_t space_at(const char *s, size_t n, size_t i) {
    if (i >= n) return 0;
    uint32_t cp;
    size_t l = tm_utf8_next(s + i, n - i, &cp);
    return tm_js_space(cp) ? l : 0;
}

static void preprocess(tm_arena *a, const char *src, size_t n, pp *out) {
    pp cur;
    pp_init(a, &cur, n);
    memcpy(cur.s, src, n);
    for (size_t i = 0; i < n; i++) cur.o[i] = (uint32_t)i;
    cur.n = n;
    /* a single trailing newline is dropped */
    if (cur.n && cur.s[cur.n - 1] == '\n') cur.n--;

    /* lstrip_blocks: /^[ \t]*({[#%-])/gm -> "$1" */
    pp l;
    pp_init(a, &l, cur.n);
    for (size_t i = 0; i < cur.n;) {
        if (line_start(&cur, i)) {
            size_t j = i;
            while (j < cur.n && (cur.s[j] == ' ' || cur.s[j] == '\t')) j++;
            if (j + 1 < cur.n && cur.s[j] == '{' && strchr("#%-", cur.s[j + 1]) && cur.s[j + 1]) {
                pp_put(&l, &cur, j, j + 2);
                i = j + 2;
                continue;
            }
        }
        pp_put(&l, &cur, i, i + 1);
        i++;
    }

    /* trim_blocks: /([#%-]})\n/g -> "$1" */
    pp t;
    pp_init(a, &t, l.n);
    for (size_t i = 0; i < l.n;) {
        if (i + 2 < l.n && l.s[i] && strchr("#%-", l.s[i]) && l.s[i + 1] == '}' && l.s[i + 2] == '\n') {
            pp_put(&t, &l, i, i + 2);
            i += 3;
            continue;
        }
        pp_put(&t, &l, i, i + 1);
        i++;
    }

    /* generation tags: /(\s*){%(-?)\s*(?:end)?generation\s*(-?)%}(\s*)/gs */
    pp g;
    pp_init(a, &g, t.n);
    size_t last = 0;
    for (size_t p = 0; p + 1 < t.n; p++) {
        if (t.s[p] != '{' || t.s[p + 1] != '%') continue;
        size_t q = p + 2, sl;
        int lstrip = 0, rstrip = 0;
        if (q < t.n && t.s[q] == '-') { lstrip = 1; q++; }
        while ((sl = space_at(t.s, t.n, q))) q += sl;
        if (q + 3 <= t.n && memcmp(t.s + q, "end", 3) == 0 &&
            !(q + 10 <= t.n && memcmp(t.s + q, "generation", 10) == 0))
            q += 3;
        if (!(q + 10 <= t.n && memcmp(t.s + q, "generation", 10) == 0)) continue;
        q += 10;
        while ((sl = space_at(t.s, t.n, q))) q += sl;
        if (q < t.n && t.s[q] == '-') { rstrip = 1; q++; }
        if (!(q + 2 <= t.n && t.s[q] == '%' && t.s[q + 1] == '}')) continue;
        q += 2;
        /* the whitespace run before the tag, not reaching back past the last match */
        size_t before = p;
        for (;;) {
            size_t k = before, found = 0;
            /* step back one character if it is whitespace */
            for (size_t back = 1; back <= 4 && back <= before - last; back++) {
                size_t len = space_at(t.s, t.n, before - back);
                if (len == back) { found = back; break; }
            }
            if (!found) break;
            before = k - found;
        }
        size_t after = q;
        while ((sl = space_at(t.s, t.n, after))) after += sl;
        pp_put(&g, &t, last, before);
        if (!lstrip) pp_put(&g, &t, before, p);
        if (!rstrip) pp_put(&g, &t, q, after);
        last = after;
        p = after - 1;
    }
    pp_put(&g, &t, last, t.n);
    g.s[g.n] = 0;
    *out = g;
}

/* ---- lexer ---- */

typedef struct lexer {
    tm_arena *a;
    const char *s;       /* preprocessed */
    const uint32_t *o;
    size_t n, pos;
    const char *src;     /* original */
    size_t src_n;
    /* incremental line:column of the original */
    size_t lc_off;
    int lc_line, lc_col;
    tm_token *toks;
    size_t ntoks, cap;
    int curly;
} lexer;

static void position(lexer *L, size_t pre, int *line, int *col) {
    size_t target = pre < L->n ? L->o[pre] : L->src_n;
    if (target < L->lc_off) { L->lc_off = 0; L->lc_line = 1; L->lc_col = 1; }
    while (L->lc_off < target) {
        uint32_t cp;
        size_t k = tm_utf8_next(L->src + L->lc_off, L->src_n - L->lc_off, &cp);
        if (cp == '\n') { L->lc_line++; L->lc_col = 1; }
        else L->lc_col++;
        L->lc_off += k;
    }
    *line = L->lc_line;
    *col = L->lc_col;
}

_Noreturn static void lex_fail(lexer *L, size_t at, const char *what) {
    int line, col;
    position(L, at, &line, &col);
    tm_fail(L->a, "chat template syntax error at line %d:%d: %s", line, col, what);
}

static void push(lexer *L, int type, const char *v, size_t vn, size_t at) {
    if (L->ntoks == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        tm_token *t = tm_alloc(L->a, cap * sizeof *t);
        if (L->ntoks) memcpy(t, L->toks, L->ntoks * sizeof *t);
        L->toks = t;
        L->cap = cap;
    }
    tm_token *t = &L->toks[L->ntoks++];
    t->type = type;
    t->val.p = tm_memdup(L->a, v, vn);
    t->val.n = vn;
    position(L, at, &t->line, &t->col);
}

static int last_type(const lexer *L) { return L->ntoks ? L->toks[L->ntoks - 1].type : -1; }

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_word(int c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void put_utf8(tm_arena *a, tm_buf *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* a lone surrogate prints as U+FFFD */
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    tm_buf_put(a, b, u, n);
}

enum { W_SPACE, W_DIGIT, W_WORD, W_NOT_QUOTE1, W_NOT_QUOTE2 };

static int pred(const lexer *L, int which) {
    if (L->pos >= L->n) return which == W_WORD || which == W_NOT_QUOTE1 || which == W_NOT_QUOTE2;
    int c = (unsigned char)L->s[L->pos];
    switch (which) {
    case W_SPACE: return space_at(L->s, L->n, L->pos) != 0;
    case W_DIGIT: return is_digit(c);
    case W_WORD: return is_word(c);
    case W_NOT_QUOTE1: return c != '\'';
    default: return c != '"';
    }
}

/* consumeWhile: also decodes backslash escapes; reaching the end is an error */
static tm_str consume_while(lexer *L, int which) {
    tm_buf b = {0};
    tm_buf_put(L->a, &b, "", 0);
    while (pred(L, which)) {
        if (L->pos < L->n && L->s[L->pos] == '\\') {
            size_t at = L->pos;
            if (++L->pos >= L->n) lex_fail(L, at, "unexpected end of input");
            char e = L->s[L->pos++];
            if (e == 'x' || e == 'u') {
                size_t len = e == 'x' ? 2 : 4;
                uint32_t v = 0;
                if (L->pos + len > L->n) lex_fail(L, at, "invalid hexadecimal escape sequence");
                for (size_t i = 0; i < len; i++) {
                    int h = hexval((unsigned char)L->s[L->pos + i]);
                    if (h < 0) lex_fail(L, at, "invalid hexadecimal escape sequence");
                    v = v * 16 + (uint32_t)h;
                }
                L->pos += len;
                /* a \u high surrogate followed by a \u low surrogate is one character */
                if (v >= 0xD800 && v <= 0xDBFF && L->pos + 6 <= L->n && L->s[L->pos] == '\\' &&
                    L->s[L->pos + 1] == 'u') {
                    uint32_t lo = 0;
                    int ok = 1;
                    for (size_t i = 0; i < 4; i++) {
                        int h = hexval((unsigned char)L->s[L->pos + 2 + i]);
                        if (h < 0) { ok = 0; break; }
                        lo = lo * 16 + (uint32_t)h;
                    }
                    if (ok && lo >= 0xDC00 && lo <= 0xDFFF) {
                        v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                        L->pos += 6;
                    }
                }
                put_utf8(L->a, &b, v);
                continue;
            }
            const char *m;
            switch (e) {
            case 'n': m = "\n"; break;
            case 't': m = "\t"; break;
            case 'r': m = "\r"; break;
            case 'b': m = "\b"; break;
            case 'f': m = "\f"; break;
            case 'v': m = "\v"; break;
            case '\'': m = "'"; break;
            case '"': m = "\""; break;
            case '\\': m = "\\"; break;
            default: lex_fail(L, at, "unexpected escaped character");
            }
            tm_buf_put(L->a, &b, m, 1);
            continue;
        }
        if (L->pos >= L->n) lex_fail(L, L->pos, "unexpected end of input");
        tm_buf_put(L->a, &b, L->s + L->pos, 1);
        L->pos++;
        if (L->pos >= L->n) lex_fail(L, L->pos, "unexpected end of input (an unclosed tag or string?)");
    }
    return (tm_str){b.p, b.n};
}

static void strip_trailing_ws(lexer *L) {
    if (!L->ntoks || L->toks[L->ntoks - 1].type != TK_TEXT) return;
    tm_token *t = &L->toks[L->ntoks - 1];
    /* trimEnd: drop trailing JS whitespace */
    size_t end = t->val.n;
    for (;;) {
        size_t k = 0;
        for (size_t back = 1; back <= 4 && back <= end; back++)
            if (space_at(t->val.p, t->val.n, end - back) == back) { k = back; break; }
        if (!k) break;
        end -= k;
    }
    t->val.n = end;
    if (end == 0) L->ntoks--;
}

static void skip_leading_ws(lexer *L) {
    size_t k;
    while ((k = space_at(L->s, L->n, L->pos))) L->pos += k;
}

static int starts(const lexer *L, const char *lit) {
    size_t k = strlen(lit);
    return L->pos + k <= L->n && memcmp(L->s + L->pos, lit, k) == 0;
}

static const struct { const char *seq; int type; } table[] = {
    {"{%", TK_OPEN_STMT}, {"%}", TK_CLOSE_STMT}, {"{{", TK_OPEN_EXPR}, {"}}", TK_CLOSE_EXPR},
    {"(", TK_LPAREN}, {")", TK_RPAREN}, {"{", TK_LBRACE}, {"}", TK_RBRACE},
    {"[", TK_LBRACKET}, {"]", TK_RBRACKET}, {",", TK_COMMA}, {".", TK_DOT}, {":", TK_COLON},
    {"|", TK_PIPE}, {"<=", TK_CMP}, {">=", TK_CMP}, {"==", TK_CMP}, {"!=", TK_CMP},
    {"<", TK_CMP}, {">", TK_CMP}, {"+", TK_ADD}, {"-", TK_ADD}, {"~", TK_ADD},
    {"**", TK_POW}, {"*", TK_MUL}, {"//", TK_MUL}, {"/", TK_MUL}, {"%", TK_MUL},
    {"=", TK_EQUALS},
};

void tm_lex(tm_arena *a, const char *src, size_t n, tm_token **toks, size_t *ntoks) {
    pp p;
    preprocess(a, src, n, &p);
    lexer L = {.a = a, .s = p.s, .o = p.o, .n = p.n, .src = src, .src_n = n,
               .lc_line = 1, .lc_col = 1};

    while (L.pos < L.n) {
        int lt = last_type(&L);
        if (lt < 0 || lt == TK_CLOSE_STMT || lt == TK_CLOSE_EXPR || lt == TK_COMMENT) {
            size_t start = L.pos;
            while (L.pos < L.n && !(L.s[L.pos] == '{' && L.pos + 1 < L.n &&
                                    (L.s[L.pos + 1] == '%' || L.s[L.pos + 1] == '{' || L.s[L.pos + 1] == '#')))
                L.pos++;
            if (L.pos > start) {
                push(&L, TK_TEXT, L.s + start, L.pos - start, start);
                continue;
            }
        }

        if (starts(&L, "{#")) {
            size_t at = L.pos;
            L.pos += 2;
            int strip_before = L.pos < L.n && L.s[L.pos] == '-';
            if (strip_before) L.pos++;
            size_t cstart = L.pos;
            while (!(L.pos + 1 < L.n && L.s[L.pos] == '#' && L.s[L.pos + 1] == '}')) {
                if (L.pos + 2 >= L.n) lex_fail(&L, at, "missing end of comment tag");
                L.pos++;
            }
            size_t cend = L.pos;
            int strip_after = cend > cstart && L.s[cend - 1] == '-';
            if (strip_after) cend--;
            if (strip_before) strip_trailing_ws(&L);
            push(&L, TK_COMMENT, L.s + cstart, cend - cstart, at);
            L.pos += 2;
            if (strip_after) skip_leading_ws(&L);
            continue;
        }
        if (starts(&L, "{%-")) {
            strip_trailing_ws(&L);
            push(&L, TK_OPEN_STMT, "{%", 2, L.pos);
            L.pos += 3;
            continue;
        }
        if (starts(&L, "{{-")) {
            strip_trailing_ws(&L);
            push(&L, TK_OPEN_EXPR, "{{", 2, L.pos);
            L.curly = 0;
            L.pos += 3;
            continue;
        }

        consume_while(&L, W_SPACE);

        if (starts(&L, "-%}")) {
            push(&L, TK_CLOSE_STMT, "%}", 2, L.pos);
            L.pos += 3;
            skip_leading_ws(&L);
            continue;
        }
        if (starts(&L, "-}}")) {
            push(&L, TK_CLOSE_EXPR, "}}", 2, L.pos);
            L.pos += 3;
            skip_leading_ws(&L);
            continue;
        }
        if (L.pos >= L.n) break;
        char c = L.s[L.pos];
        if (c == '-' || c == '+') {
            lt = last_type(&L);
            if (lt < 0 || lt == TK_TEXT) lex_fail(&L, L.pos, "unexpected character");
            if (!(lt == TK_IDENT || lt == TK_NUM || lt == TK_STR || lt == TK_RPAREN || lt == TK_RBRACKET)) {
                size_t at = L.pos++;
                tm_buf num = {0};
                tm_buf_put(a, &num, &c, 1);
                tm_str d = consume_while(&L, W_DIGIT);
                tm_buf_put(a, &num, d.p, d.n);
                if (d.n > 0 && L.pos + 1 < L.n && L.s[L.pos] == '.' && is_digit((unsigned char)L.s[L.pos + 1])) {
                    L.pos++;
                    tm_str f = consume_while(&L, W_DIGIT);
                    tm_buf_put(a, &num, ".", 1);
                    tm_buf_put(a, &num, f.p, f.n);
                }
                push(&L, d.n > 0 ? TK_NUM : TK_UNARY, num.p, num.n, at);
                continue;
            }
        }
        int matched = 0;
        for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
            if (table[i].type == TK_CLOSE_EXPR && L.curly > 0) continue;
            if (!starts(&L, table[i].seq)) continue;
            size_t k = strlen(table[i].seq);
            push(&L, table[i].type, table[i].seq, k, L.pos);
            if (table[i].type == TK_OPEN_EXPR) L.curly = 0;
            else if (table[i].type == TK_LBRACE) L.curly++;
            else if (table[i].type == TK_RBRACE) L.curly--;
            L.pos += k;
            matched = 1;
            break;
        }
        if (matched) continue;
        if (c == '\'' || c == '"') {
            size_t at = L.pos++;
            tm_str s = consume_while(&L, c == '\'' ? W_NOT_QUOTE1 : W_NOT_QUOTE2);
            push(&L, TK_STR, s.p, s.n, at);
            L.pos++;
            continue;
        }
        if (is_digit((unsigned char)c)) {
            size_t at = L.pos;
            tm_buf num = {0};
            tm_str d = consume_while(&L, W_DIGIT);
            tm_buf_put(a, &num, d.p, d.n);
            if (last_type(&L) != TK_DOT && L.pos + 1 < L.n && L.s[L.pos] == '.' &&
                is_digit((unsigned char)L.s[L.pos + 1])) {
                L.pos++;
                tm_str f = consume_while(&L, W_DIGIT);
                tm_buf_put(a, &num, ".", 1);
                tm_buf_put(a, &num, f.p, f.n);
            }
            push(&L, TK_NUM, num.p, num.n, at);
            continue;
        }
        if (is_word((unsigned char)c)) {
            size_t at = L.pos;
            tm_str w = consume_while(&L, W_WORD);
            push(&L, TK_IDENT, w.p, w.n, at);
            continue;
        }
        lex_fail(&L, L.pos, (unsigned char)c >= 0x80 ? "unexpected non-ASCII character inside a tag"
                                                     : "unexpected character");
    }
    *toks = L.toks;
    *ntoks = L.ntoks;
}
