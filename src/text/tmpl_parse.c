/*
 * tmpl_parse.c — builds the syntax tree of a chat template from its tokens,
 * following @huggingface/jinja's grammar and operator precedence (which is
 * not quite Python Jinja2's: `not` binds looser than comparisons, `is` tests
 * bind tighter than `*`, a unary sign binds tighter than a filter).
 * Statements: if/elif/else, for (with an inline `if` filter and an else
 * block), set (also the block form and namespace attributes), macro, call,
 * filter, break, continue. Errors name the token's line:column.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tmpl_internal.h"

#define MAX_DEPTH 400 /* nesting, counting each link of an operator chain */

typedef struct parser {
    tm_arena *a;
    const tm_token *t;
    size_t n, cur;
    int depth;
} parser;

typedef struct nvec {
    tm_node **v;
    size_t n, cap;
} nvec;

static void nv_push(tm_arena *a, nvec *v, tm_node *x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        tm_node **nv = tm_alloc(a, cap * sizeof *nv);
        if (v->n) memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

_Noreturn static void perr(parser *P, const char *fmt, const char *arg) {
    char msg[300];
    snprintf(msg, sizeof msg, fmt, arg ? arg : "");
    if (P->cur < P->n)
        tm_fail(P->a, "chat template syntax error at line %d:%d: %s", P->t[P->cur].line, P->t[P->cur].col, msg);
    if (P->n)
        tm_fail(P->a, "chat template syntax error after line %d:%d: %s (unexpected end of template)",
                P->t[P->n - 1].line, P->t[P->n - 1].col, msg);
    tm_fail(P->a, "chat template syntax error: %s", msg);
}

static const tm_token *peek(parser *P) {
    if (P->cur >= P->n) perr(P, "%s", "unexpected end of template");
    return &P->t[P->cur];
}

static tm_node *mk(parser *P, int kind, const tm_token *at) {
    tm_node *x = tm_alloc(P->a, sizeof *x);
    x->kind = kind;
    if (at) {
        x->line = at->line;
        x->col = at->col;
    }
    return x;
}

static int is(parser *P, int type) { return P->cur < P->n && P->t[P->cur].type == type; }
static int is_ident(parser *P, const char *name) {
    return P->cur < P->n && P->t[P->cur].type == TK_IDENT && tm_str_eq(P->t[P->cur].val, name);
}
static int is_ident_at(parser *P, size_t off, const char *name) {
    return P->cur + off < P->n && P->t[P->cur + off].type == TK_IDENT && tm_str_eq(P->t[P->cur + off].val, name);
}
static int is_statement(parser *P, const char *const *names) {
    if (!(P->cur + 1 < P->n && P->t[P->cur].type == TK_OPEN_STMT && P->t[P->cur + 1].type == TK_IDENT)) return 0;
    for (; *names; names++)
        if (tm_str_eq(P->t[P->cur + 1].val, *names)) return 1;
    return 0;
}

static const tm_token *expect(parser *P, int type, const char *what) {
    const tm_token *t = peek(P);
    if (t->type != type) perr(P, "expected %s", what);
    P->cur++;
    return t;
}

static void expect_ident(parser *P, const char *name) {
    if (!is_ident(P, name)) perr(P, "expected '%s'", name);
    P->cur++;
}

static tm_node **finish(parser *P, nvec *v) {
    (void)P;
    return v->v;
}

static tm_node *parse_any(parser *P);
static tm_node *parse_expression(parser *P);
static tm_node *parse_primary(parser *P);
static tm_node *parse_member(parser *P, tm_node *obj);
static tm_node *parse_call(parser *P, tm_node *callee);
static void parse_args(parser *P, int params, nvec *out);

static void enter(parser *P) {
    if (++P->depth > MAX_DEPTH) perr(P, "%s", "template nested too deeply");
}
static void leave(parser *P) { P->depth--; }

/* body statements until one of the named statements starts */
static void parse_body(parser *P, const char *const *until, nvec *out) {
    while (!is_statement(P, until)) {
        if (P->cur >= P->n) {
            char want[128] = "";
            for (const char *const *u = until; *u; u++) {
                if (*want) strncat(want, " or ", sizeof want - strlen(want) - 1);
                strncat(want, "{% ", sizeof want - strlen(want) - 1);
                strncat(want, *u, sizeof want - strlen(want) - 1);
                strncat(want, " %}", sizeof want - strlen(want) - 1);
            }
            perr(P, "missing %s", want);
        }
        nv_push(P->a, out, parse_any(P));
    }
}

static tm_node *parse_if(parser *P, const tm_token *at) {
    tm_node *x = mk(P, N_IF, at);
    enter(P);
    x->a = parse_expression(P);
    expect(P, TK_CLOSE_STMT, "'%}'");
    nvec body = {0}, alt = {0};
    static const char *const until[] = {"elif", "else", "endif", NULL};
    parse_body(P, until, &body);
    if (is_statement(P, (const char *const[]){"elif", NULL})) {
        P->cur++;
        const tm_token *e = &P->t[P->cur++];
        nv_push(P->a, &alt, parse_if(P, e));
    } else if (is_statement(P, (const char *const[]){"else", NULL})) {
        P->cur += 2;
        expect(P, TK_CLOSE_STMT, "'%}'");
        static const char *const until_end[] = {"endif", NULL};
        parse_body(P, until_end, &alt);
    }
    x->list = finish(P, &body);
    x->n = body.n;
    x->list2 = finish(P, &alt);
    x->n2 = alt.n;
    leave(P);
    return x;
}

static tm_node *parse_expression_sequence(parser *P, int primary) {
    const tm_token *at = peek(P);
    tm_node *first = primary ? parse_primary(P) : parse_expression(P);
    if (!is(P, TK_COMMA)) return first;
    nvec v = {0};
    nv_push(P->a, &v, first);
    while (1) {
        P->cur++;
        nv_push(P->a, &v, primary ? parse_primary(P) : parse_expression(P));
        if (!is(P, TK_COMMA)) break;
    }
    tm_node *t = mk(P, N_TUPLE, at);
    t->list = finish(P, &v);
    t->n = v.n;
    return t;
}

static tm_node *parse_set(parser *P, const tm_token *at) {
    tm_node *x = mk(P, N_SET, at);
    x->a = parse_expression_sequence(P, 0);
    if (is(P, TK_EQUALS)) {
        P->cur++;
        x->b = parse_expression_sequence(P, 0);
    } else {
        expect(P, TK_CLOSE_STMT, "'%}'");
        nvec body = {0};
        static const char *const until[] = {"endset", NULL};
        parse_body(P, until, &body);
        x->list = finish(P, &body);
        x->n = body.n;
        expect(P, TK_OPEN_STMT, "'{%'");
        expect_ident(P, "endset");
    }
    expect(P, TK_CLOSE_STMT, "'%}'");
    return x;
}

/* Does the macro body read `kwargs` or `varargs`? (bit 1, bit 2) */
static int uses_special(const tm_node *x) {
    if (!x) return 0;
    int f = 0;
    if (x->kind == N_IDENT) {
        if (tm_str_eq(x->s, "kwargs")) f |= 1;
        if (tm_str_eq(x->s, "varargs")) f |= 2;
    }
    f |= uses_special(x->a) | uses_special(x->b) | uses_special(x->c);
    for (size_t i = 0; i < x->n; i++) f |= uses_special(x->list[i]);
    for (size_t i = 0; i < x->n2; i++) f |= uses_special(x->list2[i]);
    return f;
}

static tm_node *parse_macro(parser *P, const tm_token *at) {
    tm_node *x = mk(P, N_MACRO, at);
    tm_node *name = parse_primary(P);
    if (name->kind != N_IDENT) perr(P, "%s", "expected an identifier after 'macro'");
    x->s = name->s;
    nvec params = {0};
    parse_args(P, 1, &params);
    expect(P, TK_CLOSE_STMT, "'%}'");
    nvec body = {0};
    static const char *const until[] = {"endmacro", NULL};
    parse_body(P, until, &body);
    x->list = finish(P, &params);
    x->n = params.n;
    x->list2 = finish(P, &body);
    x->n2 = body.n;
    int f = 0;
    for (size_t i = 0; i < body.n; i++) f |= uses_special(body.v[i]);
    for (size_t i = 0; i < params.n; i++) {
        tm_str pn = params.v[i]->s;
        if (tm_str_eq(pn, "kwargs")) f &= ~1;
        if (tm_str_eq(pn, "varargs")) f &= ~2;
    }
    x->flag = f;
    return x;
}

static tm_node *parse_for(parser *P, const tm_token *at) {
    tm_node *x = mk(P, N_FOR, at);
    enter(P);
    x->a = parse_expression_sequence(P, 1);
    if (x->a->kind != N_IDENT && x->a->kind != N_TUPLE) perr(P, "%s", "expected identifier/tuple for the loop variable");
    if (!is_ident(P, "in")) perr(P, "%s", "expected 'in' after the loop variable");
    P->cur++;
    x->b = parse_expression(P);
    expect(P, TK_CLOSE_STMT, "'%}'");
    nvec body = {0}, alt = {0};
    static const char *const until[] = {"endfor", "else", NULL};
    parse_body(P, until, &body);
    if (is_statement(P, (const char *const[]){"else", NULL})) {
        P->cur += 2;
        expect(P, TK_CLOSE_STMT, "'%}'");
        static const char *const until_end[] = {"endfor", NULL};
        parse_body(P, until_end, &alt);
    }
    x->list = finish(P, &body);
    x->n = body.n;
    x->list2 = finish(P, &alt);
    x->n2 = alt.n;
    leave(P);
    return x;
}

static tm_node *parse_statement(parser *P) {
    expect(P, TK_OPEN_STMT, "'{%'");
    const tm_token *t = peek(P);
    if (t->type != TK_IDENT) perr(P, "%s", "expected a statement name after '{%'");
    tm_node *x;
    P->cur++;
    if (tm_str_eq(t->val, "set")) {
        x = parse_set(P, t);
    } else if (tm_str_eq(t->val, "if")) {
        x = parse_if(P, t);
        expect(P, TK_OPEN_STMT, "'{%'");
        expect_ident(P, "endif");
        expect(P, TK_CLOSE_STMT, "'%}'");
    } else if (tm_str_eq(t->val, "macro")) {
        x = parse_macro(P, t);
        expect(P, TK_OPEN_STMT, "'{%'");
        expect_ident(P, "endmacro");
        expect(P, TK_CLOSE_STMT, "'%}'");
    } else if (tm_str_eq(t->val, "for")) {
        x = parse_for(P, t);
        expect(P, TK_OPEN_STMT, "'{%'");
        expect_ident(P, "endfor");
        expect(P, TK_CLOSE_STMT, "'%}'");
    } else if (tm_str_eq(t->val, "call")) {
        x = mk(P, N_CALLBLOCK, t);
        nvec params = {0}, cargs = {0}, body = {0};
        if (is(P, TK_LPAREN)) parse_args(P, 1, &params);
        tm_node *callee = parse_primary(P);
        if (callee->kind != N_IDENT) perr(P, "%s", "expected an identifier after 'call'");
        parse_args(P, 0, &cargs);
        expect(P, TK_CLOSE_STMT, "'%}'");
        static const char *const until[] = {"endcall", NULL};
        parse_body(P, until, &body);
        expect(P, TK_OPEN_STMT, "'{%'");
        expect_ident(P, "endcall");
        expect(P, TK_CLOSE_STMT, "'%}'");
        tm_node *call = mk(P, N_CALL, t);
        call->a = callee;
        call->list = finish(P, &cargs);
        call->n = cargs.n;
        x->a = call;
        x->list = finish(P, &params);
        x->n = params.n;
        x->list2 = finish(P, &body);
        x->n2 = body.n;
        int f = 0;
        for (size_t i = 0; i < body.n; i++) f |= uses_special(body.v[i]);
        x->flag = f;
    } else if (tm_str_eq(t->val, "break") || tm_str_eq(t->val, "continue")) {
        x = mk(P, tm_str_eq(t->val, "break") ? N_BREAK : N_CONTINUE, t);
        expect(P, TK_CLOSE_STMT, "'%}'");
    } else if (tm_str_eq(t->val, "filter")) {
        x = mk(P, N_FILTERBLOCK, t);
        tm_node *f = parse_primary(P);
        if (f->kind == N_IDENT && is(P, TK_LPAREN)) f = parse_call(P, f);
        x->b = f;
        expect(P, TK_CLOSE_STMT, "'%}'");
        nvec body = {0};
        static const char *const until[] = {"endfilter", NULL};
        parse_body(P, until, &body);
        expect(P, TK_OPEN_STMT, "'{%'");
        expect_ident(P, "endfilter");
        expect(P, TK_CLOSE_STMT, "'%}'");
        x->list = finish(P, &body);
        x->n = body.n;
    } else {
        P->cur--;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(t->val.n < 60 ? t->val.n : 60), t->val.p);
        perr(P, "unknown or unsupported statement '%s'", name);
    }
    return x;
}

static tm_node *parse_any(parser *P) {
    const tm_token *t = peek(P);
    switch (t->type) {
    case TK_COMMENT: {
        P->cur++;
        return mk(P, N_COMMENT, t);
    }
    case TK_TEXT: {
        P->cur++;
        tm_node *x = mk(P, N_STR, t);
        x->s = t->val;
        return x;
    }
    case TK_OPEN_STMT:
        return parse_statement(P);
    case TK_OPEN_EXPR: {
        P->cur++;
        tm_node *x = parse_expression(P);
        expect(P, TK_CLOSE_EXPR, "'}}'");
        return x;
    }
    default:
        perr(P, "%s", "unexpected token");
    }
}

/* ---- expressions ---- */

static tm_node *binary(parser *P, const tm_token *at, int op, tm_node *l, tm_node *r) {
    tm_node *x = mk(P, N_BINARY, at);
    x->op = op;
    x->a = l;
    x->b = r;
    return x;
}

static tm_node *parse_or(parser *P);

static tm_node *parse_if_expr(parser *P) {
    tm_node *a = parse_or(P);
    if (is_ident(P, "if")) {
        const tm_token *at = &P->t[P->cur++];
        tm_node *test = parse_or(P);
        if (is_ident(P, "else")) {
            P->cur++;
            tm_node *f = parse_if_expr(P);
            tm_node *x = mk(P, N_TERNARY, at);
            x->a = test;
            x->b = a;
            x->c = f;
            return x;
        }
        tm_node *x = mk(P, N_SELECT, at);
        x->a = a;
        x->b = test;
        return x;
    }
    return a;
}

static tm_node *parse_expression(parser *P) {
    enter(P);
    tm_node *x = parse_if_expr(P);
    leave(P);
    return x;
}

static tm_node *parse_not(parser *P);
static tm_node *parse_and(parser *P) {
    tm_node *l = parse_not(P);
    size_t links = 0;
    while (is_ident(P, "and")) {
        enter(P);
        links++;
        const tm_token *at = &P->t[P->cur++];
        l = binary(P, at, OP_AND, l, parse_not(P));
    }
    P->depth -= (int)links;
    return l;
}

static tm_node *parse_or(parser *P) {
    tm_node *l = parse_and(P);
    size_t links = 0;
    while (is_ident(P, "or")) {
        enter(P);
        links++;
        const tm_token *at = &P->t[P->cur++];
        l = binary(P, at, OP_OR, l, parse_and(P));
    }
    P->depth -= (int)links;
    return l;
}

static tm_node *parse_comparison(parser *P);
static tm_node *parse_not(parser *P) {
    tm_node *right = NULL;
    while (is_ident(P, "not")) {
        const tm_token *at = &P->t[P->cur++];
        enter(P);
        tm_node *arg = parse_not(P);
        leave(P);
        right = mk(P, N_UNARY, at);
        right->op = OP_NOT;
        right->a = arg;
    }
    return right ? right : parse_comparison(P);
}

static tm_node *parse_additive(parser *P);
static tm_node *parse_comparison(parser *P) {
    tm_node *l = parse_additive(P);
    size_t links = 0;
    for (;;) {
        const tm_token *at = P->cur < P->n ? &P->t[P->cur] : NULL;
        int op;
        if (is_ident(P, "not") && is_ident_at(P, 1, "in")) {
            op = OP_NOT_IN;
            P->cur += 2;
        } else if (is_ident(P, "in")) {
            op = OP_IN;
            P->cur++;
        } else if (is(P, TK_CMP)) {
            tm_str v = P->t[P->cur].val;
            op = tm_str_eq(v, "==") ? OP_EQ : tm_str_eq(v, "!=") ? OP_NE : tm_str_eq(v, "<") ? OP_LT
               : tm_str_eq(v, ">") ? OP_GT : tm_str_eq(v, "<=") ? OP_LE : OP_GE;
            P->cur++;
        } else {
            break;
        }
        enter(P);
        links++;
        l = binary(P, at, op, l, parse_additive(P));
    }
    P->depth -= (int)links;
    return l;
}

static tm_node *parse_multiplicative(parser *P);
static tm_node *parse_additive(parser *P) {
    tm_node *l = parse_multiplicative(P);
    size_t links = 0;
    while (is(P, TK_ADD)) {
        enter(P);
        links++;
        const tm_token *at = &P->t[P->cur++];
        int op = at->val.p[0] == '+' ? OP_ADD : at->val.p[0] == '-' ? OP_SUB : OP_CONCAT;
        l = binary(P, at, op, l, parse_multiplicative(P));
    }
    P->depth -= (int)links;
    return l;
}

static tm_node *parse_power(parser *P);
static tm_node *parse_multiplicative(parser *P) {
    tm_node *l = parse_power(P);
    size_t links = 0;
    while (is(P, TK_MUL)) {
        enter(P);
        links++;
        const tm_token *at = &P->t[P->cur++];
        int op = tm_str_eq(at->val, "*") ? OP_MUL : tm_str_eq(at->val, "/") ? OP_DIV
               : tm_str_eq(at->val, "//") ? OP_FLOORDIV : OP_MOD;
        l = binary(P, at, op, l, parse_power(P));
    }
    P->depth -= (int)links;
    return l;
}

static tm_node *parse_test(parser *P);
static tm_node *parse_power(parser *P) {
    tm_node *l = parse_test(P);
    size_t links = 0;
    while (is(P, TK_POW)) {
        enter(P);
        links++;
        const tm_token *at = &P->t[P->cur++];
        l = binary(P, at, OP_POW, l, parse_test(P));
    }
    P->depth -= (int)links;
    return l;
}

static tm_node *parse_filter(parser *P);
static tm_node *parse_test(parser *P) {
    tm_node *operand = parse_filter(P);
    size_t links = 0;
    while (is_ident(P, "is")) {
        enter(P);
        links++;
        const tm_token *at = &P->t[P->cur++];
        int negate = is_ident(P, "not");
        if (negate) P->cur++;
        tm_node *name = parse_primary(P);
        if (name->kind != N_IDENT) perr(P, "%s", "expected an identifier for the test");
        tm_node *x = mk(P, N_TEST, at);
        x->a = operand;
        x->s = name->s;
        x->flag = negate;
        operand = x;
    }
    P->depth -= (int)links;
    return operand;
}

static tm_node *parse_unary_sign(parser *P);
static tm_node *parse_filter(parser *P) {
    tm_node *operand = parse_unary_sign(P);
    size_t links = 0;
    while (is(P, TK_PIPE)) {
        enter(P);
        links++;
        const tm_token *at = &P->t[P->cur++];
        tm_node *f = parse_primary(P);
        if (f->kind != N_IDENT) perr(P, "%s", "expected an identifier for the filter");
        if (is(P, TK_LPAREN)) f = parse_call(P, f);
        tm_node *x = mk(P, N_FILTER, at);
        x->line = f->line; /* errors point at the filter's name */
        x->col = f->col;
        x->a = operand;
        x->b = f;
        operand = x;
    }
    P->depth -= (int)links;
    return operand;
}

static tm_node *parse_call_member(parser *P) {
    tm_node *m = parse_member(P, parse_primary(P));
    if (is(P, TK_LPAREN)) return parse_call(P, m);
    return m;
}

static tm_node *parse_unary_sign(parser *P) {
    const tm_token *t = peek(P);
    if ((t->type == TK_UNARY || t->type == TK_ADD) && (tm_str_eq(t->val, "-") || tm_str_eq(t->val, "+"))) {
        P->cur++;
        enter(P);
        tm_node *arg = parse_unary_sign(P);
        leave(P);
        tm_node *x = mk(P, N_UNARY, t);
        x->op = t->val.p[0] == '-' ? OP_NEG : OP_POS;
        x->a = arg;
        return x;
    }
    return parse_call_member(P);
}

static tm_node *parse_call(parser *P, tm_node *callee) {
    enter(P);
    const tm_token *at = peek(P);
    tm_node *x = mk(P, N_CALL, at);
    x->line = callee->line;
    x->col = callee->col;
    x->a = callee;
    nvec args = {0};
    parse_args(P, 0, &args);
    x->list = finish(P, &args);
    x->n = args.n;
    x = parse_member(P, x);
    if (is(P, TK_LPAREN)) x = parse_call(P, x);
    leave(P);
    return x;
}

static void parse_args(parser *P, int params, nvec *out) {
    expect(P, TK_LPAREN, "'(' for the argument list");
    int saw_kw = 0, saw_spread = 0;
    while (!is(P, TK_RPAREN)) {
        const tm_token *at = peek(P);
        int kw_spread = at->type == TK_POW;
        int spread = at->type == TK_MUL && tm_str_eq(at->val, "*");
        if (params && (kw_spread || spread)) perr(P, "%s", "argument unpacking is not allowed in parameter declarations");
        if (kw_spread) {
            P->cur++;
            tm_node *x = mk(P, N_KWSPREAD, at);
            x->a = parse_expression(P);
            nv_push(P->a, out, x);
            if (is(P, TK_COMMA)) P->cur++;
            if (!is(P, TK_RPAREN)) perr(P, "%s", "'**' must be applied to the final argument");
            break;
        }
        tm_node *arg;
        if (spread) {
            if (saw_spread) perr(P, "%s", "only one '*' argument unpacking is allowed");
            saw_spread = 1;
            P->cur++;
            arg = mk(P, N_SPREAD, at);
            arg->a = parse_expression(P);
        } else {
            arg = parse_expression(P);
            if (is(P, TK_EQUALS)) {
                P->cur++;
                if (arg->kind != N_IDENT)
                    perr(P, "%s", params ? "expected an identifier for a parameter" : "expected an identifier for a keyword argument");
                tm_node *kw = mk(P, N_KWARG, at);
                kw->s = arg->s;
                kw->a = parse_expression(P);
                arg = kw;
            }
            if (params) {
                if (arg->kind != N_IDENT && arg->kind != N_KWARG) perr(P, "%s", "expected an identifier for a parameter");
                for (size_t i = 0; i < out->n; i++)
                    if (out->v[i]->s.n == arg->s.n && memcmp(out->v[i]->s.p, arg->s.p, arg->s.n) == 0)
                        perr(P, "%s", "duplicate parameter name");
            }
            if (arg->kind == N_KWARG) saw_kw = 1;
            else if (saw_kw) perr(P, "%s", params ? "non-default argument follows default argument"
                                                  : "positional arguments must come before keyword arguments");
            else if (saw_spread) perr(P, "%s", "positional arguments must not follow '*' argument unpacking");
        }
        nv_push(P->a, out, arg);
        if (is(P, TK_COMMA)) P->cur++;
    }
    expect(P, TK_RPAREN, "')' to close the argument list");
}

static tm_node *parse_member_args(parser *P) {
    const tm_token *at = peek(P);
    tm_node *slots[4] = {0};
    size_t n = 0;
    int slice = 0;
    while (!is(P, TK_RBRACKET)) {
        if (P->cur >= P->n) perr(P, "%s", "missing ']'");
        if (n >= 4) perr(P, "%s", "expected 0-3 arguments for slice expression");
        if (is(P, TK_COLON)) {
            slots[n++] = NULL;
            P->cur++;
            slice = 1;
        } else {
            slots[n++] = parse_expression(P);
            if (is(P, TK_COLON)) {
                P->cur++;
                slice = 1;
            }
        }
    }
    if (n == 0) perr(P, "%s", "expected at least one argument for member/slice expression");
    if (slice) {
        if (n > 3) perr(P, "%s", "expected 0-3 arguments for slice expression");
        tm_node *x = mk(P, N_SLICE, at);
        x->a = slots[0];
        x->b = n > 1 ? slots[1] : NULL;
        x->c = n > 2 ? slots[2] : NULL;
        return x;
    }
    return slots[0];
}

static tm_node *parse_member(parser *P, tm_node *obj) {
    size_t links = 0;
    while (is(P, TK_DOT) || is(P, TK_LBRACKET)) {
        enter(P);
        links++;
        const tm_token *op = &P->t[P->cur++];
        tm_node *x = mk(P, N_MEMBER, op);
        x->line = obj->line;
        x->col = obj->col;
        x->a = obj;
        if (op->type == TK_LBRACKET) {
            x->flag = 1;
            enter(P);
            x->b = parse_member_args(P);
            leave(P);
            expect(P, TK_RBRACKET, "']'");
        } else {
            x->b = parse_primary(P);
            if (x->b->kind != N_IDENT && x->b->kind != N_INT) perr(P, "%s", "expected an identifier or integer after '.'");
        }
        obj = x;
    }
    P->depth -= (int)links;
    return obj;
}

static tm_node *parse_primary(parser *P) {
    const tm_token *t = peek(P);
    P->cur++;
    switch (t->type) {
    case TK_NUM: {
        int is_float = memchr(t->val.p, '.', t->val.n) != NULL;
        tm_node *x = mk(P, is_float ? N_FLOAT : N_INT, t);
        x->num = strtod(t->val.p, NULL);
        return x;
    }
    case TK_STR: {
        tm_buf b = {0};
        tm_buf_put(P->a, &b, t->val.p, t->val.n);
        while (is(P, TK_STR)) {
            tm_buf_put(P->a, &b, P->t[P->cur].val.p, P->t[P->cur].val.n);
            P->cur++;
        }
        tm_node *x = mk(P, N_STR, t);
        x->s = (tm_str){b.p, b.n};
        return x;
    }
    case TK_IDENT: {
        tm_node *x = mk(P, N_IDENT, t);
        x->s = t->val;
        return x;
    }
    case TK_LPAREN: {
        enter(P);
        tm_node *x = parse_expression_sequence(P, 0);
        leave(P);
        expect(P, TK_RPAREN, "')'");
        return x;
    }
    case TK_LBRACKET: {
        enter(P);
        nvec v = {0};
        while (!is(P, TK_RBRACKET)) {
            if (P->cur >= P->n) perr(P, "%s", "missing ']'");
            nv_push(P->a, &v, parse_expression(P));
            if (is(P, TK_COMMA)) P->cur++;
        }
        P->cur++;
        leave(P);
        tm_node *x = mk(P, N_ARRAY, t);
        x->list = finish(P, &v);
        x->n = v.n;
        return x;
    }
    case TK_LBRACE: {
        enter(P);
        nvec k = {0}, v = {0};
        while (!is(P, TK_RBRACE)) {
            if (P->cur >= P->n) perr(P, "%s", "missing '}'");
            nv_push(P->a, &k, parse_expression(P));
            expect(P, TK_COLON, "':' between key and value in object literal");
            nv_push(P->a, &v, parse_expression(P));
            if (is(P, TK_COMMA)) P->cur++;
        }
        P->cur++;
        leave(P);
        tm_node *x = mk(P, N_OBJECT, t);
        x->list = finish(P, &k);
        x->n = k.n;
        x->list2 = finish(P, &v);
        x->n2 = v.n;
        return x;
    }
    default:
        P->cur--;
        perr(P, "%s", "unexpected token in expression");
    }
}

tm_program *tm_parse(tm_arena *a, const tm_token *toks, size_t ntoks) {
    parser P = {.a = a, .t = toks, .n = ntoks};
    nvec body = {0};
    while (P.cur < P.n) nv_push(a, &body, parse_any(&P));
    tm_program *p = tm_alloc(a, sizeof *p);
    p->body = body.v;
    p->n = body.n;
    return p;
}
