// Multi-LoRA ops for vLLM's CPU platform: one call per LoRA layer, no Python inside.
//
// The Python ops (`ops.py`) spend most of a decode step's LoRA time in dispatch: ~14 ATen calls
// and ~70 us of Python per layer call for a dozen adapter rows whose arithmetic takes a few us.
// Here the whole layer is one C++ call. The batch's rows are grouped by adapter slot from the
// step's plan (`plan[0]` = rows, `plan[1 + row]` = slot, -1 = no adapter); each slot's A and B
// are then read once and applied to its rows with plain loops (small groups: decode, short
// prefill chunks), or with ATen matmuls when a group is large enough for a GEMM to pay off.
// Rows without an adapter are never read or written. float32 runs the loops; other dtypes go
// through the ATen path.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace {

// Groups at least this large go to ATen matmuls (oneDNN/BLAS, multi-threaded).
constexpr int64_t kGemmRows = 32;
// Ranks up to this run the loops (vLLM's `max_lora_rank` choices go to 512; beyond, ATen).
constexpr int64_t kMaxLoopRank = 64;
// Below this many multiply-adds per call the loop items run on the calling thread alone: waking
// the pool costs more than it saves.
constexpr int64_t kParallelMacs = 1 << 18;

// The adapter rows of one step, grouped by slot: rows of slot `slots[g]` are
// `rows[starts[g] .. starts[g + 1])`, in batch order.
struct Groups {
  std::vector<int64_t> slots;
  std::vector<int64_t> starts;
  std::vector<int64_t> rows;
  bool empty() const { return slots.empty(); }
};

Groups group_rows(const at::Tensor& plan, int64_t num_rows, int64_t num_slots) {
  TORCH_CHECK(plan.scalar_type() == at::kLong && plan.dim() == 1 && plan.is_contiguous(),
              "loraplex LoRA plan must be a contiguous int64 vector");
  const int64_t* data = plan.const_data_ptr<int64_t>();
  TORCH_CHECK(plan.numel() >= 1 && data[0] == num_rows, "loraplex LoRA op called with ",
              num_rows, " rows but the step's adapter mapping has ",
              plan.numel() ? data[0] : -1, ": the plan was not updated for this batch");
  TORCH_CHECK(plan.numel() >= num_rows + 1, "loraplex LoRA plan shorter than the batch");
  const int64_t* slot_of = data + 1;
  std::vector<int64_t> counts(num_slots, 0);
  for (int64_t row = 0; row < num_rows; ++row) {
    const int64_t slot = slot_of[row];
    if (slot < 0) continue;
    TORCH_CHECK(slot < num_slots, "loraplex LoRA plan names slot ", slot, " of ", num_slots);
    ++counts[slot];
  }
  Groups groups;
  std::vector<int64_t> next(num_slots, 0);
  int64_t total = 0;
  for (int64_t slot = 0; slot < num_slots; ++slot) {
    if (!counts[slot]) continue;
    groups.slots.push_back(slot);
    groups.starts.push_back(total);
    next[slot] = total;
    total += counts[slot];
  }
  groups.starts.push_back(total);
  groups.rows.resize(total);
  for (int64_t row = 0; row < num_rows; ++row) {
    const int64_t slot = slot_of[row];
    if (slot >= 0) groups.rows[next[slot]++] = row;
  }
  return groups;
}

// One slot's `[out, in]` matrix from vLLM's stacked `[slots, 1, out, in]` (or `[slots, out, in]`).
at::Tensor slot_matrix(const at::Tensor& stacked, int64_t slot) {
  at::Tensor weight = stacked.select(0, slot);
  return weight.dim() == 3 ? weight.select(0, 0) : weight;
}

bool loop_ready(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat && t.stride(-1) == 1;
}

// Shrink: out[j, 0:width] = scale * in[j, 0:depth] . weight[0:width, 0:depth]^T for `m` rows
// (width = rank, depth = the layer's input size). Four weight rows at a time share the loads of
// each input row; every weight row is read once for all `m` rows.
inline void shrink_rows(const float* const* in, int64_t m, const float* weight,
                        int64_t weight_stride, int64_t width, int64_t depth, float* const* out,
                        float scale) {
  int64_t o = 0;
  for (; o + 4 <= width; o += 4) {
    const float* w0 = weight + o * weight_stride;
    const float* w1 = w0 + weight_stride;
    const float* w2 = w1 + weight_stride;
    const float* w3 = w2 + weight_stride;
    for (int64_t j = 0; j < m; ++j) {
      const float* v = in[j];
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
      for (int64_t k = 0; k < depth; ++k) {
        a0 += v[k] * w0[k];
        a1 += v[k] * w1[k];
        a2 += v[k] * w2[k];
        a3 += v[k] * w3[k];
      }
      out[j][o] = scale * a0;
      out[j][o + 1] = scale * a1;
      out[j][o + 2] = scale * a2;
      out[j][o + 3] = scale * a3;
    }
  }
  for (; o < width; ++o) {
    const float* w = weight + o * weight_stride;
    for (int64_t j = 0; j < m; ++j) {
      const float* v = in[j];
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < depth; ++k) acc += v[k] * w[k];
      out[j][o] = scale * acc;
    }
  }
}

// Expand: out[j, 0:width] (+)= in[j, 0:R] . weight[0:width, 0:R]^T with the rank R known at
// compile time, so the compiler vectorizes across outputs (the interleaved weight rows become
// register permutes). Outputs go in blocks that keep their weight rows in L1 for all `m` rows.
// The portable path: CPUs without AVX-512 (or -DLORAPLEX_PORTABLE) and strided weights.
template <int R>
inline void expand_rows_fixed(const float* const* in, int64_t m, const float* weight,
                              int64_t weight_stride, int64_t width, float* const* out,
                              bool accumulate) {
  constexpr int64_t kBlock = 256;
  for (int64_t start = 0; start < width; start += kBlock) {
    const int64_t end = std::min(width, start + kBlock);
    for (int64_t j = 0; j < m; ++j) {
      float t[R];
      for (int k = 0; k < R; ++k) t[k] = in[j][k];
      float* y = out[j];
      if (weight_stride == R) {
        const float* w = weight;
#pragma omp simd
        for (int64_t o = start; o < end; ++o) {
          float acc = 0.f;
          for (int k = 0; k < R; ++k) acc += t[k] * w[o * R + k];
          y[o] = accumulate ? y[o] + acc : acc;
        }
      } else {
        for (int64_t o = start; o < end; ++o) {
          const float* w = weight + o * weight_stride;
          float acc = 0.f;
          for (int k = 0; k < R; ++k) acc += t[k] * w[k];
          y[o] = accumulate ? y[o] + acc : acc;
        }
      }
    }
  }
}

#if defined(__AVX512F__) && !defined(LORAPLEX_PORTABLE)
#define LORAPLEX_AVX512 1
#include <immintrin.h>

// Sums 8 vectors that hold 8 partial sums for each of two outputs (lanes 0-7: output 2i, lanes
// 8-15: output 2i + 1) into one vector of the 16 outputs' totals, in output order. 15 shuffles
// and 7 adds, instead of the permutes GCC emits to vectorize `expand_rows_fixed` across outputs.
__attribute__((always_inline)) inline __m512 fold16x8(const __m512 (&p)[8]) {
  __m512 z[4];  // [a4 b4 c4 d4]: four outputs, four partial sums each
  for (int i = 0; i < 4; ++i) {
    const __m512 x = p[2 * i];
    const __m512 y = p[2 * i + 1];
    z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
  }
  // 128-bit lane q: two sums of output q, then two of output q + 4 (w0) or q + 8, q + 12 (w1)
  const __m512 w0 =
      _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], 0x88), _mm512_shuffle_ps(z[0], z[1], 0xDD));
  const __m512 w1 =
      _mm512_add_ps(_mm512_shuffle_ps(z[2], z[3], 0x88), _mm512_shuffle_ps(z[2], z[3], 0xDD));
  // lane q: outputs q, q + 4, q + 8, q + 12
  const __m512 v =
      _mm512_add_ps(_mm512_shuffle_ps(w0, w1, 0x88), _mm512_shuffle_ps(w0, w1, 0xDD));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, v);
}

// Expand for a rank R that is a multiple of 8, weight rows contiguous (`[width, R]`): each output
// is a dot product of R weights with the row's R shrunk values. Sixteen outputs at a time: their
// products (R > 16: summed down to 16 lanes per output, then 8) fold into one vector.
template <int R>
__attribute__((always_inline)) inline void expand_rows_avx512(const float* const* in, int64_t m,
                                                              const float* weight, int64_t width,
                                                              float* const* out,
                                                              bool accumulate) {
  static_assert(R % 8 == 0, "the vector expand needs a rank that is a multiple of 8");
  const int64_t vector_end = width - width % 16;
  for (int64_t j = 0; j < m; ++j) {
    const float* t = in[j];
    float* y = out[j];
    __m512 tv[R >= 16 ? R / 16 : 1];
    if constexpr (R == 8) {  // the row's 8 values twice: one vector covers two outputs
      const __m256 t8 = _mm256_loadu_ps(t);
      tv[0] = _mm512_insertf32x8(_mm512_castps256_ps512(t8), t8, 1);
    } else {
      for (int c = 0; c < R / 16; ++c) tv[c] = _mm512_loadu_ps(t + 16 * c);
    }
    for (int64_t o = 0; o < vector_end; o += 16) {
      const float* w = weight + o * R;
      __m512 p[8];
      if constexpr (R == 8) {
        for (int i = 0; i < 8; ++i) p[i] = _mm512_mul_ps(_mm512_loadu_ps(w + 16 * i), tv[0]);
      } else {
        for (int i = 0; i < 8; ++i) {
          __m512 e[2];  // outputs 2i and 2i + 1, 16 partial sums each
          for (int h = 0; h < 2; ++h) {
            const float* row = w + (2 * i + h) * R;
            __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(row), tv[0]);
            for (int c = 1; c < R / 16; ++c) {
              acc = _mm512_fmadd_ps(_mm512_loadu_ps(row + 16 * c), tv[c], acc);
            }
            e[h] = acc;
          }
          p[i] = _mm512_add_ps(_mm512_shuffle_f32x4(e[0], e[1], 0x44),
                               _mm512_shuffle_f32x4(e[0], e[1], 0xEE));
        }
      }
      __m512 sum = fold16x8(p);
      if (accumulate) sum = _mm512_add_ps(sum, _mm512_loadu_ps(y + o));
      _mm512_storeu_ps(y + o, sum);
    }
    for (int64_t o = vector_end; o < width; ++o) {
      const float* w = weight + o * R;
      float acc = 0.f;
      for (int k = 0; k < R; ++k) acc += t[k] * w[k];
      y[o] = accumulate ? y[o] + acc : acc;
    }
  }
}
#endif

// Expand at a rank known at compile time: the AVX-512 fold for contiguous weight rows, else the
// portable loop.
template <int R>
inline void expand_rows_rank(const float* const* in, int64_t m, const float* weight,
                             int64_t weight_stride, int64_t width, float* const* out,
                             bool accumulate) {
#ifdef LORAPLEX_AVX512
  if (weight_stride == R) return expand_rows_avx512<R>(in, m, weight, width, out, accumulate);
#endif
  expand_rows_fixed<R>(in, m, weight, weight_stride, width, out, accumulate);
}

inline void expand_rows(const float* const* in, int64_t m, const float* weight,
                        int64_t weight_stride, int64_t width, int64_t depth, float* const* out,
                        bool accumulate) {
  switch (depth) {
    case 8:
      return expand_rows_rank<8>(in, m, weight, weight_stride, width, out, accumulate);
    case 16:
      return expand_rows_rank<16>(in, m, weight, weight_stride, width, out, accumulate);
    case 32:
      return expand_rows_rank<32>(in, m, weight, weight_stride, width, out, accumulate);
    case 64:
      return expand_rows_rank<64>(in, m, weight, weight_stride, width, out, accumulate);
    default:
      break;
  }
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t o = 0; o < width; ++o) {
      const float* w = weight + o * weight_stride;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < depth; ++k) acc += in[j][k] * w[k];
      out[j][o] = accumulate ? out[j][o] + acc : acc;
    }
  }
}

// One slice's stacked weights, `[slots, 1, rows, cols]` or `[slots, rows, cols]`, as raw float
// pointers: reading a slot's matrix costs pointer arithmetic, not a tensor view.
struct Stacked {
  const float* data;
  int64_t slot_stride;
  int64_t row_stride;
  int64_t rows;
  int64_t cols;
  explicit Stacked(const at::Tensor& t)
      : data(t.const_data_ptr<float>()),
        slot_stride(t.stride(0)),
        row_stride(t.stride(-2)),
        rows(t.size(-2)),
        cols(t.size(-1)) {}
  const float* slot(int64_t s) const { return data + s * slot_stride; }
};

// y[row, column : column + width] += scale * x[row] @ A[slot]^T @ B[slot]^T for the `m` rows of
// one slot and one slice, small enough (< kGemmRows) that loops beat GEMM calls. float32, last
// dimension contiguous. Items of different slots or slices write disjoint parts of y.
void slice_by_loops(float* y, int64_t y_stride, const float* x, int64_t x_stride, int64_t in,
                    const Stacked& a, const Stacked& b, float scale, int64_t column,
                    int64_t width, int64_t slot, const int64_t* rows, int64_t m) {
  const float* x_rows[kGemmRows];
  float* targets[kGemmRows];
  float* shrunk_rows[kGemmRows];
  float shrunk[kGemmRows * kMaxLoopRank];
  for (int64_t j = 0; j < m; ++j) {
    x_rows[j] = x + rows[j] * x_stride;
    targets[j] = y + rows[j] * y_stride + column;
    shrunk_rows[j] = shrunk + j * a.rows;
  }
  shrink_rows(x_rows, m, a.slot(slot), a.row_stride, a.rows, in, shrunk_rows, scale);
  expand_rows(shrunk_rows, m, b.slot(slot), b.row_stride, width, b.cols, targets, true);
}

// Which slots of a stacked LoRA B hold any nonzero weight. vLLM zeroes a slot's A and B in every
// module the slot's adapter does not adapt (`reset_lora`): the k/o/MLP projections of a q/v-only
// adapter, the logits of any adapter without lm_head weights (a vocab-by-rank B per slot). Those
// (slot, slice) pairs add exactly nothing, so the op skips them instead of streaming their zeros.
//
// A slot is checked when first used and again after any write into the tensor: the tensor's
// version counter (shared by every view, bumped by vLLM's in-place `set_lora`/`reset_lora`)
// tells when. A live slot's check stops at its first nonzero byte; an empty slot is read once
// per write. Entries are keyed by data pointer and hold a weak reference to the storage, so a
// freed tensor's address, reused by a new one, never inherits its answers.
class SlotLiveness {
 public:
  // live[j] = whether slot slots[j] of `stacked` (`[slots, 1, rows, cols]` or `[slots, rows,
  // cols]`) may be nonzero. Anything this cannot vouch for counts as live.
  void check(const at::Tensor& stacked, const std::vector<int64_t>& slots, uint8_t* live) {
    const int64_t num_slots = stacked.size(0);
    if (stacked.is_inference() || !stacked.is_contiguous() || num_slots == 0) {
      std::fill(live, live + slots.size(), 1);
      return;
    }
    const int64_t version = stacked._version();
    const int64_t slot_bytes = stacked.numel() / num_slots * stacked.element_size();
    const char* data = static_cast<const char*>(stacked.const_data_ptr());
    std::lock_guard<std::mutex> lock(mutex_);
    Entry& entry = entry_for(stacked, num_slots);
    for (size_t j = 0; j < slots.size(); ++j) {
      const int64_t slot = slots[j];
      if (entry.checked_at[slot] != version) {
        entry.live[slot] = any_nonzero(data + slot * slot_bytes, slot_bytes);
        entry.checked_at[slot] = version;
      }
      live[j] = entry.live[slot];
    }
  }

 private:
  struct Entry {
    c10::weak_intrusive_ptr<c10::StorageImpl> storage;
    std::vector<int64_t> sizes;
    std::vector<int64_t> checked_at;  // per slot: the version it was last read at, -1 = never
    std::vector<uint8_t> live;
  };

  Entry& entry_for(const at::Tensor& stacked, int64_t num_slots) {
    const void* key = stacked.const_data_ptr();
    const std::vector<int64_t> sizes = stacked.sizes().vec();
    auto found = entries_.find(key);
    if (found != entries_.end()) {
      Entry& entry = found->second;
      // Same live storage and shape: the same tensor (or a view of it with the same layout).
      if (!entry.storage.expired() && entry.storage._unsafe_get_target() ==
                                          stacked.storage().unsafeGetStorageImpl() &&
          entry.sizes == sizes) {
        return entry;
      }
      entries_.erase(found);
    }
    if (entries_.size() >= 4096) {  // drop what belonged to freed tensors
      for (auto it = entries_.begin(); it != entries_.end();) {
        it = it->second.storage.expired() ? entries_.erase(it) : std::next(it);
      }
    }
    Entry entry{stacked.storage().getWeakStorageImpl(), sizes,
                std::vector<int64_t>(num_slots, -1), std::vector<uint8_t>(num_slots, 1)};
    return entries_.emplace(key, std::move(entry)).first->second;
  }

  // Any nonzero byte (a -0.0 counts as live: the check may say "live" for zeros, never the
  // reverse). Stops at the first 4 KiB block with one.
  static bool any_nonzero(const char* data, int64_t bytes) {
    constexpr int64_t kBlock = 4096;
    int64_t offset = 0;
    for (; offset + kBlock <= bytes; offset += kBlock) {
      uint64_t bits = 0;
      for (int64_t k = 0; k < kBlock; k += 8) {
        uint64_t word;
        std::memcpy(&word, data + offset + k, 8);
        bits |= word;
      }
      if (bits) return true;
    }
    for (; offset < bytes; ++offset) {
      if (data[offset]) return true;
    }
    return false;
  }

  std::mutex mutex_;
  std::unordered_map<const void*, Entry> entries_;
};

SlotLiveness& slot_liveness() {
  static SlotLiveness instance;
  return instance;
}

// The same for a large group (or any dtype): gather, two matmuls per slice, scatter-add; slice
// i is skipped when `live[i * live_stride]` is 0.
void group_by_matmul(const at::Tensor& y, const at::Tensor& x, const at::TensorList lora_a,
                     const at::TensorList lora_b, double scale, at::IntArrayRef output_slices,
                     int64_t slot, const int64_t* rows, int64_t m, const uint8_t* live,
                     size_t live_stride) {
  const bool contiguous = rows[m - 1] - rows[0] == m - 1;
  at::Tensor index;
  at::Tensor inputs;
  if (contiguous) {
    inputs = x.narrow(0, rows[0], m);
  } else {
    index = at::from_blob(const_cast<int64_t*>(rows), {m}, at::kLong).clone();
    inputs = x.index_select(0, index);
  }
  inputs = inputs.to(at::kFloat);
  int64_t column = 0;
  for (size_t i = 0; i < lora_a.size(); ++i) {
    if (!live[i * live_stride]) {
      column += output_slices[i];
      continue;
    }
    const at::Tensor a = slot_matrix(lora_a[i], slot);
    const at::Tensor b = slot_matrix(lora_b[i], slot);
    const int64_t width = std::min<int64_t>(output_slices[i], b.size(0));
    at::Tensor shrunk = at::mm(inputs, a.to(at::kFloat).t());
    if (scale != 1.0) shrunk.mul_(scale);
    const at::Tensor delta =
        at::mm(shrunk.to(y.scalar_type()), b.narrow(0, 0, width).to(y.scalar_type()).t());
    at::Tensor columns = y.narrow(1, column, width);
    if (contiguous) {
      columns.narrow(0, rows[0], m).add_(delta);
    } else {
      columns.index_put_({index}, delta, /*accumulate=*/true);
    }
    column += output_slices[i];
  }
}

void apply_groups(const at::Tensor& y, const at::Tensor& x, at::TensorList lora_a,
                  at::TensorList lora_b, double scale, at::IntArrayRef output_slices,
                  const at::Tensor& plan) {
  TORCH_CHECK(lora_a.size() == lora_b.size() && lora_a.size() == output_slices.size(),
              "loraplex LoRA op: one A, one B and one output size per slice");
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0),
              "loraplex LoRA op expects 2-D activations with the same rows");
  if (lora_a.empty()) return;
  const Groups groups = group_rows(plan, x.size(0), lora_a[0].size(0));
  if (groups.empty()) return;
  bool loops = loop_ready(x) && loop_ready(y);
  for (size_t i = 0; i < lora_a.size(); ++i) {
    loops = loops && loop_ready(lora_a[i]) && loop_ready(lora_b[i]) &&
            lora_a[i].size(-2) <= kMaxLoopRank;
  }
  // live[i * num_groups + g]: whether slice i of group g's slot has any weight (SlotLiveness).
  const size_t slices = lora_a.size();
  const size_t num_groups = groups.slots.size();
  std::vector<uint8_t> live(slices * num_groups);
  for (size_t i = 0; i < slices; ++i) {
    slot_liveness().check(lora_b[i], groups.slots, live.data() + i * num_groups);
  }
  // Loop items: one per (small group, live slice), over the intra-op threads when worth it.
  std::vector<Stacked> stacked_a;
  std::vector<Stacked> stacked_b;
  std::vector<int64_t> columns;
  std::vector<std::pair<int64_t, int64_t>> items;  // (group, slice)
  int64_t macs = 0;
  int64_t column = 0;
  for (size_t i = 0; i < lora_a.size(); ++i) {
    columns.push_back(column);
    column += output_slices[i];
    if (loops) {
      stacked_a.emplace_back(lora_a[i]);
      stacked_b.emplace_back(lora_b[i]);
    }
  }
  for (size_t g = 0; g < num_groups; ++g) {
    const int64_t start = groups.starts[g];
    const int64_t m = groups.starts[g + 1] - start;
    if (loops && m < kGemmRows) {
      for (size_t i = 0; i < slices; ++i) {
        if (!live[i * num_groups + g]) continue;
        items.emplace_back(g, i);
        macs += m * stacked_a[i].rows * (x.size(1) + output_slices[i]);
      }
      continue;
    }
    group_by_matmul(y, x, lora_a, lora_b, scale, output_slices, groups.slots[g],
                    groups.rows.data() + start, m, live.data() + g, num_groups);
  }
  if (items.empty()) return;
  float* y_data = y.data_ptr<float>();
  const float* x_data = x.const_data_ptr<float>();
  const int64_t count = static_cast<int64_t>(items.size());
  const int64_t grain = macs < kParallelMacs ? count : 1;
  at::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const auto& [g, i] = items[item];
      const int64_t start = groups.starts[g];
      const Stacked& b = stacked_b[i];
      slice_by_loops(y_data, y.stride(0), x_data, x.stride(0), x.size(1), stacked_a[i], b,
                     static_cast<float>(scale), columns[i],
                     std::min<int64_t>(output_slices[i], b.rows), groups.slots[g],
                     groups.rows.data() + start, groups.starts[g + 1] - start);
    }
  });
}

// y[:, slice i] += scale * x @ A_i[slot]^T @ B_i[slot]^T per row (vLLM's `add_lora_linear`; the
// slices are the packed projections of one layer, e.g. q/k/v, side by side in y).
void lora_linear(const at::Tensor& y, const at::Tensor& x, at::TensorList lora_a,
                 at::TensorList lora_b, double scale, at::IntArrayRef output_slices,
                 const at::Tensor& plan) {
  apply_groups(y.view({-1, y.size(-1)}), x.view({-1, x.size(-1)}), lora_a, lora_b, scale,
               output_slices, plan);
}

// y[row] (+)= x[row] @ B[slot(row)]^T: the expand of vLLM's LoRA embedding (x holds the rows'
// LoRA-A embeddings, already looked up).
void lora_embedding(const at::Tensor& y, const at::Tensor& x, const at::Tensor& lora_b,
                    bool add_inputs, const at::Tensor& plan) {
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0),
              "loraplex LoRA embedding expects 2-D activations with the same rows");
  const Groups groups = group_rows(plan, x.size(0), lora_b.size(0));
  if (groups.empty()) return;
  const int64_t width = std::min(lora_b.size(-2), y.size(1));
  const bool loops = loop_ready(x) && loop_ready(y) && loop_ready(lora_b);
  const std::optional<Stacked> stacked_b =
      loops ? std::optional<Stacked>(Stacked(lora_b)) : std::nullopt;  // slot matrix [out, rank]
  for (size_t g = 0; g < groups.slots.size(); ++g) {
    const int64_t start = groups.starts[g];
    const int64_t m = groups.starts[g + 1] - start;
    const int64_t* rows = groups.rows.data() + start;
    if (loops) {  // any group size: the expand alone is cheap next to the loads of B
      const Stacked& b = *stacked_b;
      const float* in[kGemmRows];
      float* out[kGemmRows];
      for (int64_t chunk = 0; chunk < m; chunk += kGemmRows) {
        const int64_t n = std::min(kGemmRows, m - chunk);
        for (int64_t j = 0; j < n; ++j) {
          in[j] = x.const_data_ptr<float>() + rows[chunk + j] * x.stride(0);
          out[j] = y.data_ptr<float>() + rows[chunk + j] * y.stride(0);
        }
        expand_rows(in, n, b.slot(groups.slots[g]), b.row_stride, width, b.cols, out,
                    add_inputs);
      }
      continue;
    }
    const at::Tensor b = slot_matrix(lora_b, groups.slots[g]);  // [out, rank]
    const at::Tensor index = at::from_blob(const_cast<int64_t*>(rows), {m}, at::kLong).clone();
    const at::Tensor delta = at::mm(x.index_select(0, index).to(y.scalar_type()),
                                    b.narrow(0, 0, width).to(y.scalar_type()).t());
    y.narrow(1, 0, width).index_put_({index}, delta, /*accumulate=*/add_inputs);
  }
}

// Whether each slot of a stacked B may hold weights, as `lora_linear` sees it (bool [slots]): what
// the op skips, for tests and diagnostics.
at::Tensor live_slots(const at::Tensor& lora_b) {
  std::vector<int64_t> slots(lora_b.size(0));
  for (int64_t slot = 0; slot < lora_b.size(0); ++slot) slots[slot] = slot;
  at::Tensor live = at::empty({lora_b.size(0)}, at::kByte);
  slot_liveness().check(lora_b, slots, live.data_ptr<uint8_t>());
  return live.to(at::kBool);
}

void lora_linear_meta(const at::Tensor&, const at::Tensor&, at::TensorList, at::TensorList,
                      double, at::IntArrayRef, const at::Tensor&) {}

void lora_embedding_meta(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool,
                         const at::Tensor&) {}

}  // namespace

// The op namespace; a second build under another name (the tests' portable build) can then load
// into the same process.
#ifndef LORAPLEX_OPS_NAMESPACE
#define LORAPLEX_OPS_NAMESPACE loraplex_kernels
#endif
// TORCH_LIBRARY pastes its namespace argument: one more expansion turns the macro into its value.
#define LORAPLEX_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define LORAPLEX_LIBRARY_IMPL(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)

LORAPLEX_LIBRARY(LORAPLEX_OPS_NAMESPACE, m) {
  m.def(
      "lora_linear(Tensor(a!) y, Tensor x, Tensor[] lora_a, Tensor[] lora_b, float scale, "
      "int[] output_slices, Tensor plan) -> ()");
  m.def(
      "lora_embedding(Tensor(a!) y, Tensor x, Tensor lora_b, bool add_inputs, Tensor plan) "
      "-> ()");
  m.def("live_slots(Tensor lora_b) -> Tensor");
}

LORAPLEX_LIBRARY_IMPL(LORAPLEX_OPS_NAMESPACE, CPU, m) {
  m.impl("lora_linear", &lora_linear);
  m.impl("lora_embedding", &lora_embedding);
  m.impl("live_slots", &live_slots);
}

LORAPLEX_LIBRARY_IMPL(LORAPLEX_OPS_NAMESPACE, Meta, m) {
  m.impl("lora_linear", &lora_linear_meta);
  m.impl("lora_embedding", &lora_embedding_meta);
}
