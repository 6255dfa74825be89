// The CUDA backend against the CPU backend, kernel by kernel, on random inputs: every kernel the
// CUDA table fills must give the CPU kernel's result (within float rounding of a different
// summation order). Where no GPU is present (CI) these tests are reported as skipped, with the
// reason; they are never counted as passing there.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/kernels.h"
#include "core/error.h"
#include "core/random.h"
#include "ops/ops.h"
#include "test_util.h"
#if defined(LORACPP_WITH_CUDA)
#include "backend/cuda/cuda_backend.h"
#endif

namespace loracpp::backend {
namespace {

#if defined(LORACPP_WITH_CUDA)

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::available()) GTEST_SKIP() << "not run: " << cuda::unavailable_reason();
  }
  void TearDown() override {
    for (auto& [p, n] : buffers_) cuda::release(p, n);
  }
  // A device copy of host values.
  template <class T>
  T* on_device(const std::vector<T>& host) {
    const std::size_t bytes = std::max<std::size_t>(host.size(), 1) * sizeof(T);
    void* p = cuda::allocate(bytes);
    buffers_.emplace_back(p, bytes);
    cuda::copy_to_device(p, host.data(), host.size() * sizeof(T));
    return static_cast<T*>(p);
  }
  template <class T>
  std::vector<T> to_host(const T* device, std::size_t n) {
    std::vector<T> host(n);
    cuda::copy_to_host(host.data(), device, n * sizeof(T));
    return host;
  }
  static std::vector<float> random(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = scale * (2.0f * uniform_at(seed, i) - 1.0f);
    return v;
  }
  static void expect_close(const std::vector<float>& got, const std::vector<float>& want, float tolerance = 1e-5f) {
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], want[i], tolerance * (1.0f + std::abs(want[i]))) << "element " << i;
  }
  const KernelTable& gpu = kernels(Device::cuda);
  std::vector<std::pair<void*, std::size_t>> buffers_;
};

TEST_F(CudaKernels, GemmInEveryTransposeMatchesTheCpu) {
  const i64 m = 37, n = 29, k = 45;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const auto a = random(static_cast<std::size_t>(m * k), 1), b = random(static_cast<std::size_t>(k * n), 2);
      std::vector<float> want(static_cast<std::size_t>(m * n));
      const i64 lda = ta ? m : k, ldb = tb ? k : n;
      cpu::gemm(ta, tb, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, want.data(), n);
      float* c = on_device(std::vector<float>(want.size()));
      gpu.gemm(ta, tb, m, n, k, 1.0f, on_device(a), lda, on_device(b), ldb, 0.0f, c, n);
      expect_close(to_host(c, want.size()), want, 1e-4f);
    }
}

TEST_F(CudaKernels, Bf16GemmMatchesTheCpu) {
  const i64 m = 33, n = 40, k = 64;
  std::vector<std::uint16_t> a(static_cast<std::size_t>(m * k)), b(static_cast<std::size_t>(n * k));
  const auto af = random(a.size(), 3), bf = random(b.size(), 4);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = float_to_bf16(af[i]);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = float_to_bf16(bf[i]);
  // c = 0.5 a bᵀ - 2 c over a c of ones, on both.
  std::vector<float> want(static_cast<std::size_t>(m * n), 1.0f);
  cpu::gemm_bf16(true, m, n, k, 0.5f, a.data(), k, b.data(), k, -2.0f, want.data(), n);
  float* c = on_device(std::vector<float>(want.size(), 1.0f));
  gpu.gemm_bf16(true, m, n, k, 0.5f, on_device(a), k, on_device(b), k, -2.0f, c, n);
  expect_close(to_host(c, want.size()), want, 1e-4f);
}

TEST_F(CudaKernels, RowKernelsMatchTheCpu) {
  const i64 rows = 13, cols = 300;
  const auto x = random(static_cast<std::size_t>(rows * cols), 5, 4.0f), w = random(static_cast<std::size_t>(cols), 6),
             dy = random(x.size(), 7);
  std::vector<float> y(x.size()), rstd(static_cast<std::size_t>(rows)), dx(x.size()), dw(static_cast<std::size_t>(cols));
  cpu::rms_norm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, cols, 1e-5f);
  float* gy = on_device(std::vector<float>(y.size()));
  float* grstd = on_device(std::vector<float>(rstd.size()));
  const float* gx = on_device(x);
  const float* gw = on_device(w);
  gpu.rms_norm_forward(gx, gw, gy, grstd, rows, cols, 1e-5f);
  expect_close(to_host(gy, y.size()), y);
  cpu::rms_norm_backward(x.data(), w.data(), rstd.data(), dy.data(), dx.data(), dw.data(), rows, cols);
  float* gdx = on_device(std::vector<float>(dx.size()));
  float* gdw = on_device(std::vector<float>(dw.size()));
  gpu.rms_norm_backward(gx, gw, grstd, on_device(dy), gdx, gdw, rows, cols);
  expect_close(to_host(gdx, dx.size()), dx, 1e-4f);
  expect_close(to_host(gdw, dw.size()), dw, 1e-4f);

  std::vector<float> s(x.size()), ds(x.size());
  cpu::softmax_forward(x.data(), s.data(), rows, cols);
  float* gs = on_device(std::vector<float>(s.size()));
  gpu.softmax_forward(gx, gs, rows, cols);
  expect_close(to_host(gs, s.size()), s);
  cpu::softmax_backward(s.data(), dy.data(), ds.data(), rows, cols);
  float* gds = on_device(std::vector<float>(ds.size()));
  gpu.softmax_backward(gs, on_device(dy), gds, rows, cols);
  expect_close(to_host(gds, ds.size()), ds, 1e-4f);

  std::vector<i64> targets(static_cast<std::size_t>(rows));
  for (i64 r = 0; r < rows; ++r) targets[static_cast<std::size_t>(r)] = r == 3 ? -100 : (r * 37) % cols;
  std::vector<float> loss(static_cast<std::size_t>(rows)), lse(loss.size()), dl(x.size());
  cpu::cross_entropy_forward(x.data(), targets.data(), loss.data(), lse.data(), rows, cols, -100);
  float* gloss = on_device(std::vector<float>(loss.size()));
  float* glse = on_device(std::vector<float>(lse.size()));
  const i64* gt = on_device(targets);
  gpu.cross_entropy_forward(gx, gt, gloss, glse, rows, cols, -100);
  expect_close(to_host(gloss, loss.size()), loss, 1e-5f);
  cpu::cross_entropy_backward(x.data(), targets.data(), lse.data(), 0.5f, dl.data(), rows, cols, -100);
  float* gdl = on_device(std::vector<float>(dl.size()));
  gpu.cross_entropy_backward(gx, gt, glse, 0.5f, gdl, rows, cols, -100);
  expect_close(to_host(gdl, dl.size()), dl, 1e-5f);
  std::vector<float> floss(loss.size()), flse(lse.size());
  std::vector<std::uint16_t> dl16(x.size());
  cpu::cross_entropy_with_bf16_grad(x.data(), targets.data(), floss.data(), flse.data(), 0.5f, dl16.data(), rows, cols,
                                    -100);
  float* gfloss = on_device(std::vector<float>(loss.size()));
  float* gflse = on_device(std::vector<float>(lse.size()));
  std::uint16_t* gdl16 = on_device(std::vector<std::uint16_t>(dl16.size()));
  gpu.cross_entropy_with_bf16_grad(gx, gt, gfloss, gflse, 0.5f, gdl16, rows, cols, -100);
  expect_close(to_host(gfloss, loss.size()), floss, 1e-5f);
  expect_close(to_host(gflse, lse.size()), flse, 1e-5f);
  const auto got16 = to_host(gdl16, dl16.size());
  std::vector<float> want_grad(dl16.size()), got_grad(dl16.size());
  for (std::size_t i = 0; i < dl16.size(); ++i) {
    want_grad[i] = bf16_to_float(dl16[i]);
    got_grad[i] = bf16_to_float(got16[i]);
  }
  expect_close(got_grad, want_grad, 2e-3f);  // the same value on either side of a bf16 rounding
  std::vector<float> inplace = x;
  cpu::cross_entropy_with_grad(inplace.data(), targets.data(), floss.data(), flse.data(), 0.5f, inplace.data(), rows,
                               cols, -100);
  float* ginplace = on_device(x);
  gpu.cross_entropy_with_grad(ginplace, gt, gfloss, gflse, 0.5f, ginplace, rows, cols, -100);
  expect_close(to_host(gfloss, loss.size()), floss, 1e-5f);
  expect_close(to_host(ginplace, inplace.size()), inplace, 1e-5f);

  std::vector<float> sums(static_cast<std::size_t>(rows));
  cpu::sum_rows(x.data(), sums.data(), rows, cols);
  float* gsums = on_device(std::vector<float>(sums.size()));
  gpu.sum_rows(gx, gsums, rows, cols);
  expect_close(to_host(gsums, sums.size()), sums, 1e-5f);
  EXPECT_NEAR(gpu.sum_squares(gx, rows * cols), cpu::sum_squares(x.data(), rows * cols), 1e-6 * cpu::sum_squares(x.data(), rows * cols));
}

TEST_F(CudaKernels, ElementwiseKernelsMatchTheCpu) {
  const i64 n = 1000;
  const auto a = random(static_cast<std::size_t>(n), 8, 3.0f), b = random(static_cast<std::size_t>(n), 9, 3.0f),
             dy = random(static_cast<std::size_t>(n), 10);
  const float* ga = on_device(a);
  const float* gb = on_device(b);
  const float* gdy = on_device(dy);
  std::vector<float> want(static_cast<std::size_t>(n)), want2(want.size());
  float* out = on_device(std::vector<float>(want.size()));
  float* out2 = on_device(std::vector<float>(want.size()));
  for (auto op : {UnaryOp::silu, UnaryOp::gelu_tanh, UnaryOp::gelu_erf}) {
    cpu::unary_forward(op, a.data(), want.data(), n);
    gpu.unary_forward(op, ga, out, n);
    expect_close(to_host(out, want.size()), want);
    cpu::unary_backward(op, a.data(), dy.data(), want.data(), n);
    gpu.unary_backward(op, ga, gdy, out, n);
    expect_close(to_host(out, want.size()), want, 1e-4f);
  }
  cpu::swiglu_forward(a.data(), b.data(), want.data(), n);
  gpu.swiglu_forward(ga, gb, out, n);
  expect_close(to_host(out, want.size()), want);
  cpu::swiglu_backward(a.data(), b.data(), dy.data(), want.data(), want2.data(), n);
  gpu.swiglu_backward(ga, gb, gdy, out, out2, n);
  expect_close(to_host(out, want.size()), want);
  expect_close(to_host(out2, want2.size()), want2);
  std::vector<std::uint16_t> want16(want.size()), want16_up(want.size());
  cpu::swiglu_backward_bf16(a.data(), b.data(), dy.data(), want16.data(), want16_up.data(), n);
  std::uint16_t* out16 = on_device(std::vector<std::uint16_t>(want.size()));
  std::uint16_t* out16_up = on_device(std::vector<std::uint16_t>(want.size()));
  gpu.swiglu_backward_bf16(ga, gb, gdy, out16, out16_up, n);
  for (const auto& [got16, expected16] : {std::pair{to_host(out16, want.size()), want16},
                                          std::pair{to_host(out16_up, want.size()), want16_up}}) {
    std::vector<float> got_values(got16.size()), want_values(got16.size());
    for (std::size_t i = 0; i < got16.size(); ++i) {
      got_values[i] = bf16_to_float(got16[i]);
      want_values[i] = bf16_to_float(expected16[i]);
    }
    expect_close(got_values, want_values, 8e-3f);  // the same value on either side of a bf16 rounding
  }
  // Broadcast: [n/10, 10] op [10].
  const i64 shape[] = {n / 10, 10}, a_strides[] = {10, 1}, b_strides[] = {0, 1};
  for (auto op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div}) {
    cpu::binary(op, a.data(), a_strides, b.data(), b_strides, want.data(), shape, 2);
    gpu.binary(op, ga, a_strides, gb, b_strides, out, shape, 2);
    expect_close(to_host(out, want.size()), want);
  }
  cpu::dropout_mask(want.data(), n, 0.3f, 42);
  gpu.dropout_mask(out, n, 0.3f, 42);
  EXPECT_EQ(to_host(out, want.size()), want);  // the same counter-based mask, bit for bit
}

TEST_F(CudaKernels, RopeEmbeddingAndAdamWMatchTheCpu) {
  const i64 outer = 3, seq = 7, head_dim = 16;
  const auto x = random(static_cast<std::size_t>(outer * seq * head_dim), 11);
  const auto inv_freq = ops::rope_inv_freq(head_dim, 10000.0f);
  std::vector<float> want(x.size());
  float* out = on_device(std::vector<float>(x.size()));
  for (auto layout : {RopeLayout::half, RopeLayout::interleaved}) {
    cpu::rope(x.data(), want.data(), outer, seq, head_dim, inv_freq.data(), 5, layout, false);
    gpu.rope(on_device(x), out, outer, seq, head_dim, on_device(inv_freq), 5, layout, false);
    expect_close(to_host(out, want.size()), want, 1e-4f);
  }
  const i64 vocab = 11, dim = 8, n = 9;
  const auto weight = random(static_cast<std::size_t>(vocab * dim), 12);
  const std::vector<i64> ids = {1, 4, 4, 0, 10, 4, 2, 1, 7};
  std::vector<float> emb(static_cast<std::size_t>(n * dim));
  cpu::embedding_forward(weight.data(), ids.data(), emb.data(), n, dim, sizeof(float));
  float* gemb = on_device(std::vector<float>(emb.size()));
  gpu.embedding_forward(on_device(weight), on_device(ids), gemb, n, dim, sizeof(float));
  expect_close(to_host(gemb, emb.size()), emb);
  std::vector<float> dweight(weight.size());
  cpu::embedding_backward(emb.data(), ids.data(), dweight.data(), n, dim);
  float* gdw = on_device(std::vector<float>(dweight.size()));
  gpu.embedding_backward(gemb, on_device(ids), gdw, n, dim);
  expect_close(to_host(gdw, dweight.size()), dweight);

  auto param = random(50, 13), grad = random(50, 14), m(std::vector<float>(50, 0.1f)), v(std::vector<float>(50, 0.2f));
  float* gp = on_device(param);
  float* gm = on_device(m);
  float* gv = on_device(v);
  gpu.adamw_update(gp, on_device(grad), gm, gv, 50, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.1f, 0.001f);
  cpu::adamw_update(param.data(), grad.data(), m.data(), v.data(), 50, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.1f, 0.001f);
  expect_close(to_host(gp, 50), param);
  expect_close(to_host(gv, 50), v);
}

TEST_F(CudaKernels, ConversionsAndStridedCopiesMatchTheCpu) {
  const auto x = random(100, 15, 50.0f);
  std::vector<std::uint16_t> want(100);
  cpu::convert(x.data(), DType::f32, want.data(), DType::bf16, 100);
  auto* out = on_device(std::vector<std::uint16_t>(100));
  gpu.convert(on_device(x), DType::f32, out, DType::bf16, 100);
  EXPECT_EQ(to_host(out, 100), want);  // round to nearest even on both
  const i64 shape[] = {10, 10}, src_strides[] = {1, 10}, dst_strides[] = {10, 1};  // a transpose
  std::vector<float> t(100);
  cpu::copy_strided(x.data(), src_strides, t.data(), dst_strides, shape, 2, sizeof(float));
  float* gt = on_device(std::vector<float>(100));
  gpu.copy_strided(on_device(x), src_strides, gt, dst_strides, shape, 2, sizeof(float));
  EXPECT_EQ(to_host(gt, 100), t);
}

// The tensor-core attention (bf16 products) against the CPU's f32 kernels, forward and backward:
// grouped heads, causal with more keys than queries, an additive mask, partial tiles.
TEST_F(CudaKernels, FusedAttentionMatchesTheCpuWithinBf16Rounding) {
  struct Case {
    i64 batch, kv_heads, group, q_len, kv_len, dim;
    bool causal, masked;
  };
  for (const Case c : {Case{2, 2, 2, 100, 100, 64, true, false}, Case{2, 1, 3, 37, 100, 32, true, true},
                       Case{1, 3, 1, 130, 70, 64, false, true}, Case{1, 1, 2, 64, 64, 32, false, false}}) {
    SCOPED_TRACE(::testing::Message() << "q_len " << c.q_len << " kv_len " << c.kv_len << " dim " << c.dim);
    const i64 heads = c.batch * c.kv_heads * c.group;
    const auto q = random(static_cast<std::size_t>(heads * c.q_len * c.dim), 11);
    const auto k = random(static_cast<std::size_t>(c.batch * c.kv_heads * c.kv_len * c.dim), 12);
    const auto v = random(static_cast<std::size_t>(c.batch * c.kv_heads * c.kv_len * c.dim), 13);
    const auto dout = random(static_cast<std::size_t>(heads * c.q_len * c.dim), 14);
    std::vector<float> mask;
    if (c.masked) mask = random(static_cast<std::size_t>(c.batch * c.q_len * c.kv_len), 15);  // [batch, 1, q, kv]
    AttentionGeometry g{c.batch, c.kv_heads, c.group, c.q_len, c.kv_len, c.dim, c.dim,
                        1.0f / std::sqrt(static_cast<float>(c.dim)), c.causal, c.masked ? c.q_len * c.kv_len : 0, 0,
                        /*bf16_products=*/false};
    const std::size_t q_n = q.size(), kv_n = k.size(), rows = static_cast<std::size_t>(heads * c.q_len);
    std::vector<float> out(q_n), lse(rows), dq(q_n), dk(kv_n), dv(kv_n);
    const float* m = c.masked ? mask.data() : nullptr;
    cpu::attention_forward(q.data(), k.data(), v.data(), m, out.data(), lse.data(), g);
    cpu::attention_backward(q.data(), k.data(), v.data(), m, out.data(), lse.data(), dout.data(), dq.data(), dk.data(),
                            dv.data(), g);
    g.bf16_products = true;
    ASSERT_TRUE(cuda::attention_fits(c.dim, c.dim, true));
    const float *qd = on_device(q), *kd = on_device(k), *vd = on_device(v), *dod = on_device(dout);
    const float* md = c.masked ? on_device(mask) : nullptr;
    float *od = on_device(std::vector<float>(q_n)), *lsed = on_device(std::vector<float>(rows));
    float *dqd = on_device(std::vector<float>(q_n)), *dkd = on_device(std::vector<float>(kv_n)),
          *dvd = on_device(std::vector<float>(kv_n));
    gpu.attention_forward(qd, kd, vd, md, od, lsed, g);
    gpu.attention_backward(qd, kd, vd, md, od, lsed, dod, dqd, dkd, dvd, g);
    expect_close(to_host(od, q_n), out, 2e-2f);
    expect_close(to_host(lsed, rows), lse, 2e-2f);
    expect_close(to_host(dqd, q_n), dq, 4e-2f);
    expect_close(to_host(dkd, kv_n), dk, 4e-2f);
    expect_close(to_host(dvd, kv_n), dv, 4e-2f);
  }
  EXPECT_FALSE(cuda::attention_fits(64, 64, false));  // f32 attention stays composed of cuBLAS products
  EXPECT_FALSE(cuda::attention_fits(128, 128, true));
}

// Key and value heads laid apart (a KV cache's slice, NaN in the room between heads) give what
// packed heads give, forward and backward.
TEST_F(CudaKernels, FusedAttentionReadsHeadsLaidApartAsPackedOnes) {
  const i64 batch = 2, kv_heads = 2, group = 2, q_len = 40, kv_len = 90, capacity = 128, dim = 64;
  const i64 kv_items = batch * kv_heads, heads = kv_items * group;
  const auto q = random(static_cast<std::size_t>(heads * q_len * dim), 21);
  const auto k = random(static_cast<std::size_t>(kv_items * kv_len * dim), 22);
  const auto v = random(static_cast<std::size_t>(kv_items * kv_len * dim), 23);
  const auto dout = random(static_cast<std::size_t>(heads * q_len * dim), 24);
  auto apart = [&](const std::vector<float>& packed) {
    std::vector<float> out(static_cast<std::size_t>(kv_items * capacity * dim), std::nanf(""));
    for (i64 h = 0; h < kv_items; ++h)
      std::copy_n(packed.begin() + h * kv_len * dim, kv_len * dim, out.begin() + h * capacity * dim);
    return out;
  };
  AttentionGeometry packed{batch, kv_heads, group, q_len, kv_len, dim, dim, 0.125f, true, 0, 0, true};
  AttentionGeometry spaced = packed;
  spaced.k_head_stride = spaced.v_head_stride = capacity * dim;
  const std::size_t q_n = q.size(), kv_n = k.size(), rows = static_cast<std::size_t>(heads * q_len);
  auto run = [&](const std::vector<float>& keys, const std::vector<float>& values, const AttentionGeometry& g) {
    const float *qd = on_device(q), *kd = on_device(keys), *vd = on_device(values), *dod = on_device(dout);
    float *od = on_device(std::vector<float>(q_n)), *lsed = on_device(std::vector<float>(rows));
    float *dqd = on_device(std::vector<float>(q_n)), *dkd = on_device(std::vector<float>(kv_n)),
          *dvd = on_device(std::vector<float>(kv_n));
    gpu.attention_forward(qd, kd, vd, nullptr, od, lsed, g);
    gpu.attention_backward(qd, kd, vd, nullptr, od, lsed, dod, dqd, dkd, dvd, g);
    return std::vector<std::vector<float>>{to_host(od, q_n), to_host(lsed, rows), to_host(dqd, q_n),
                                           to_host(dkd, kv_n), to_host(dvd, kv_n)};
  };
  const auto want = run(k, v, packed), got = run(apart(k), apart(v), spaced);
  const char* names[] = {"output", "lse", "dq", "dk", "dv"};
  for (std::size_t t = 0; t < want.size(); ++t) {  // the backward's atomic sums may take another order
    SCOPED_TRACE(names[t]);
    expect_close(got[t], want[t], 1e-5f);
  }
}

TEST_F(CudaKernels, KernelsWithoutACudaVersionSaySo) {
  try {
    LORACPP_KERNEL(Device::cuda, layer_norm_forward);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no CUDA implementation"), std::string::npos);
  }
}

#else

TEST(CudaKernels, NotBuilt) { GTEST_SKIP() << "not run: this build has no CUDA backend (nvcc was not found)"; }

#endif

TEST(CudaBackend, AMissingCudaKernelIsALoudErrorNeverAHostFallback) {
  // sgd has no CUDA version in any build: asking for it names the kernel and the device.
  try {
    LORACPP_KERNEL(Device::cuda, sgd_update);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[sgd_update] has no CUDA implementation"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace loracpp::backend
