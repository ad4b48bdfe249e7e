// Fused recurrent steps for batch scoring on CPU (see rnn_sentiment/inference/native.py).
//
// One call advances one direction of one layer over a run of steps. Per step it does what
// rnn_sentiment/stepwise.py does in about 14 PyTorch calls, in two: the recurrent product
// (at::_int_mm on int8 h, or at::mm in fp32) and one pass over the running rows that adds the
// input gates (gathered from the lookup table or read from a block), applies the cell, updates h
// (and c), the int8 copy of h for the next product, the running max / sum and the outputs.
// Weights arrive prepared by stepwise.py: LSTM gates ordered (i, f, o, g) and every
// pre-activation that feeds a tanh scaled by 2, so tanh(x) = 2 * sigmoid(2x) - 1 throughout.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

enum Cell : int64_t { kLSTM = 0, kGRU = 1, kTanh = 2, kReLU = 3 };

// exp(x) = 2^n * 2^f with n = round(x / ln 2), |f| <= 1/2, 2^f by its Taylor polynomial of degree 6
// (relative error about 1e-7). Inline and branch-free, so every loop below vectorizes fully: the
// C library's vector expf falls back to scalar code for any lane it considers out of range.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = x * 1.44269504088896341f;
  const float n = std::nearbyint(t);
  const float f = (t - n) * 0.693147180559945309f;  // 2^(t-n) = e^f
  float p = 1.0f / 720.0f;
  p = p * f + 1.0f / 120.0f;
  p = p * f + 1.0f / 24.0f;
  p = p * f + 1.0f / 6.0f;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

struct Buffers {
  float* h;
  float* c;          // LSTM only
  int8_t* q;         // int8 only: round(127 * h)
  float* max;        // running max, or nullptr
  float* sum;        // running sum, or nullptr
  float* out;        // [steps, batch, hidden] outputs, or nullptr
  int64_t batch;
};

// Row r of one step: gin = input gates (already with biases), acc = recurrent product
// (int32 when scale != nullptr, else float), hh_bias = GRU's b_hn (scaled), or nullptr.
template <typename Acc>
inline void row_step(int64_t cell, int64_t hidden, const float* gin, const Acc* acc,
                     const float* scale, const float* hh_bias, const Buffers& b, int64_t r,
                     float* out_row) {
  const int64_t n = hidden;
  float* h = b.h + r * n;
  int8_t* q = b.q ? b.q + r * n : nullptr;
  float* mx = b.max ? b.max + r * n : nullptr;
  float* sm = b.sum ? b.sum + r * n : nullptr;
  auto hh = [&](int64_t j) -> float {
    return scale ? static_cast<float>(acc[j]) * scale[j] : static_cast<float>(acc[j]);
  };
  if (cell == kLSTM) {
    float* c = b.c + r * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const float i = sigmoid(gin[j] + hh(j));
      const float f = sigmoid(gin[n + j] + hh(n + j));
      const float o = sigmoid(gin[2 * n + j] + hh(2 * n + j));
      const float g = 2.0f * sigmoid(gin[3 * n + j] + hh(3 * n + j)) - 1.0f;
      const float cj = f * c[j] + i * g;
      c[j] = cj;
      h[j] = o * (2.0f * sigmoid(2.0f * cj) - 1.0f);
    }
  } else if (cell == kGRU) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const float rg = sigmoid(gin[j] + hh(j));
      const float z = sigmoid(gin[n + j] + hh(n + j));
      const float hn = hh(2 * n + j) + hh_bias[2 * n + j];
      const float cand = 2.0f * sigmoid(gin[2 * n + j] + rg * hn) - 1.0f;
      h[j] = cand + z * (h[j] - cand);
    }
  } else if (cell == kTanh) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) h[j] = 2.0f * sigmoid(gin[j] + hh(j)) - 1.0f;
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const float v = gin[j] + hh(j);
      h[j] = v > 0.0f ? v : 0.0f;
    }
  }
  if (q) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) q[j] = static_cast<int8_t>(std::nearbyint(h[j] * 127.0f));
  }
  if (mx) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) mx[j] = h[j] > mx[j] ? h[j] : mx[j];
  }
  if (sm) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) sm[j] += h[j];
  }
  if (out_row) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out_row[j] = h[j];
  }
}

inline float* data_or_null(const c10::optional<torch::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<float>() : nullptr;
}

}  // namespace

// Advance ``active.size()`` steps. Input gates of step s, row r: ``table[ids[s, r]]`` when
// ``ids`` is given (ids [steps, rows] int64), else ``gates[s, r]`` (gates [steps, rows, G]).
// ``weight`` is W_hh^T [hidden, G] in int8 (with per-column ``scale``) or fp32 (no scale).
// ``out``, when given, is [total steps, batch, hidden] and step s is written at first_step + s.
//
// Rows never interact, so each thread takes a contiguous range of rows with about the same
// number of row-steps and runs every step of its own rows: its own small matrix product (one
// thread each: two products of 128 rows ran at twice the rate of one of 256 on two threads) and
// its own fused pass, with no barrier between steps.
void run_steps(int64_t cell, const torch::Tensor& gates, const c10::optional<torch::Tensor>& ids,
               const std::vector<int64_t>& active, const torch::Tensor& weight,
               const c10::optional<torch::Tensor>& scale,
               const c10::optional<torch::Tensor>& hh_bias, torch::Tensor h,
               const c10::optional<torch::Tensor>& c, const c10::optional<torch::Tensor>& q,
               torch::Tensor acc, const c10::optional<torch::Tensor>& max,
               const c10::optional<torch::Tensor>& sum, const c10::optional<torch::Tensor>& out,
               int64_t first_step) {
  if (active.empty() || active[0] == 0) return;
  const bool int8 = scale.has_value() && scale->defined();
  const bool gather = ids.has_value() && ids->defined();
  const int64_t steps = static_cast<int64_t>(active.size());
  // Every shape is checked here: a wrong one must raise, never read or write out of bounds.
  auto is = [](const c10::optional<torch::Tensor>& t) { return t.has_value() && t->defined(); };
  auto fp32 = [](const torch::Tensor& t) {
    return t.scalar_type() == torch::kFloat && t.is_contiguous();
  };
  TORCH_CHECK(fp32(h) && h.dim() == 2, "h: contiguous fp32 [batch, hidden]");
  const int64_t batch = h.size(0), hidden = h.size(1);
  TORCH_CHECK(fp32(gates) && gates.dim() == (gather ? 2 : 3), "gates: contiguous fp32");
  const int64_t width = gates.size(-1);
  const int64_t per_cell = cell == kLSTM ? 4 : (cell == kGRU ? 3 : 1);
  TORCH_CHECK(cell >= kLSTM && cell <= kReLU && width == per_cell * hidden, "gates: wrong width");
  TORCH_CHECK(active[0] <= batch, "more running rows than rows");
  for (int64_t s = 0; s < steps; ++s) {
    TORCH_CHECK(active[s] >= 0 && (s == 0 || active[s] <= active[s - 1]),
                "running rows must not increase from one step to the next");
  }
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == hidden && weight.size(1) == width &&
                  weight.scalar_type() == (int8 ? torch::kChar : torch::kFloat),
              "weight: W_hh^T [hidden, gates], int8 or fp32");
  TORCH_CHECK(acc.is_contiguous() && acc.dim() == 2 && acc.size(0) >= active[0] &&
                  acc.size(1) == width &&
                  acc.scalar_type() == (int8 ? torch::kInt : torch::kFloat),
              "acc: contiguous [batch, gates], int32 for int8, else fp32");
  if (int8) {
    TORCH_CHECK(scale->scalar_type() == torch::kFloat && scale->is_contiguous() &&
                    scale->numel() == width, "scale: fp32 [gates]");
    TORCH_CHECK(is(q) && q->scalar_type() == torch::kChar && q->is_contiguous() &&
                    q->sizes() == h.sizes(), "q: contiguous int8 like h");
  }
  if (cell == kLSTM) TORCH_CHECK(is(c) && fp32(*c) && c->sizes() == h.sizes(), "c: like h");
  if (cell == kGRU) {
    TORCH_CHECK(is(hh_bias) && fp32(*hh_bias) && hh_bias->numel() == width, "hh_bias: [gates]");
  }
  for (const auto* t : {&max, &sum}) {
    if (is(*t)) TORCH_CHECK(fp32(**t) && (*t)->sizes() == h.sizes(), "max/sum: like h");
  }
  if (is(out)) {
    TORCH_CHECK(fp32(*out) && out->dim() == 3 && out->size(0) >= first_step + steps &&
                    first_step >= 0 && out->size(1) == batch && out->size(2) == hidden,
                "out: contiguous fp32 [steps, batch, hidden]");
  }
  if (gather) {
    TORCH_CHECK(ids->scalar_type() == torch::kLong && ids->is_contiguous() && ids->dim() == 2 &&
                    ids->size(0) >= steps && ids->size(1) >= active[0],
                "ids: contiguous int64 [steps, rows]");
    const int64_t* all = ids->data_ptr<int64_t>();
    const int64_t vocabulary = gates.size(0);
    for (int64_t s = 0; s < steps; ++s) {
      for (int64_t r = 0; r < active[s]; ++r) {
        const int64_t v = all[s * ids->size(1) + r];
        TORCH_CHECK(v >= 0 && v < vocabulary, "token id ", v, " outside the vocabulary");
      }
    }
  } else {
    TORCH_CHECK(gates.size(0) >= steps && gates.size(1) >= active[0], "gates: too few rows");
  }
  Buffers b{h.data_ptr<float>(),
            c.has_value() && c->defined() ? c->data_ptr<float>() : nullptr,
            int8 ? q->data_ptr<int8_t>() : nullptr,
            data_or_null(max),
            data_or_null(sum),
            data_or_null(out),
            h.size(0)};
  const float* table = gates.data_ptr<float>();
  const int64_t* id = gather ? ids->data_ptr<int64_t>() : nullptr;
  const int64_t id_stride = gather ? ids->size(1) : 0;
  const int64_t gate_rows = gather ? 0 : gates.size(1);
  const float* sc = int8 ? scale->data_ptr<float>() : nullptr;
  const float* hb = data_or_null(hh_bias);
  const torch::Tensor source = int8 ? *q : h;
  const int32_t* acc_i = int8 ? acc.data_ptr<int32_t>() : nullptr;
  const float* acc_f = int8 ? nullptr : acc.data_ptr<float>();

  // Row-steps before each row: rows are sorted longest first, so row r runs while active > r.
  const int64_t rows = active[0];
  std::vector<int64_t> length(rows, 0);
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t r = 0; r < active[s]; ++r) ++length[r];
  }
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / 16));
  std::vector<int64_t> split{0};
  int64_t total = 0, done = 0;
  for (int64_t r = 0; r < rows; ++r) total += length[r];
  for (int64_t r = 0; r < rows && static_cast<int64_t>(split.size()) < parts; ++r) {
    done += length[r];
    if (done * parts >= total * static_cast<int64_t>(split.size())) split.push_back(r + 1);
  }
  while (static_cast<int64_t>(split.size()) <= parts) split.push_back(rows);
  split.back() = rows;

  auto run_rows = [&](int64_t lo, int64_t hi) {
    c10::InferenceMode inference;  // the buffers are inference tensors on every thread
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t end = std::min(active[s], hi);
      if (end <= lo) break;
      auto prod = acc.narrow(0, lo, end - lo);
      if (int8) {
        at::_int_mm_out(prod, source.narrow(0, lo, end - lo), weight);
      } else {
        at::mm_out(prod, source.narrow(0, lo, end - lo), weight);
      }
      const int64_t step = first_step + s;
      const int64_t next_end = s + 1 < steps ? std::min(active[s + 1], hi) : lo;
      for (int64_t r = lo; r < end; ++r) {
        const float* gin = gather ? table + id[s * id_stride + r] * width
                                  : table + (s * gate_rows + r) * width;
        if (gather && r < next_end) {
          // The next step's table row is a random 4 KB read from a table that may be far
          // bigger than the cache; asking for it a step ahead hides the memory latency.
          const char* next =
              reinterpret_cast<const char*>(table + id[(s + 1) * id_stride + r] * width);
          for (int64_t line = 0; line < width * 4; line += 64) __builtin_prefetch(next + line, 0, 1);
        }
        float* out_row = b.out ? b.out + (step * b.batch + r) * hidden : nullptr;
        if (int8) {
          row_step(cell, hidden, gin, acc_i + r * width, sc, hb, b, r, out_row);
        } else {
          row_step(cell, hidden, gin, acc_f + r * width, nullptr, hb, b, r, out_row);
        }
      }
    }
  };
  if (parts == 1) {
    run_rows(0, rows);
    return;
  }
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t part = p0; part < p1; ++part) run_rows(split[part], split[part + 1]);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("run_steps", &run_steps, "Advance one direction of a recurrent layer over some steps",
        py::call_guard<py::gil_scoped_release>());
}
