// A stand-in for ggml's CUDA device on a machine without a GPU, for llama.cpp's no_alloc loads
// (bench/cuda_sim/build.py builds it, bench/cuda_sim/load.py uses it). It allocates as ggml-cuda
// does (128-byte alignment, quantized rows padded to 512 values, flash attention's f16 copies of
// a quantized K/V inside its output's allocation), supports the ops ggml-cuda supports on a
// Hopper GPU, offloads ops of 32+ rows, and adds the allocation dependencies of ggml-cuda's fused
// MoE kernels (graph_optimize). It computes nothing: llama.cpp's graph allocator then sizes the
// compute buffers exactly as on an H200 (checked against 20 buffers measured there).
#include "ggml.h"
#include "ggml-backend.h"
#include "ggml-backend-impl.h"
#include "ggml-impl.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define GGML_CUDA_USE_CUB
#define MATRIX_ROW_PADDING 512
#define FATTN_KQ_STRIDE 256
#define TOPK_MOE_ROWS_PER_BLOCK 8
#ifndef QK_K
#define QK_K 256
#endif

static bool ggml_cuda_op_mul_mat_use_fwht(const struct ggml_tensor * op) {
    const struct ggml_tensor * a = op->src[0];
    const struct ggml_tensor * b = op->src[1];
    return op->op == GGML_OP_MUL_MAT && ggml_get_op_params_i32(op, 1) == GGML_HINT_SRC0_IS_HADAMARD &&
           a->type == GGML_TYPE_F32 && op->type == GGML_TYPE_F32 &&
           (b->type == GGML_TYPE_F32 || b->type == GGML_TYPE_F16) && ggml_is_contiguous(b) && ggml_is_contiguous(op) &&
           ggml_are_same_shape(b, op);
}

enum best_fattn_kernel {
    BEST_FATTN_KERNEL_NONE    =   0,
    BEST_FATTN_KERNEL_TILE    = 200,
    BEST_FATTN_KERNEL_VEC     = 100,
    BEST_FATTN_KERNEL_MMA_F16 = 400,
};

static bool fattn_kv_type_supported(const ggml_type type) {
    switch (type) {
        case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: case GGML_TYPE_Q4_0:
        case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
            return true;
        default:
            return false;
    }
}

// ggml_cuda_get_best_fattn_kernel for a Hopper GPU (turing_mma_available, cc >= Ada), without
// the sparse-decode refinement (it only picks between VEC and MMA for one-token batches)
static best_fattn_kernel fake_fattn_kernel(const ggml_tensor * dst) {
    const ggml_tensor * KQV = dst;
    const ggml_tensor * Q = dst->src[0];
    const ggml_tensor * K = dst->src[1];
    const ggml_tensor * V = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    const int gqa_ratio = Q->ne[2] / K->ne[2];
    float max_bias = 0.0f;
    memcpy(&max_bias, (const float *) KQV->op_params + 1, sizeof(float));
    bool gqa_opt_applies = gqa_ratio >= 2 && mask && max_bias == 0.0f && K->ne[1] % FATTN_KQ_STRIDE == 0;
    for (const ggml_tensor * t : {Q, K, V, mask}) {
        if (t == nullptr || ggml_is_quantized(t->type)) {
            continue;
        }
        for (size_t i = 1; i < GGML_MAX_DIMS; ++i) {
            if (t->nb[i] % 16 != 0) {
                gqa_opt_applies = false;
                break;
            }
        }
    }
    switch (K->ne[0]) {
        case 40: case 64: case 72: case 80: case 96: case 128: case 112: case 256:
            if (V->ne[0] != K->ne[0]) return BEST_FATTN_KERNEL_NONE;
            break;
        case 192:
            if (V->ne[0] != 128 || !gqa_opt_applies || gqa_ratio % 8 != 0) return BEST_FATTN_KERNEL_NONE;
            break;
        case 320:
            if (V->ne[0] != 256 || !gqa_opt_applies || gqa_ratio % 32 != 0) return BEST_FATTN_KERNEL_NONE;
            break;
        case 512:
            if (V->ne[0] != K->ne[0] || !gqa_opt_applies) return BEST_FATTN_KERNEL_NONE;
            break;
        case 576:
            if (V->ne[0] != 512 || !gqa_opt_applies) return BEST_FATTN_KERNEL_NONE;
            break;
        default:
            return BEST_FATTN_KERNEL_NONE;
    }
    if (!fattn_kv_type_supported(K->type) || !fattn_kv_type_supported(V->type)) return BEST_FATTN_KERNEL_NONE;
    if (mask && mask->ne[2] != 1) return BEST_FATTN_KERNEL_NONE;
    const bool can_use_vector_kernel = Q->ne[0] <= 256 && Q->ne[0] % 64 == 0 && Q->ne[0] != 192 &&
                                       K->ne[1] % FATTN_KQ_STRIDE == 0;
    if (Q->ne[0] != 40 && Q->ne[0] != 72) {
        if (can_use_vector_kernel) {
            if (!ggml_is_quantized(K->type) && !ggml_is_quantized(V->type)) {
                if (Q->ne[1] == 1 && Q->ne[3] == 1 && !(gqa_ratio > 4 && (Q->ne[0] >= 256 || K->ne[1] >= 8192))) {
                    return BEST_FATTN_KERNEL_VEC;
                }
            } else if (Q->ne[1] <= 2) {
                return BEST_FATTN_KERNEL_VEC;
            }
            if (!gqa_opt_applies && Q->ne[1] == 1) return BEST_FATTN_KERNEL_VEC;
        }
        return BEST_FATTN_KERNEL_MMA_F16;
    }
    return BEST_FATTN_KERNEL_TILE;
}

// vector kernels compiled by default (GGML_CUDA_FA_QUANTS): others convert K and V to f16
static bool fattn_vec_case_exists(ggml_type k, ggml_type v) {
    return k == v && (k == GGML_TYPE_F16 || k == GGML_TYPE_Q4_0 || k == GGML_TYPE_Q8_0 || k == GGML_TYPE_BF16);
}

static size_t fattn_alloc_size(const ggml_tensor * dst) {
    const ggml_tensor * K = dst->src[1];
    const ggml_tensor * V = dst->src[2];
    const best_fattn_kernel kernel = fake_fattn_kernel(dst);
    bool need_f16_K = false, need_f16_V = false;
    if (kernel == BEST_FATTN_KERNEL_TILE || kernel == BEST_FATTN_KERNEL_MMA_F16) {
        need_f16_K = need_f16_V = true;
    } else if (kernel == BEST_FATTN_KERNEL_VEC) {
        const bool fallback = !fattn_vec_case_exists(K->type, V->type);
        need_f16_K = K->type == GGML_TYPE_F32 || fallback;
        need_f16_V = V->type == GGML_TYPE_F32 || fallback;
    }
    const bool V_is_K_view = V->view_src && (V->view_src == K || (V->view_src == K->view_src && V->view_offs == K->view_offs));
    size_t end = ggml_nbytes(dst);  // offsets from dst->data, which the allocator aligns to 128
    if (need_f16_K && K->type != GGML_TYPE_F16) {
        end = GGML_PAD(end, 128) + ggml_nelements(K) * ggml_type_size(GGML_TYPE_F16);
    }
    if (need_f16_V && V->type != GGML_TYPE_F16 && !V_is_K_view) {
        end = GGML_PAD(end, 128) + ggml_nelements(V) * ggml_type_size(GGML_TYPE_F16);
    }
    return end;
}



// ggml-cuda's own code, extracted from the vendored llama.cpp by build.py: the MoE fusion
// matchers, graph_optimize's allocation dependencies and supports_op
#include "cuda_extracted.inc"

// --- buffer types ---------------------------------------------------------------------------

static const char * fake_buft_name(ggml_backend_buffer_type_t) { return "CUDA0"; }
static const char * fake_host_buft_name(ggml_backend_buffer_type_t) { return "CUDA_Host"; }

static void fake_buffer_free(ggml_backend_buffer_t buffer) { free(buffer->context); }
static void * fake_buffer_base(ggml_backend_buffer_t buffer) {
    return (void *) GGML_PAD((uintptr_t) buffer->context, 128);
}
static void fake_buffer_memset(ggml_backend_buffer_t, ggml_tensor *, uint8_t, size_t, size_t) {}
static void fake_buffer_set(ggml_backend_buffer_t, ggml_tensor *, const void *, size_t, size_t) {}
static void fake_buffer_get(ggml_backend_buffer_t, const ggml_tensor *, void *, size_t, size_t) {}
static void fake_buffer_clear(ggml_backend_buffer_t, uint8_t) {}

static const ggml_backend_buffer_i fake_buffer_iface = {
    /* .free_buffer   = */ fake_buffer_free,
    /* .get_base      = */ fake_buffer_base,
    /* .init_tensor   = */ NULL,
    /* .memset_tensor = */ fake_buffer_memset,
    /* .set_tensor    = */ fake_buffer_set,
    /* .get_tensor    = */ fake_buffer_get,
    /* .set_tensor_2d = */ NULL,
    /* .get_tensor_2d = */ NULL,
    /* .cpy_tensor    = */ NULL,
    /* .clear         = */ fake_buffer_clear,
    /* .reset         = */ NULL,
};

// device memory is never touched: a small block stands for it (no_alloc loads allocate nothing)
static ggml_backend_buffer_t fake_buft_alloc(ggml_backend_buffer_type_t buft, size_t size) {
    return ggml_backend_buffer_init(buft, fake_buffer_iface, calloc(1, 256), size);
}
static size_t fake_buft_alignment(ggml_backend_buffer_type_t) { return 128; }
static size_t fake_buft_alloc_size(ggml_backend_buffer_type_t, const ggml_tensor * tensor) {
    size_t size = tensor->op == GGML_OP_FLASH_ATTN_EXT ? fattn_alloc_size(tensor) : ggml_nbytes(tensor);
    const int64_t ne0 = tensor->ne[0];
    if (ggml_is_quantized(tensor->type) && ne0 % MATRIX_ROW_PADDING != 0) {
        size += ggml_row_size(tensor->type, MATRIX_ROW_PADDING - ne0 % MATRIX_ROW_PADDING);
    }
    return size;
}

static ggml_backend_buffer_t fake_host_alloc(ggml_backend_buffer_type_t buft, size_t size) {
    ggml_backend_buffer_t buffer = ggml_backend_buft_alloc_buffer(ggml_backend_cpu_buffer_type(), size);
    buffer->buft = buft;
    return buffer;
}

static ggml_backend_buffer_type fake_buft = {
    /* .iface = */ {fake_buft_name, fake_buft_alloc, fake_buft_alignment, NULL, fake_buft_alloc_size, NULL},
    /* .device = */ NULL,
    /* .context = */ NULL,
};
static ggml_backend_buffer_type fake_host_buft;

// --- backend ----------------------------------------------------------------------------------

static const char * fake_backend_name(ggml_backend_t) { return "CUDA0"; }
static void fake_backend_free(ggml_backend_t backend) { delete backend; }
static void fake_backend_sync(ggml_backend_t) {}
static ggml_status fake_graph_compute(ggml_backend_t, ggml_cgraph *) { return GGML_STATUS_SUCCESS; }

static ggml_guid fake_guid = {0x6d, 0x6f, 0x65, 0x64, 0x65, 0x73, 0x6b, 0x2d, 0x66, 0x61, 0x6b, 0x65, 0x63, 0x75, 0x64, 0x61};

static ggml_backend_device fake_device;

static ggml_backend_t fake_init_backend(ggml_backend_dev_t dev, const char *) {
    ggml_backend_i iface = {};
    iface.get_name = fake_backend_name;
    iface.free = fake_backend_free;
    iface.synchronize = fake_backend_sync;
    iface.graph_compute = fake_graph_compute;
    iface.graph_optimize = fake_graph_optimize;
    return new ggml_backend{&fake_guid, iface, dev, NULL};
}

static const char * fake_dev_name(ggml_backend_dev_t) { return "CUDA0"; }
static const char * fake_dev_description(ggml_backend_dev_t) { return "stand-in for NVIDIA H200 (no compute)"; }
static void fake_dev_memory(ggml_backend_dev_t, size_t * free, size_t * total) {
    *free = *total = (size_t) 140 << 30;
}
static enum ggml_backend_dev_type fake_dev_type(ggml_backend_dev_t) { return GGML_BACKEND_DEVICE_TYPE_GPU; }
static void fake_dev_props(ggml_backend_dev_t dev, ggml_backend_dev_props * props) {
    props->name = fake_dev_name(dev);
    props->description = fake_dev_description(dev);
    props->type = GGML_BACKEND_DEVICE_TYPE_GPU;
    props->device_id = NULL;
    fake_dev_memory(dev, &props->memory_free, &props->memory_total);
    props->caps = {/* async */ true, /* host_buffer */ true, /* buffer_from_host_ptr */ false,
                   /* events */ false, /* mmap_support */ true};
}
static ggml_backend_buffer_type_t fake_dev_buft(ggml_backend_dev_t) { return &fake_buft; }
static ggml_backend_buffer_type_t fake_dev_host_buft(ggml_backend_dev_t) { return &fake_host_buft; }
static bool fake_dev_supports_buft(ggml_backend_dev_t, ggml_backend_buffer_type_t buft) { return buft == &fake_buft; }

static int64_t get_op_batch_size(const ggml_tensor * op) {
    switch (op->op) {
        case GGML_OP_GET_ROWS: return 0;
        case GGML_OP_MUL_MAT: return op->ne[1];
        case GGML_OP_MUL_MAT_ID: case GGML_OP_ROPE: case GGML_OP_ROPE_BACK: return op->ne[2];
        default: return ggml_nrows(op);
    }
}
static int op_offload_min_batch = 32;
static bool fake_dev_offload_op(ggml_backend_dev_t, const ggml_tensor * op) {
    return get_op_batch_size(op) >= op_offload_min_batch;
}

static const char * fake_reg_name(ggml_backend_reg_t) { return "CUDA"; }
static size_t fake_reg_count(ggml_backend_reg_t) { return 1; }
static ggml_backend_dev_t fake_reg_device(ggml_backend_reg_t, size_t) { return &fake_device; }
static void * fake_reg_proc(ggml_backend_reg_t, const char *) { return NULL; }

static ggml_backend_reg fake_reg = {
    /* .api_version = */ GGML_BACKEND_API_VERSION,
    /* .iface = */ {fake_reg_name, fake_reg_count, fake_reg_device, fake_reg_proc},
    /* .context = */ NULL,
};

extern "C" void fake_cuda_register(void) {
    const char * env = getenv("GGML_OP_OFFLOAD_MIN_BATCH");
    op_offload_min_batch = env ? atoi(env) : 32;
    ggml_backend_buffer_type_t cpu = ggml_backend_cpu_buffer_type();
    fake_host_buft = {{fake_host_buft_name, fake_host_alloc, cpu->iface.get_alignment, NULL,
                       cpu->iface.get_alloc_size, cpu->iface.is_host}, &fake_device, NULL};
    fake_buft.device = &fake_device;
    ggml_backend_device_i iface = {};
    iface.get_name = fake_dev_name;
    iface.get_description = fake_dev_description;
    iface.get_memory = fake_dev_memory;
    iface.get_type = fake_dev_type;
    iface.get_props = fake_dev_props;
    iface.init_backend = fake_init_backend;
    iface.get_buffer_type = fake_dev_buft;
    iface.get_host_buffer_type = fake_dev_host_buft;
    iface.supports_op = fake_supports_op;
    iface.supports_buft = fake_dev_supports_buft;
    iface.offload_op = fake_dev_offload_op;
    fake_device = {iface, &fake_reg, NULL};
    ggml_backend_register(&fake_reg);
}
