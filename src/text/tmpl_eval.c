/*
 * tmpl_eval.c — runs a parsed chat template, statement by statement, with the
 * reference's scoping rules: a for loop has one scope for all its iterations
 * (a `set` inside it is gone after the loop), if blocks share their parent's,
 * macros see the variables of the place they are called from, and only a
 * namespace's attributes can be assigned. {% break %} and {% continue %}
 * discard what the current iteration printed, as the reference does.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "text/tmpl_internal.h"

#define MAX_CALL_DEPTH 100
#define MAX_LOOP_ITEMS 10000000
#define MAX_EVAL_DEPTH 3000

/* ---- scopes ---- */

static tm_env *env_new(tm_ctx *c, tm_env *parent) {
    tm_env *e = tm_alloc(c->a, sizeof *e);
    e->parent = parent;
    return e;
}

static tm_value *env_get(tm_env *e, tm_str name) {
    for (; e; e = e->parent) {
        tm_value *v = tm_map_get(&e->vars, name.p, name.n);
        if (v) return v;
    }
    return TM_UNDEF;
}

static void env_set(tm_ctx *c, tm_env *e, tm_str name, tm_value *v) { tm_map_set(c->a, &e->vars, name.p, name.n, v); }

static void exec_block(tm_ctx *c, tm_env *e, tm_node *const *body, size_t n, tm_buf *out);

static tm_value *render_block(tm_ctx *c, tm_env *e, tm_node *const *body, size_t n) {
    tm_buf b = {0};
    tm_buf_put(c->a, &b, "", 0);
    exec_block(c, e, body, n, &b);
    return tm_v_str_ref(c->a, b.p, b.n);
}

/* ---- operators ---- */

static int is_num(const tm_value *v) { return v->type == V_INT || v->type == V_FLOAT; }

static tm_value *concat(tm_ctx *c, const tm_node *at, const tm_value *l, const tm_value *r) {
    tm_buf b = {0};
    tm_buf_put(c->a, &b, "", 0);
    tm_js_string(c, at, l, &b);
    tm_js_string(c, at, r, &b);
    return tm_v_str_ref(c->a, b.p, b.n);
}

static int str_contains(const tm_value *hay, const tm_value *needle) {
    if (needle->s.n == 0) return 1;
    if (needle->s.n > hay->s.n) return 0;
    return memmem(hay->s.p, hay->s.n, needle->s.p, needle->s.n) != NULL;
}

static const char *op_name(int op) {
    static const char *names[] = {"", "+", "-", "~", "*", "/", "//", "%", "**", "==", "!=", "<", ">", "<=", ">=",
                                  "in", "not in", "and", "or", "not", "-", "+"};
    return op >= 0 && op < (int)(sizeof names / sizeof names[0]) ? names[op] : "?";
}

static tm_value *eval_binary(tm_ctx *c, tm_env *e, const tm_node *x) {
    tm_value *l = tm_eval(c, e, x->a);
    if (x->op == OP_AND) return tm_truthy(l) ? tm_eval(c, e, x->b) : l;
    if (x->op == OP_OR) return tm_truthy(l) ? l : tm_eval(c, e, x->b);
    tm_value *r = tm_eval(c, e, x->b);
    if (x->op == OP_EQ) return tm_loose_eq(c, x, l, r) ? TM_TRUE : TM_FALSE;
    if (x->op == OP_NE) return tm_loose_eq(c, x, l, r) ? TM_FALSE : TM_TRUE;
    int op = x->op;
    if (l->type == V_UNDEF || r->type == V_UNDEF) {
        if (r->type == V_UNDEF && (op == OP_IN || op == OP_NOT_IN)) return op == OP_NOT_IN ? TM_TRUE : TM_FALSE;
        tm_rfail(c, x, "Cannot perform operation %s on undefined values", op_name(op));
    }
    if (l->type == V_NULL || r->type == V_NULL) tm_rfail(c, x, "Cannot perform operation on null values (operator %s)", op_name(op));
    if (op == OP_CONCAT) return concat(c, x, l, r);
    int nl = is_num(l) || l->type == V_BOOL, nr = is_num(r) || r->type == V_BOOL;
    if (op == OP_POW && nl && nr) {
        double a = l->type == V_BOOL ? l->b : l->num, b = r->type == V_BOOL ? r->b : r->num;
        if (a == 0 && b < 0) tm_rfail(c, x, "0.0 cannot be raised to a negative power");
        double res = pow(a, b);
        if (!isfinite(res)) tm_rfail(c, x, "Exponentiation result is not a finite real number");
        int is_float = l->type == V_FLOAT || r->type == V_FLOAT || b < 0;
        return tm_v_num(c->a, is_float ? V_FLOAT : V_INT, res);
    }
    if (is_num(l) && is_num(r)) {
        double a = l->num, b = r->num;
        int fl = l->type == V_FLOAT || r->type == V_FLOAT;
        switch (op) {
        case OP_ADD: return tm_v_num(c->a, fl ? V_FLOAT : V_INT, a + b);
        case OP_SUB: return tm_v_num(c->a, fl ? V_FLOAT : V_INT, a - b);
        case OP_MUL: return tm_v_num(c->a, fl ? V_FLOAT : V_INT, a * b);
        case OP_DIV: return tm_v_num(c->a, V_FLOAT, a / b);
        case OP_FLOORDIV: return tm_v_num(c->a, fl ? V_FLOAT : V_INT, floor(a / b));
        case OP_MOD: return tm_v_num(c->a, fl ? V_FLOAT : V_INT, fmod(a, b));
        case OP_LT: return a < b ? TM_TRUE : TM_FALSE;
        case OP_GT: return a > b ? TM_TRUE : TM_FALSE;
        case OP_GE: return a >= b ? TM_TRUE : TM_FALSE;
        case OP_LE: return a <= b ? TM_TRUE : TM_FALSE;
        default: break;
        }
    } else if (l->type == V_ARRAY && r->type == V_ARRAY) {
        if (op == OP_ADD) {
            tm_list *nl2 = tm_list_new(c->a, l->list->n + r->list->n);
            for (size_t i = 0; i < l->list->n; i++) tm_list_push(c->a, nl2, l->list->v[i]);
            for (size_t i = 0; i < r->list->n; i++) tm_list_push(c->a, nl2, r->list->v[i]);
            return tm_v_array(c->a, nl2);
        }
    } else if (r->type == V_ARRAY) {
        if (op == OP_IN || op == OP_NOT_IN) {
            int member = 0;
            for (size_t i = 0; i < r->list->n && !member; i++) member = tm_strict_eq(r->list->v[i], l);
            return member == (op == OP_IN) ? TM_TRUE : TM_FALSE;
        }
    }
    if ((l->type == V_STR || r->type == V_STR) && op == OP_ADD) return concat(c, x, l, r);
    if (l->type == V_STR && r->type == V_STR && (op == OP_IN || op == OP_NOT_IN))
        return str_contains(r, l) == (op == OP_IN) ? TM_TRUE : TM_FALSE;
    if (l->type == V_STR && r->type == V_OBJECT && (op == OP_IN || op == OP_NOT_IN)) {
        int has = tm_map_get(r->map, l->s.p, l->s.n) != NULL;
        return has == (op == OP_IN) ? TM_TRUE : TM_FALSE;
    }
    tm_rfail(c, x, "Unknown operator \"%s\" between %s and %s", op_name(op), tm_type_name(l), tm_type_name(r));
}

static tm_value *eval_unary(tm_ctx *c, tm_env *e, const tm_node *x) {
    tm_value *v = tm_eval(c, e, x->a);
    if (x->op == OP_NOT) return tm_truthy(v) ? TM_FALSE : TM_TRUE;
    double sign = x->op == OP_NEG ? -1 : 1;
    if (is_num(v) || v->type == V_BOOL) {
        double val = v->type == V_BOOL ? v->b : v->num;
        return tm_v_num(c->a, v->type == V_FLOAT ? V_FLOAT : V_INT, sign * val);
    }
    tm_rfail(c, x, "Unknown operator \"%s\" for %s", op_name(x->op), tm_type_name(v));
}

/* ---- member access and slices ---- */

/* JavaScript's slice() helper of the reference, on indices */
static void slice_range(size_t len, const tm_value *s0, const tm_value *s1, const tm_value *s2,
                        tm_list *idx_out, tm_ctx *c) {
    double n = (double)len;
    double step = s2->type == V_UNDEF ? 1 : s2->num;
    int dir = step > 0 ? 1 : step < 0 ? -1 : 0;
    double start, stop;
    if (dir >= 0) {
        start = s0->type == V_UNDEF ? 0 : s0->num;
        start = start < 0 ? fmax(n + start, 0) : fmin(start, n);
        stop = s1->type == V_UNDEF ? n : s1->num;
        stop = stop < 0 ? fmax(n + stop, 0) : fmin(stop, n);
    } else {
        start = s0->type == V_UNDEF ? n - 1 : s0->num;
        start = start < 0 ? fmax(n + start, -1) : fmin(start, n - 1);
        stop = s1->type == V_UNDEF ? -1 : s1->num;
        stop = stop < -1 ? fmax(n + stop, -1) : fmin(stop, n - 1);
    }
    for (double i = start; dir * i < dir * stop; i += step)
        tm_list_push(c->a, idx_out, tm_v_num(c->a, V_INT, i));
}

static tm_value *eval_slice(tm_ctx *c, tm_env *e, tm_value *obj, const tm_node *s) {
    if (obj->type != V_ARRAY && obj->type != V_STR) tm_rfail(c, s, "Slice object must be an array or string");
    tm_value *v[3];
    const tm_node *parts[3] = {s->a, s->b, s->c};
    static const char *names[3] = {"start", "stop", "step"};
    for (int i = 0; i < 3; i++) {
        v[i] = parts[i] ? tm_eval(c, e, parts[i]) : TM_UNDEF;
        if (v[i]->type != V_INT && v[i]->type != V_UNDEF) tm_rfail(c, s, "Slice %s must be numeric or undefined", names[i]);
    }
    tm_list *idx = tm_list_new(c->a, 0);
    if (obj->type == V_ARRAY) {
        slice_range(obj->list->n, v[0], v[1], v[2], idx, c);
        tm_list *out = tm_list_new(c->a, idx->n);
        for (size_t i = 0; i < idx->n; i++) {
            double k = idx->v[i]->num;
            tm_list_push(c->a, out, k >= 0 && k < (double)obj->list->n ? obj->list->v[(size_t)k] : TM_UNDEF);
        }
        return tm_v_array(c->a, out);
    }
    /* strings slice by code point (Array.from) */
    size_t ncp = 0;
    for (size_t i = 0; i < obj->s.n;) {
        uint32_t cp;
        i += tm_utf8_next(obj->s.p + i, obj->s.n - i, &cp);
        ncp++;
    }
    size_t *off = tm_alloc(c->a, (ncp + 1) * sizeof *off);
    ncp = 0;
    for (size_t i = 0; i < obj->s.n;) {
        uint32_t cp;
        off[ncp++] = i;
        i += tm_utf8_next(obj->s.p + i, obj->s.n - i, &cp);
    }
    off[ncp] = obj->s.n;
    slice_range(ncp, v[0], v[1], v[2], idx, c);
    tm_buf b = {0};
    tm_buf_put(c->a, &b, "", 0);
    for (size_t i = 0; i < idx->n; i++) {
        double k = idx->v[i]->num;
        if (k >= 0 && k < (double)ncp) tm_buf_put(c->a, &b, obj->s.p + off[(size_t)k], off[(size_t)k + 1] - off[(size_t)k]);
    }
    return tm_v_str_ref(c->a, b.p, b.n);
}

/* str.at(i): by UTF-16 unit; half of a surrogate pair prints as U+FFFD */
static tm_value *string_at(tm_ctx *c, const tm_value *s, double i) {
    double units = (double)tm_utf16_len(s->s.p, s->s.n);
    if (i < 0) i += units;
    if (i < 0 || i >= units) return TM_UNDEF;
    double u = 0;
    for (size_t p = 0; p < s->s.n;) {
        uint32_t cp;
        size_t l = tm_utf8_next(s->s.p + p, s->s.n - p, &cp);
        int w = cp >= 0x10000 ? 2 : 1;
        if (i < u + w) {
            if (w == 2) return tm_v_str(c->a, "\xEF\xBF\xBD", 3);
            return tm_v_str(c->a, s->s.p + p, l);
        }
        u += w;
        p += l;
    }
    return TM_UNDEF;
}

static tm_value *eval_member(tm_ctx *c, tm_env *e, const tm_node *x) {
    tm_value *obj = tm_eval(c, e, x->a);
    tm_value *prop;
    if (x->flag) {
        if (x->b->kind == N_SLICE) return eval_slice(c, e, obj, x->b);
        prop = tm_eval(c, e, x->b);
    } else if (x->b->kind == N_INT) {
        prop = tm_v_num(c->a, V_INT, x->b->num);
    } else {
        prop = tm_v_str_ref(c->a, x->b->s.p, x->b->s.n);
    }
    tm_value *v = NULL;
    if (obj->type == V_OBJECT || obj->type == V_NS) {
        if (prop->type != V_STR) tm_rfail(c, x, "Cannot access property with non-string: got %s", tm_type_name(prop));
        v = tm_map_get(obj->map, prop->s.p, prop->s.n);
        if (!v && obj->type == V_OBJECT) v = tm_member_builtin(c, obj, prop->s);
    } else if (obj->type == V_ARRAY || obj->type == V_STR) {
        if (prop->type == V_INT) {
            if (obj->type == V_STR) {
                v = string_at(c, obj, prop->num);
            } else {
                double i = prop->num, n = (double)obj->list->n;
                if (i < 0) i += n;
                v = i >= 0 && i < n ? obj->list->v[(size_t)i] : NULL;
            }
        } else if (prop->type == V_STR) {
            v = tm_member_builtin(c, obj, prop->s);
        } else {
            tm_rfail(c, x, "Cannot access property with non-string/non-number: got %s", tm_type_name(prop));
        }
    } else {
        if (prop->type != V_STR) tm_rfail(c, x, "Cannot access property with non-string: got %s", tm_type_name(prop));
        v = NULL;
    }
    return v ? v : TM_UNDEF;
}

/* ---- calls ---- */

void tm_eval_args(tm_ctx *c, tm_env *e, tm_node **args, size_t n, tm_list *pos, tm_map *kw, const tm_node *at) {
    for (size_t i = 0; i < n; i++) {
        const tm_node *a = args[i];
        if (a->kind == N_SPREAD) {
            tm_value *v = tm_eval(c, e, a->a);
            if (v->type != V_ARRAY) tm_rfail(c, a, "Cannot unpack non-iterable type: %s", tm_type_name(v));
            for (size_t j = 0; j < v->list->n; j++) tm_list_push(c->a, pos, v->list->v[j]);
        } else if (a->kind != N_KWARG && a->kind != N_KWSPREAD) {
            tm_list_push(c->a, pos, tm_eval(c, e, a));
        }
    }
    for (size_t i = 0; i < n; i++) {
        const tm_node *a = args[i];
        if (a->kind == N_KWARG) {
            if (tm_map_get(kw, a->s.p, a->s.n))
                tm_rfail(c, a, "Got multiple values for keyword argument '%.*s'", (int)a->s.n, a->s.p);
            tm_map_set(c->a, kw, a->s.p, a->s.n, tm_eval(c, e, a->a));
        } else if (a->kind == N_KWSPREAD) {
            tm_value *v = tm_eval(c, e, a->a);
            if (v->type != V_OBJECT) tm_rfail(c, a, "Argument after ** must be a mapping, not %s", tm_type_name(v));
            for (size_t j = 0; j < v->map->n; j++) {
                if (tm_map_get(kw, v->map->k[j].p, v->map->k[j].n))
                    tm_rfail(c, a, "Got multiple values for keyword argument '%.*s'", (int)v->map->k[j].n, v->map->k[j].p);
                tm_map_set(c->a, kw, v->map->k[j].p, v->map->k[j].n, v->map->v[j]);
            }
        }
    }
    (void)at;
}

static tm_value *kwargs_value(tm_ctx *c, tm_map *kw) {
    tm_value *v = tm_v_object(c->a, kw);
    v->kwargs = 1;
    return v;
}

static void bind_args(tm_ctx *c, const char *name, tm_node *const *params, size_t np, int special, tm_list *args,
                      tm_env *scope, const tm_node *at) {
    size_t npos = args->n;
    tm_map *kw = tm_map_new(c->a);
    if (npos && args->v[npos - 1]->type == V_OBJECT && args->v[npos - 1]->kwargs) {
        tm_map *src = args->v[--npos]->map;
        for (size_t i = 0; i < src->n; i++) tm_map_set(c->a, kw, src->k[i].p, src->k[i].n, src->v[i]);
    }
    unsigned char *used = tm_alloc(c->a, kw->n + 1);
    const tm_node **pending = tm_alloc(c->a, (np + 1) * sizeof *pending);
    size_t npending = 0;
    for (size_t i = 0; i < np; i++) {
        const tm_node *p = params[i];
        tm_value *v = i < npos ? args->v[i] : NULL;
        if (!v) {
            for (size_t k = 0; k < kw->n; k++)
                if (!used[k] && kw->k[k].n == p->s.n && memcmp(kw->k[k].p, p->s.p, p->s.n) == 0) {
                    v = kw->v[k];
                    used[k] = 1;
                    break;
                }
        }
        if (!v && p->kind == N_KWARG) pending[npending++] = p;
        env_set(c, scope, p->s, v ? v : TM_UNDEF);
    }
    tm_map *rest = tm_map_new(c->a);
    for (size_t k = 0; k < kw->n; k++)
        if (!used[k]) tm_map_set(c->a, rest, kw->k[k].p, kw->k[k].n, kw->v[k]);
    if (special & 1) {
        env_set(c, scope, (tm_str){"kwargs", 6}, tm_v_object(c->a, rest));
    } else if (rest->n) {
        tm_rfail(c, at, "macro %s takes no keyword argument '%.*s'", name, (int)rest->k[0].n, rest->k[0].p);
    }
    if (special & 2) {
        tm_list *va = tm_list_new(c->a, 0);
        for (size_t i = np; i < npos; i++) tm_list_push(c->a, va, args->v[i]);
        env_set(c, scope, (tm_str){"varargs", 7}, tm_v_array(c->a, va));
    } else if (npos > np) {
        tm_rfail(c, at, "macro %s takes not more than %zu argument(s)", name, np);
    }
    for (size_t i = 0; i < npending; i++) env_set(c, scope, pending[i]->s, tm_eval(c, scope, pending[i]->a));
}

tm_value *tm_call(tm_ctx *c, tm_env *e, tm_value *fn, tm_list *args, const tm_node *at) {
    if (fn->type != V_FUNC) tm_rfail(c, at, "Cannot call something that is not a function: got %s", tm_type_name(fn));
    tm_func *f = fn->fn;
    if (f->kind == F_MACRO || f->kind == F_CALLER) {
        if (c->depth >= MAX_CALL_DEPTH) tm_rfail(c, at, "macro calls nested too deeply (over %d)", MAX_CALL_DEPTH);
        c->depth++;
        tm_env *scope = env_new(c, f->kind == F_MACRO ? e : f->closure);
        char name[80];
        if (f->kind == F_MACRO) snprintf(name, sizeof name, "'%.*s'", (int)(f->node->s.n < 60 ? f->node->s.n : 60), f->node->s.p);
        else snprintf(name, sizeof name, "None");
        bind_args(c, name, f->node->list, f->node->n, f->node->flag, args, scope, at);
        tm_value *r = render_block(c, scope, f->node->list2, f->node->n2);
        c->depth--;
        return r;
    }
    if (f->kind == F_METHOD) return tm_call_method(c, fn, args, at);
    return tm_call_global(c, fn, args, at);
}

static tm_value *eval_call(tm_ctx *c, tm_env *e, const tm_node *x) {
    tm_list *args = tm_list_new(c->a, x->n + 1);
    tm_map *kw = tm_map_new(c->a);
    tm_eval_args(c, e, x->list, x->n, args, kw, x);
    if (kw->n) tm_list_push(c->a, args, kwargs_value(c, kw));
    tm_value *fn = tm_eval(c, e, x->a);
    return tm_call(c, e, fn, args, x);
}

/* ---- expressions ---- */

static tm_value *eval(tm_ctx *c, tm_env *e, const tm_node *x);

tm_value *tm_eval(tm_ctx *c, tm_env *e, const tm_node *x) {
    if (++c->edepth > MAX_EVAL_DEPTH) tm_rfail(c, x, "template evaluation nested too deeply");
    tm_value *v = eval(c, e, x);
    c->edepth--;
    return v;
}

static tm_value *eval(tm_ctx *c, tm_env *e, const tm_node *x) {
    if (!x) return TM_UNDEF;
    switch (x->kind) {
    case N_STR: return tm_v_str_ref(c->a, x->s.p, x->s.n);
    case N_INT: return tm_v_num(c->a, V_INT, x->num);
    case N_FLOAT: return tm_v_num(c->a, V_FLOAT, x->num);
    case N_IDENT: return env_get(e, x->s);
    case N_ARRAY:
    case N_TUPLE: {
        tm_list *l = tm_list_new(c->a, x->n);
        for (size_t i = 0; i < x->n; i++) tm_list_push(c->a, l, tm_eval(c, e, x->list[i]));
        tm_value *v = tm_v_array(c->a, l);
        v->tuple = x->kind == N_TUPLE;
        return v;
    }
    case N_OBJECT: {
        tm_map *m = tm_map_new(c->a);
        for (size_t i = 0; i < x->n; i++) {
            tm_value *k = tm_eval(c, e, x->list[i]);
            if (k->type != V_STR) tm_rfail(c, x->list[i], "Object keys must be strings: got %s", tm_type_name(k));
            tm_map_set(c->a, m, k->s.p, k->s.n, tm_eval(c, e, x->list2[i]));
        }
        return tm_v_object(c->a, m);
    }
    case N_MEMBER: return eval_member(c, e, x);
    case N_CALL: return eval_call(c, e, x);
    case N_BINARY: return eval_binary(c, e, x);
    case N_UNARY: return eval_unary(c, e, x);
    case N_FILTER: return tm_apply_filter(c, e, tm_eval(c, e, x->a), x->b, x);
    case N_TEST: {
        tm_value *v = tm_eval(c, e, x->a);
        if (!tm_has_test(x->s)) tm_rfail(c, x, "Unknown test: %.*s", (int)x->s.n, x->s.p);
        int r = tm_run_test(c, x, x->s, v, NULL);
        return (x->flag ? !r : r) ? TM_TRUE : TM_FALSE;
    }
    case N_SELECT: {
        tm_value *t = tm_eval(c, e, x->b);
        return tm_truthy(t) ? tm_eval(c, e, x->a) : TM_UNDEF;
    }
    case N_TERNARY: return tm_truthy(tm_eval(c, e, x->a)) ? tm_eval(c, e, x->b) : tm_eval(c, e, x->c);
    case N_COMMENT: return TM_NULL;
    case N_SLICE: tm_rfail(c, x, "a slice is only allowed inside [ ]");
    case N_KWARG:
    case N_SPREAD:
    case N_KWSPREAD: tm_rfail(c, x, "keyword arguments and unpacking are only allowed in calls");
    default: tm_rfail(c, x, "unexpected statement inside an expression");
    }
}

/* ---- statements ---- */

static void assign(tm_ctx *c, tm_env *e, const tm_node *target, tm_value *v, const tm_node *at) {
    if (target->kind == N_IDENT) {
        env_set(c, e, target->s, v);
    } else if (target->kind == N_TUPLE) {
        if (v->type != V_ARRAY) tm_rfail(c, at, "Cannot unpack non-iterable type in set: %s", tm_type_name(v));
        if (v->list->n != target->n)
            tm_rfail(c, at, "Too %s items to unpack in set", target->n > v->list->n ? "few" : "many");
        for (size_t i = 0; i < target->n; i++) {
            if (target->list[i]->kind != N_IDENT) tm_rfail(c, at, "Cannot unpack to non-identifier in set");
            env_set(c, e, target->list[i]->s, v->list->v[i]);
        }
    } else if (target->kind == N_MEMBER) {
        tm_value *obj = tm_eval(c, e, target->a);
        if (obj->type != V_NS) tm_rfail(c, at, "cannot assign attribute on non-namespace object");
        if (target->b->kind != N_IDENT) tm_rfail(c, at, "Cannot assign to member with non-identifier property");
        tm_map_set(c->a, obj->map, target->b->s.p, target->b->s.n, v);
    } else {
        tm_rfail(c, at, "Invalid left-hand side of an assignment");
    }
}

/* Runs one iteration; 0 when it ends normally, 1 on continue, 2 on break. */
static int run_body(tm_ctx *c, tm_env *scope, const tm_node *x, tm_buf *out, tm_loopjb *lj) {
    c->loop = lj;
    switch (setjmp(lj->jb)) {
    case 0:
        exec_block(c, scope, x->list, x->n, out);
        return 0;
    case 1:
        return 1;
    default:
        return 2;
    }
}

static void exec_for(tm_ctx *c, tm_env *e, const tm_node *x, tm_buf *out) {
    tm_env *scope = env_new(c, e);
    const tm_node *iter = x->b, *test = NULL;
    if (iter->kind == N_SELECT) {
        test = iter->b;
        iter = iter->a;
    }
    tm_value *it = tm_eval(c, scope, iter);
    tm_list *src;
    if (it->type == V_OBJECT) {
        src = tm_list_new(c->a, it->map->n);
        for (size_t i = 0; i < it->map->n; i++)
            tm_list_push(c->a, src, tm_v_str_ref(c->a, it->map->k[i].p, it->map->k[i].n));
    } else if (it->type == V_ARRAY) {
        src = it->list;
    } else {
        tm_rfail(c, x, "Expected iterable or object type in for loop: got %s", tm_type_name(it));
    }
    const tm_node *var = x->a;
    tm_list *items = tm_list_new(c->a, src->n);
    for (size_t i = 0; i < src->n; i++) {
        tm_value *cur = src->v[i];
        if (var->kind == N_TUPLE) {
            if (cur->type != V_ARRAY || cur->tuple) tm_rfail(c, x, "Cannot unpack non-iterable type: %s", tm_type_name(cur));
            if (var->n != cur->list->n)
                tm_rfail(c, x, "Too %s items to unpack", var->n > cur->list->n ? "few" : "many");
        }
        if (test) {
            tm_env *ls = env_new(c, scope);
            if (var->kind == N_IDENT) env_set(c, ls, var->s, cur);
            else
                for (size_t j = 0; j < var->n; j++) {
                    if (var->list[j]->kind != N_IDENT) tm_rfail(c, x, "Cannot unpack non-identifier type");
                    env_set(c, ls, var->list[j]->s, cur->list->v[j]);
                }
            if (!tm_truthy(tm_eval(c, ls, test))) continue;
        }
        tm_list_push(c->a, items, cur);
    }
    if (items->n > MAX_LOOP_ITEMS) tm_rfail(c, x, "for loop over too many items");

    int no_iteration = 1;
    size_t n = items->n;
    for (size_t i = 0; i < n; i++) {
        tm_map *loop = tm_map_new(c->a);
        tm_map_set(c->a, loop, "index", 5, tm_v_num(c->a, V_INT, (double)i + 1));
        tm_map_set(c->a, loop, "index0", 6, tm_v_num(c->a, V_INT, (double)i));
        tm_map_set(c->a, loop, "revindex", 8, tm_v_num(c->a, V_INT, (double)(n - i)));
        tm_map_set(c->a, loop, "revindex0", 9, tm_v_num(c->a, V_INT, (double)(n - i - 1)));
        tm_map_set(c->a, loop, "first", 5, i == 0 ? TM_TRUE : TM_FALSE);
        tm_map_set(c->a, loop, "last", 4, i == n - 1 ? TM_TRUE : TM_FALSE);
        tm_map_set(c->a, loop, "length", 6, tm_v_num(c->a, V_INT, (double)n));
        tm_map_set(c->a, loop, "previtem", 8, i > 0 ? items->v[i - 1] : TM_UNDEF);
        tm_map_set(c->a, loop, "nextitem", 8, i + 1 < n ? items->v[i + 1] : TM_UNDEF);
        env_set(c, scope, (tm_str){"loop", 4}, tm_v_object(c->a, loop));
        tm_value *cur = items->v[i];
        if (var->kind == N_IDENT) {
            env_set(c, scope, var->s, cur);
        } else {
            for (size_t j = 0; j < var->n; j++) {
                if (var->list[j]->kind != N_IDENT) tm_rfail(c, x, "Cannot unpack non-identifier type");
                env_set(c, scope, var->list[j]->s, cur->list->v[j]);
            }
        }
        size_t mark = out->n;
        int depth = c->depth, edepth = c->edepth;
        tm_loopjb lj;
        lj.prev = c->loop;
        int r = run_body(c, scope, x, out, &lj);
        c->loop = lj.prev;
        if (r == 0) {
            no_iteration = 0;
            continue;
        }
        /* the reference drops what a broken or continued iteration printed */
        c->depth = depth;
        c->edepth = edepth;
        out->n = mark;
        if (out->p) out->p[mark] = 0;
        if (r == 2) break;
    }
    if (no_iteration) exec_block(c, scope, x->list2, x->n2, out);
}

static void define_macro(tm_ctx *c, tm_env *e, const tm_node *x) {
    tm_func *f = tm_alloc(c->a, sizeof *f);
    f->kind = F_MACRO;
    f->node = x;
    tm_value *v = tm_alloc(c->a, sizeof *v);
    v->type = V_FUNC;
    v->fn = f;
    env_set(c, e, x->s, v);
}

static tm_value *exec_callblock(tm_ctx *c, tm_env *e, const tm_node *x) {
    tm_func *f = tm_alloc(c->a, sizeof *f);
    f->kind = F_CALLER;
    f->node = x;
    f->closure = e;
    tm_value *caller = tm_alloc(c->a, sizeof *caller);
    caller->type = V_FUNC;
    caller->fn = f;
    const tm_node *call = x->a;
    tm_list *args = tm_list_new(c->a, call->n + 1);
    tm_map *kw = tm_map_new(c->a);
    tm_eval_args(c, e, call->list, call->n, args, kw, call);
    tm_list_push(c->a, args, kwargs_value(c, kw));
    tm_value *fn = tm_eval(c, e, call->a);
    if (fn->type != V_FUNC) tm_rfail(c, x, "Cannot call something that is not a function: got %s", tm_type_name(fn));
    tm_env *ne = env_new(c, e);
    env_set(c, ne, (tm_str){"caller", 6}, caller);
    return tm_call(c, ne, fn, args, x);
}

static void emit(tm_ctx *c, const tm_node *at, const tm_value *v, tm_buf *out) {
    if (v->type == V_NULL || v->type == V_UNDEF) return;
    tm_rv_string(c, at, v, out);
}

static void exec_block(tm_ctx *c, tm_env *e, tm_node *const *body, size_t n, tm_buf *out) {
    if (++c->edepth > MAX_EVAL_DEPTH) tm_rfail(c, n ? body[0] : NULL, "template evaluation nested too deeply");
    for (size_t i = 0; i < n; i++) {
        const tm_node *x = body[i];
        switch (x->kind) {
        case N_IF:
            if (tm_truthy(tm_eval(c, e, x->a))) exec_block(c, e, x->list, x->n, out);
            else exec_block(c, e, x->list2, x->n2, out);
            break;
        case N_FOR: exec_for(c, e, x, out); break;
        case N_SET: {
            tm_value *v = x->b ? tm_eval(c, e, x->b) : render_block(c, e, x->list, x->n);
            assign(c, e, x->a, v, x);
            break;
        }
        case N_MACRO: define_macro(c, e, x); break;
        case N_BREAK:
        case N_CONTINUE:
            if (!c->loop) tm_rfail(c, x, "{%% %s %%} outside a for loop", x->kind == N_BREAK ? "break" : "continue");
            longjmp(c->loop->jb, x->kind == N_BREAK ? 2 : 1);
        case N_CALLBLOCK: emit(c, x, exec_callblock(c, e, x), out); break;
        case N_FILTERBLOCK: emit(c, x, tm_apply_filter(c, e, render_block(c, e, x->list, x->n), x->b, x), out); break;
        case N_COMMENT: break;
        case N_STR: tm_buf_put(c->a, out, x->s.p, x->s.n); break;
        default: emit(c, x, tm_eval(c, e, x), out); break;
        }
    }
    c->edepth--;
}

/* ---- entry ---- */

static void declare(tm_ctx *c, tm_env *g, const char *name, tm_value *v) {
    tm_map_set(c->a, &g->vars, name, strlen(name), v);
}

static tm_value *global_fn(tm_ctx *c, int kind) {
    tm_func *f = tm_alloc(c->a, sizeof *f);
    f->kind = kind;
    tm_value *v = tm_alloc(c->a, sizeof *v);
    v->type = V_FUNC;
    v->fn = f;
    return v;
}

void tm_eval_program(tm_arena *a, const tm_program *p, const tm_render_in *in, tm_buf *out) {
    tm_ctx c = {.a = a, .now = in->now};
    tm_env *g = env_new(&c, NULL);
    declare(&c, g, "namespace", global_fn(&c, F_NAMESPACE));
    declare(&c, g, "false", TM_FALSE);
    declare(&c, g, "true", TM_TRUE);
    declare(&c, g, "none", TM_NULL);
    declare(&c, g, "raise_exception", global_fn(&c, F_RAISE));
    declare(&c, g, "range", global_fn(&c, F_RANGE));
    declare(&c, g, "strftime_now", global_fn(&c, F_STRFTIME));
    declare(&c, g, "True", TM_TRUE);
    declare(&c, g, "False", TM_FALSE);
    declare(&c, g, "None", TM_NULL);
    if (in->vars)
        for (size_t i = 0; i < in->vars->n; i++) {
            tm_str k = in->vars->k[i];
            if (tm_map_get(&g->vars, k.p, k.n))
                tm_fail(a, "chat template: variable already declared: %.*s", (int)k.n, k.p);
            tm_map_set(a, &g->vars, k.p, k.n, in->vars->v[i]);
        }
    tm_buf_put(a, out, "", 0);
    exec_block(&c, g, p->body, p->n, out);
}
