// The whole forward of a llama-family decoder (Llama, Mistral, Qwen2, Qwen3) in one C++ call on
// CPU: embedding, per layer RMSNorm -> qkv -> (q/k norm) -> RoPE -> KV append -> paged attention
// -> o_proj + residual -> RMSNorm -> gate_up -> SiLU-and-mul -> down + residual, then the final
// norm of the sampled rows and the head. A decode step of a small model is mostly per-op Python
// and dispatch (nn.Module calls, the op registry, views); here one call runs every op.
//
// NOTE (exactness): every op is the function the per-op path's "cpu" backends call (this file
// includes their sources), in the per-op path's order, and the residual adds are torch's own
// add, so the logits are bit-identical to the per-op forward on those backends
// (tests/ops/test_model_cpu.py) and inherit their batch invariance.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include "avx2_shim.h"  // AVX2 CPUs: the intrinsics below on 256-bit halves (empty on AVX512)
#include "avx512_shim.h"  // AVX512 CPUs without AVX512_BF16 / VNNI: those instructions emulated
#include <omp.h>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#define VIBEKIT_NO_MODULE
namespace vk_lin {
#include "linear_cpu.cpp"
}
namespace vk_att {
#include "attention_cpu.cpp"
}
namespace vk_dec {
#include "decode_cpu.cpp"
}

namespace {

// One packed projection (vibekit.ops.linear.PackedLinear): kind 0 fp32 / 1 bf16 / 2 int8, or
// w8a8 when comp is defined. Empty scale / bias tensors mean none.
struct Linear {
  torch::Tensor data, scale, bias, comp;
  int64_t kind = 0, out_features = 0;

  torch::Tensor operator()(const torch::Tensor& x) const {
    if (comp.defined() && comp.numel())
      return vk_lin::packed_linear_w8a8(x, data, out_features, scale, comp, bias);
    return vk_lin::packed_linear(x, data, kind, out_features, scale, bias);
  }
};

struct Layer {
  torch::Tensor input_norm, post_norm, q_norm, k_norm;  // q/k norm undefined without qk_norm
  Linear qkv, o, gate_up, down;
};

Linear make_linear(const py::dict& d) {
  Linear l;
  l.data = d["data"].cast<torch::Tensor>();
  l.scale = d["scale"].cast<torch::Tensor>();
  l.bias = d["bias"].cast<torch::Tensor>();
  l.comp = d["comp"].cast<torch::Tensor>();
  l.kind = d["kind"].cast<int64_t>();
  l.out_features = d["out_features"].cast<int64_t>();
  return l;
}

// Per-op-kind wall time of the forward, for profiling (off by default: two clock reads per op).
enum OpKind { kLinear = 0, kHead, kAttention, kNorm, kRope, kAct, kOther, kKinds };  // attention: + KV append

struct Timer {
  std::array<double, kKinds>* times;
  std::chrono::steady_clock::time_point last;
  explicit Timer(std::array<double, kKinds>* t) : times(t) {
    if (times) last = std::chrono::steady_clock::now();
  }
  void lap(OpKind kind) {
    if (!times) return;
    auto now = std::chrono::steady_clock::now();
    (*times)[kind] += std::chrono::duration<double>(now - last).count();
    last = now;
  }
};

}  // namespace

class LlamaCpu {
 public:
  // layers: one dict per layer {input_norm, post_norm, q_norm, k_norm (or None), qkv, o,
  // gate_up, down}, each projection a dict {data, scale, bias, comp, kind, out_features}.
  LlamaCpu(torch::Tensor embed, torch::Tensor final_norm, py::dict head, py::list layers,
           int64_t num_qo_heads, int64_t num_kv_heads, int64_t head_dim, double eps,
           double scale)
      : embed_(embed), final_norm_(final_norm), head_(make_linear(head)), hq_(num_qo_heads),
        hk_(num_kv_heads), d_(head_dim), eps_(eps), scale_(scale) {
    for (const auto& item : layers) {
      py::dict d = item.cast<py::dict>();
      Layer l;
      l.input_norm = d["input_norm"].cast<torch::Tensor>();
      l.post_norm = d["post_norm"].cast<torch::Tensor>();
      if (!d["q_norm"].is_none()) {
        l.q_norm = d["q_norm"].cast<torch::Tensor>();
        l.k_norm = d["k_norm"].cast<torch::Tensor>();
      }
      l.qkv = make_linear(d["qkv"].cast<py::dict>());
      l.o = make_linear(d["o"].cast<py::dict>());
      l.gate_up = make_linear(d["gate_up"].cast<py::dict>());
      l.down = make_linear(d["down"].cast<py::dict>());
      layers_.push_back(std::move(l));
    }
  }

  // The KV pages of every layer (the engine's pool; set once, again only if it changes).
  void set_caches(std::vector<torch::Tensor> k_caches, std::vector<torch::Tensor> v_caches) {
    TORCH_CHECK(k_caches.size() == layers_.size() && v_caches.size() == layers_.size(),
                "got ", k_caches.size(), " KV cache layers; the model has ", layers_.size());
    k_caches_ = std::move(k_caches);
    v_caches_ = std::move(v_caches);
  }

  // input_ids, positions, slot_mapping, sample_indices int64; qo_indptr, page_table, kv_lens
  // int32 (ForwardBatch's tensors); cos / sin [N, D] float32. Returns float32 logits [S, V].
  torch::Tensor forward(torch::Tensor input_ids, torch::Tensor positions, torch::Tensor cos,
                        torch::Tensor sin, torch::Tensor slot_mapping, torch::Tensor qo_indptr,
                        torch::Tensor page_table, torch::Tensor kv_lens,
                        torch::Tensor sample_indices) {
    TORCH_CHECK(!k_caches_.empty() || layers_.empty(), "set_caches was not called");
    const int64_t T = input_ids.size(0);
    const int64_t qs = hq_ * d_, kvs = hk_ * d_;
    Timer t(profile_ ? &times_ : nullptr);
    torch::Tensor x = embed_.index_select(0, input_ids);  // [T, hidden]
    t.lap(kOther);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& l = layers_[i];
      torch::Tensor xn = vk_dec::rms_norm(x, l.input_norm, eps_);
      t.lap(kNorm);
      torch::Tensor qkv = l.qkv(xn);
      t.lap(kLinear);
      torch::Tensor q = qkv.narrow(1, 0, qs).view({T, hq_, d_});
      torch::Tensor k = qkv.narrow(1, qs, kvs).view({T, hk_, d_});
      torch::Tensor v = qkv.narrow(1, qs + kvs, kvs).view({T, hk_, d_});
      if (l.q_norm.defined()) {
        q = vk_dec::rms_norm(q.reshape({T * hq_, d_}), l.q_norm, eps_).view({T, hq_, d_});
        k = vk_dec::rms_norm(k.reshape({T * hk_, d_}), l.k_norm, eps_).view({T, hk_, d_});
        t.lap(kNorm);
      }
      std::vector<torch::Tensor> qk = vk_dec::apply_rope(q, k, positions, cos, sin);
      t.lap(kRope);
      vk_dec::kv_append(qk[1], v, k_caches_[i], v_caches_[i], slot_mapping);
      torch::Tensor attn = vk_att::paged_attention(qk[0], k_caches_[i], v_caches_[i], qo_indptr,
                                                   page_table, kv_lens, scale_);
      t.lap(kAttention);
      torch::Tensor o = l.o(attn.view({T, qs}));
      t.lap(kLinear);
      x.add_(o);  // in place: the same bits as x + o, no new tensor
      t.lap(kOther);
      torch::Tensor hn = vk_dec::rms_norm(x, l.post_norm, eps_);
      t.lap(kNorm);
      torch::Tensor gu = l.gate_up(hn);
      t.lap(kLinear);
      torch::Tensor h = vk_dec::silu_and_mul(gu);
      t.lap(kAct);
      torch::Tensor down = l.down(h);
      t.lap(kLinear);
      x.add_(down);
      t.lap(kOther);
    }
    torch::Tensor last = vk_dec::rms_norm(x.index_select(0, sample_indices), final_norm_, eps_);
    t.lap(kNorm);
    torch::Tensor logits = head_(last);
    t.lap(kHead);
    torch::Tensor out = logits.to(torch::kFloat);
    t.lap(kOther);
    if (profile_) ++calls_;
    return out;
  }

  // Seconds spent per kind of op over the forwards since the last call (when profiling is on),
  // and how many forwards that was; resets the totals.
  py::dict take_profile() {
    py::dict d;
    const char* names[] = {"linear", "head", "attention", "norm", "rope", "activation",
                           "other"};
    for (int i = 0; i < kKinds; ++i) d[names[i]] = times_[i];
    d["forwards"] = calls_;
    times_.fill(0.0);
    calls_ = 0;
    return d;
  }

  void set_profile(bool on) { profile_ = on; }

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }

 private:
  torch::Tensor embed_, final_norm_;
  Linear head_;
  std::vector<Layer> layers_;
  std::vector<torch::Tensor> k_caches_, v_caches_;
  int64_t hq_, hk_, d_;
  double eps_, scale_;
  bool profile_ = false;
  std::array<double, kKinds> times_{};
  int64_t calls_ = 0;
};

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<LlamaCpu>(m, "LlamaCpu")
      .def(py::init<torch::Tensor, torch::Tensor, py::dict, py::list, int64_t, int64_t, int64_t,
                    double, double>())
      .def("set_caches", &LlamaCpu::set_caches)
      .def("forward", &LlamaCpu::forward, py::call_guard<py::gil_scoped_release>())
      .def("num_layers", &LlamaCpu::num_layers)
      .def("set_profile", &LlamaCpu::set_profile)
      .def("take_profile", &LlamaCpu::take_profile);
}
