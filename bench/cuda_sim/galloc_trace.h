// MoE Desk bench/cuda_sim: a trace of ggml-alloc's decisions, one line per allocation, in-place
// reuse and free (GALLOC_TRACE=path). build.py includes this into a copy of ggml-alloc.c.
#include <stdio.h>
#include <stdlib.h>

static FILE * trace_file(void) {
    static FILE * f = NULL;
    static int opened = 0;
    if (!opened) {
        opened = 1;
        const char * path = getenv("GALLOC_TRACE");
        f = path ? fopen(path, "w") : NULL;
    }
    return f;
}

// type, ne[0..3], nb[1..3]
static void trace_tensor(FILE * f, const struct ggml_tensor * t) {
    fprintf(f, " %s %lld %lld %lld %lld %zu %zu %zu", ggml_type_name(t->type), (long long) t->ne[0],
            (long long) t->ne[1], (long long) t->ne[2], (long long) t->ne[3], t->nb[1], t->nb[2], t->nb[3]);
}

// op|name| and the shape; flash attention's K and V too (a quantized cache is converted in its
// output's allocation on CUDA) and whether V is a view of K
static void trace_node(FILE * f, const struct ggml_tensor * node) {
    fprintf(f, " %s|%s|", ggml_op_desc(node), node->name);
    trace_tensor(f, node);
    if (node->op == GGML_OP_FLASH_ATTN_EXT) {
        const struct ggml_tensor * K = node->src[1];
        const struct ggml_tensor * V = node->src[2];
        trace_tensor(f, K);
        trace_tensor(f, V);
        const int v_is_k = V->view_src &&
            (V->view_src == K || (V->view_src == K->view_src && V->view_offs == K->view_offs));
        fprintf(f, " %d", v_is_k);
    }
    fprintf(f, "\n");
}

static void trace_alloc(ggml_backend_buffer_type_t buft, const struct ggml_tensor * node, size_t size,
                        size_t offset) {
    if (trace_file()) {
        fprintf(trace_file(), "A %s %p %zu %zu", ggml_backend_buft_name(buft), (const void *) node, size, offset);
        trace_node(trace_file(), node);
    }
}

static void trace_reuse(ggml_backend_buffer_type_t buft, ggml_backend_buffer_type_t parent_buft,
                        const struct ggml_tensor * node, const struct ggml_tensor * parent) {
    if (trace_file()) {
        fprintf(trace_file(), "R %s %p %p %zu %zu", ggml_backend_buft_name(parent_buft), (const void *) node,
                (const void *) parent, ggml_backend_buft_get_alloc_size(buft, node),
                ggml_backend_buft_get_alloc_size(parent_buft, parent));
        trace_node(trace_file(), node);
    }
}

static void trace_free(ggml_backend_buffer_type_t buft, const struct ggml_tensor * node, size_t size,
                       size_t offset) {
    if (trace_file()) {
        fprintf(trace_file(), "F %s %p %zu %zu\n", ggml_backend_buft_name(buft), (const void *) node, size, offset);
    }
}
