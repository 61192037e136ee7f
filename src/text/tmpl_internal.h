/*
 * tmpl_internal.h — what the parts of the chat template interpreter share:
 * the arena every allocation comes from, the tokens, the syntax tree and the
 * runtime values. Only src/text/tmpl_*.c and template.c include it.
 *
 * Errors inside the interpreter jump (longjmp) to the entry point that set up
 * the arena; since everything lives in the arena, dropping it frees all.
 */
#ifndef MOE_TEXT_TMPL_INTERNAL_H
#define MOE_TEXT_TMPL_INTERNAL_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

#include "moe.h"
#include "util/error.h"

/* ---- arena ---- */

typedef struct tm_block tm_block;

typedef struct tm_arena {
    tm_block *blocks;
    size_t total, limit; /* bytes taken from malloc, and the most allowed */
    jmp_buf *fail;       /* where to go when memory runs out */
    moe_error *err;
} tm_arena;

void *tm_alloc(tm_arena *a, size_t n); /* zeroed; never NULL (jumps instead) */
char *tm_memdup(tm_arena *a, const char *s, size_t n); /* adds a NUL */
void tm_arena_free(tm_arena *a);
_Noreturn void tm_fail(tm_arena *a, const char *fmt, ...) MOE_PRINTF(2, 3);

typedef struct tm_str {
    const char *p;
    size_t n;
} tm_str;

int tm_str_eq(tm_str a, const char *b);

/* A byte string under construction, in the arena. */
typedef struct tm_buf {
    char *p;
    size_t n, cap;
} tm_buf;

void tm_buf_put(tm_arena *a, tm_buf *b, const char *s, size_t n);
void tm_buf_puts(tm_arena *a, tm_buf *b, const char *s);
void tm_buf_printf(tm_arena *a, tm_buf *b, const char *fmt, ...) MOE_PRINTF(3, 4);

/* ---- unicode helpers (JavaScript semantics) ---- */

/* Decodes one UTF-8 sequence at s[0..n); invalid bytes decode as themselves
 * (one byte, value 0xDC80 + byte, never a JS whitespace). Returns its length. */
size_t tm_utf8_next(const char *s, size_t n, uint32_t *cp);
int tm_js_space(uint32_t cp); /* /\s/ in JavaScript */
size_t tm_utf16_len(const char *s, size_t n);

/* ---- lexer ---- */

enum tm_tok_type {
    TK_TEXT, TK_NUM, TK_STR, TK_IDENT, TK_EQUALS, TK_LPAREN, TK_RPAREN,
    TK_OPEN_STMT, TK_CLOSE_STMT, TK_OPEN_EXPR, TK_CLOSE_EXPR,
    TK_LBRACKET, TK_RBRACKET, TK_LBRACE, TK_RBRACE, TK_COMMA, TK_DOT, TK_COLON, TK_PIPE,
    TK_ADD,   /* + - ~ */
    TK_MUL,   /* * / // % */
    TK_POW,   /* ** */
    TK_CMP,   /* < > <= >= == != */
    TK_UNARY, /* a lone unary + or - */
    TK_COMMENT,
};

typedef struct tm_token {
    int type;
    tm_str val;
    int line, col;
} tm_token;

/* Preprocesses (trim_blocks, lstrip_blocks, the trailing newline, generation
 * tags) and tokenizes src; tokens carry line:column of the original. Jumps
 * on a syntax error. */
void tm_lex(tm_arena *a, const char *src, size_t n, tm_token **toks, size_t *ntoks);

/* ---- syntax tree ---- */

enum tm_node_kind {
    /* expressions */
    N_STR, N_INT, N_FLOAT, N_IDENT, N_ARRAY, N_TUPLE, N_OBJECT,
    N_MEMBER,  /* a[b] or a.b: a, b; flag = computed */
    N_CALL,    /* a(list) */
    N_BINARY,  /* a op b */
    N_UNARY,   /* op a */
    N_FILTER,  /* a | b (b: ident or call) */
    N_TEST,    /* a is [not] s; flag = negate */
    N_SELECT,  /* a if b (no else) */
    N_TERNARY, /* b if a else c */
    N_SLICE,   /* [a:b:c], any may be NULL */
    N_KWARG,   /* s = a */
    N_SPREAD,  /* *a */
    N_KWSPREAD,/* **a */
    /* statements */
    N_IF,      /* if a: list else list2 */
    N_FOR,     /* for a in b: list else list2 */
    N_SET,     /* set a = b, or set a: list */
    N_MACRO,   /* macro s(list): list2 */
    N_BREAK, N_CONTINUE,
    N_CALLBLOCK,   /* call(list) a: list2 */
    N_FILTERBLOCK, /* filter b: list */
    N_COMMENT,
};

enum tm_op {
    OP_NONE, OP_ADD, OP_SUB, OP_CONCAT, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW,
    OP_EQ, OP_NE, OP_LT, OP_GT, OP_LE, OP_GE, OP_IN, OP_NOT_IN, OP_AND, OP_OR, OP_NOT,
    OP_NEG, OP_POS,
};

typedef struct tm_node tm_node;
struct tm_node {
    int kind, op, flag;
    int line, col;
    tm_str s;
    double num;
    tm_node *a, *b, *c;
    tm_node **list;
    size_t n;
    tm_node **list2;
    size_t n2;
};

typedef struct tm_program {
    tm_node **body;
    size_t n;
} tm_program;

/* Parses the tokens; jumps on a syntax error. */
tm_program *tm_parse(tm_arena *a, const tm_token *toks, size_t ntoks);

/* ---- runtime values ---- */

enum tm_vtype { V_UNDEF, V_NULL, V_BOOL, V_INT, V_FLOAT, V_STR, V_ARRAY, V_OBJECT, V_NS, V_FUNC };

typedef struct tm_value tm_value;
typedef struct tm_list tm_list;
typedef struct tm_map tm_map;
typedef struct tm_func tm_func;

struct tm_list { /* items of an array or tuple; shared by reference */
    tm_value **v;
    size_t n, cap;
};

struct tm_map { /* insertion-ordered, like a JavaScript Map */
    tm_str *k;
    tm_value **v;
    size_t n, cap;
};

struct tm_value {
    uint8_t type;
    uint8_t tuple;  /* V_ARRAY: a TupleValue */
    uint8_t kwargs; /* V_OBJECT: a KeywordArgumentsValue */
    int b;          /* V_BOOL */
    double num;     /* V_INT, V_FLOAT */
    tm_str s;       /* V_STR */
    tm_list *list;  /* V_ARRAY */
    tm_map *map;    /* V_OBJECT, V_NS */
    tm_func *fn;    /* V_FUNC */
};

tm_value *tm_v_str(tm_arena *a, const char *p, size_t n); /* copies */
tm_value *tm_v_str_ref(tm_arena *a, const char *p, size_t n); /* does not copy */
tm_value *tm_v_num(tm_arena *a, int type, double x);
tm_value *tm_v_array(tm_arena *a, tm_list *l);
tm_value *tm_v_object(tm_arena *a, tm_map *m);
tm_list *tm_list_new(tm_arena *a, size_t cap);
void tm_list_push(tm_arena *a, tm_list *l, tm_value *v);
tm_map *tm_map_new(tm_arena *a);
tm_value *tm_map_get(const tm_map *m, const char *k, size_t kn);
void tm_map_set(tm_arena *a, tm_map *m, const char *k, size_t kn, tm_value *v);

/* Shared constants; read-only (writing through these pointers is a bug). */
extern const tm_value tm_undef, tm_null, tm_true, tm_false;
#define TM_UNDEF ((tm_value *)&tm_undef)
#define TM_NULL ((tm_value *)&tm_null)
#define TM_TRUE ((tm_value *)&tm_true)
#define TM_FALSE ((tm_value *)&tm_false)

/* Converts cJSON-parsed input into values, with JavaScript's key order. */
struct cJSON;
tm_value *tm_from_json(tm_arena *a, const struct cJSON *j);

/* ---- evaluation ---- */

typedef struct tm_env tm_env;
struct tm_env { /* a scope; lookups walk up to the parents */
    tm_env *parent;
    tm_map vars;
};

typedef struct tm_loopjb tm_loopjb;
struct tm_loopjb { /* where {% break %} and {% continue %} jump */
    jmp_buf jb;
    tm_loopjb *prev;
};

typedef struct tm_ctx {
    tm_arena *a;
    long long now; /* for strftime_now */
    tm_loopjb *loop;
    int depth;     /* macro calls in progress */
    int edepth;    /* evaluation recursion, bounded to protect the stack */
} tm_ctx;

enum tm_fkind { F_MACRO, F_CALLER, F_NAMESPACE, F_RAISE, F_RANGE, F_STRFTIME, F_METHOD };

struct tm_func {
    int kind;
    const tm_node *node; /* F_MACRO, F_CALLER */
    tm_env *closure;     /* F_CALLER */
    tm_value *self;      /* F_METHOD: the string or object */
    tm_str method;       /* F_METHOD */
};

_Noreturn void tm_rfail(tm_ctx *c, const tm_node *at, const char *fmt, ...) MOE_PRINTF(3, 4);
const char *tm_type_name(const tm_value *v); /* the reference's names: "StringValue", ... */
int tm_truthy(const tm_value *v);

/* RuntimeValue.toString(): what {{ v }} prints */
void tm_rv_string(tm_ctx *c, const tm_node *at, const tm_value *v, tm_buf *out);
/* v.value.toString(): what + and ~ concatenate */
void tm_js_string(tm_ctx *c, const tm_node *at, const tm_value *v, tm_buf *out);
/* Number.prototype.toString() */
void tm_js_number(double x, char out[40]);

typedef struct tm_json_opts {
    int indent; /* 0: none */
    int ascii;  /* ensure_ascii */
    const char *item_sep, *key_sep; /* NULL: the defaults */
} tm_json_opts;
void tm_to_json(tm_ctx *c, const tm_node *at, const tm_value *v, const tm_json_opts *o, int depth,
                int undef_null, tm_buf *out);

int tm_loose_eq(tm_ctx *c, const tm_node *at, const tm_value *x, const tm_value *y); /* JS == */
int tm_strict_eq(const tm_value *x, const tm_value *y);                             /* JS === */
/* compareRuntimeValues() of the reference (sort, dictsort) */
int tm_compare(tm_ctx *c, const tm_node *at, const tm_value *x, const tm_value *y, int case_sensitive);

/* ASCII-only case mapping (non-ASCII text fails with a clear error). */
tm_value *tm_case(tm_ctx *c, const tm_node *at, const tm_value *s, int upper, const char *what);

tm_value *tm_eval(tm_ctx *c, tm_env *e, const tm_node *x);
void tm_eval_args(tm_ctx *c, tm_env *e, tm_node **args, size_t n, tm_list *pos, tm_map *kw, const tm_node *at);
tm_value *tm_call(tm_ctx *c, tm_env *e, tm_value *fn, tm_list *args, const tm_node *at);
tm_value *tm_member_builtin(tm_ctx *c, tm_value *obj, tm_str name); /* NULL: none */
tm_value *tm_apply_filter(tm_ctx *c, tm_env *e, tm_value *operand, const tm_node *filter, const tm_node *at);
int tm_run_test(tm_ctx *c, const tm_node *at, tm_str name, tm_value *operand, tm_value *arg);
int tm_has_test(tm_str name);
tm_value *tm_call_global(tm_ctx *c, tm_value *fn, tm_list *args, const tm_node *at);
tm_value *tm_call_method(tm_ctx *c, tm_value *fn, tm_list *args, const tm_node *at);

typedef struct tm_render_in {
    tm_map *vars;  /* the user's variables */
    long long now; /* for strftime_now */
} tm_render_in;

/* Renders the program; jumps on an error. */
void tm_eval_program(tm_arena *a, const tm_program *p, const tm_render_in *in, tm_buf *out);

#endif
