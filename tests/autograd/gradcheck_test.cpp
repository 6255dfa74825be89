// Every op's backward against central finite differences, over random shapes that include odd
// and size-1 dimensions. The coverage test fails for any op in ops/op_list.h that no case runs.
#include <algorithm>
#include <functional>
#include <numeric>

#include "autograd/backward.h"
#include "autograd/checkpoint.h"
#include "autograd/gradcheck.h"
#include "core/random.h"
#include "ops/ops.h"
#include "ops/tape.h"
#include "test_util.h"

namespace loracpp {
namespace {

using namespace ops;
using Inputs = std::vector<Tensor>;

struct GradCase {
  std::string name;
  // Draws inputs (and any shape-dependent settings) for one trial.
  std::function<std::pair<Inputs, autograd::GradCheckFn>(Rng&)> make;
};

std::int64_t pick(Rng& rng, std::initializer_list<std::int64_t> sizes) {
  const auto i = static_cast<std::size_t>(rng.uniform() * static_cast<float>(sizes.size()));
  return *(sizes.begin() + std::min(i, sizes.size() - 1));
}
std::int64_t dim(Rng& rng) { return pick(rng, {1, 2, 3, 5}); }
Tensor leaf(const Shape& shape, Rng& rng, float low = -1.0f, float high = 1.0f) {
  return rand_uniform(shape, rng, low, high).set_requires_grad();
}
Tensor ids(const Shape& shape, std::int64_t limit, Rng& rng) {
  std::vector<std::int64_t> values(static_cast<std::size_t>(shape_numel(shape)));
  for (auto& v : values) v = std::min<std::int64_t>(limit - 1, static_cast<std::int64_t>(rng.uniform() * limit));
  return Tensor::from_ints(values, shape);
}
// Distinct values spaced far beyond the finite-difference step, so max-pooling never ties.
Tensor spaced(const Shape& shape, Rng& rng) {
  std::vector<float> values(static_cast<std::size_t>(shape_numel(shape)));
  std::iota(values.begin(), values.end(), 0.0f);
  for (std::size_t i = values.size(); i > 1; --i) std::swap(values[i - 1], values[rng.next_u64() % i]);
  for (auto& v : values) v = v * 0.05f - 1.0f;
  return Tensor::from_floats(values, shape).set_requires_grad();
}
// A shape that broadcasts against `shape`: some dims set to 1, some leading dims dropped.
Shape broadcastable(const Shape& shape, Rng& rng) {
  Shape out;
  const std::size_t drop = static_cast<std::size_t>(rng.uniform() * static_cast<float>(shape.size()));
  for (std::size_t i = drop; i < shape.size(); ++i) out.push_back(rng.uniform() < 0.4f ? 1 : shape[i]);
  return out;
}
Shape random_shape(Rng& rng, std::size_t rank) {
  Shape s;
  for (std::size_t i = 0; i < rank; ++i) s.push_back(dim(rng));
  return s;
}

using Result = std::pair<Inputs, autograd::GradCheckFn>;

const std::vector<GradCase>& cases() {
  static const std::vector<GradCase> all = {
      {"contiguous", [](Rng& r) -> Result {
         return {{leaf({dim(r), dim(r)}, r)}, [](const Inputs& x) { return contiguous(transpose(x[0], 0, 1)); }};
       }},
      {"to_dtype", [](Rng& r) -> Result {  // rounding steps would defeat finite differences: f32 -> f32
         return {{leaf({dim(r), dim(r)}, r)}, [](const Inputs& x) { return mul(to_dtype(x[0], DType::f32), x[0]); }};
       }},
      {"reshape", [](Rng& r) -> Result {
         const Shape s = random_shape(r, 3);
         return {{leaf(s, r)}, [s](const Inputs& x) { return reshape(x[0], {s[2], -1}); }};
       }},
      {"permute_transpose", [](Rng& r) -> Result {
         return {{leaf(random_shape(r, 3), r)},
                 [](const Inputs& x) { return transpose(permute(x[0], {1, 2, 0}), 0, 2); }};
       }},
      {"slice_split_concat", [](Rng& r) -> Result {
         const std::int64_t n = dim(r) + 2;
         return {{leaf({dim(r), n}, r), leaf({dim(r), 1}, r)}, [n](const Inputs& x) {
                   const auto parts = split(x[0], {1, n - 1}, 1);
                   return concat({slice(parts[1], 1, 1, n - 1), broadcast_to(x[1], {x[1].size(0), n - 2})}, 0);
                 }};
       }},
      {"add_sub", [](Rng& r) -> Result {
         const Shape s = random_shape(r, 3);
         return {{leaf(s, r), leaf(broadcastable(s, r), r)},
                 [](const Inputs& x) { return sub(add(x[0], x[1]), scale(x[1], 0.5f)); }};
       }},
      {"mul_div", [](Rng& r) -> Result {
         const Shape s = random_shape(r, 3);
         return {{leaf(broadcastable(s, r), r), leaf(s, r, 0.5f, 2.0f)},
                 [](const Inputs& x) { return div(mul(x[0], x[1]), add(x[1], x[1])); }};
       }},
      {"mul_div_lhs_broadcast", [](Rng& r) -> Result {
         const Shape s = random_shape(r, 2);
         return {{leaf(s, r), leaf(broadcastable(s, r), r, 0.5f, 2.0f)},
                 [](const Inputs& x) { return div(mul(x[0], x[0]), x[1]); }};
       }},
      {"sum_mean", [](Rng& r) -> Result {
         const bool keep = r.uniform() < 0.5f;
         const std::int64_t d = pick(r, {0, 1, 2, -1});
         return {{leaf(random_shape(r, 3), r)}, [keep, d](const Inputs& x) {
                   return add(sum(x[0], {d}, keep), scale(mean(x[0], {d}, keep), 3.0f));
                 }};
       }},
      {"sum_all", [](Rng& r) -> Result {
         return {{leaf(random_shape(r, 2), r)}, [](const Inputs& x) { return add(sum(x[0]), mean(x[0])); }};
       }},
      {"matmul_batched", [](Rng& r) -> Result {
         const std::int64_t b = dim(r), m = dim(r), k = dim(r), n = dim(r);
         const bool broadcast = r.uniform() < 0.5f;
         return {{leaf({b, m, k}, r), leaf({broadcast ? 1 : b, k, n}, r)},
                 [](const Inputs& x) { return matmul(x[0], x[1]); }};
       }},
      {"matmul_transposed", [](Rng& r) -> Result {
         const std::int64_t m = dim(r), k = dim(r), n = dim(r);
         return {{leaf({k, m}, r), leaf({n, k}, r)},
                 [](const Inputs& x) { return matmul(transpose(x[0], 0, 1), transpose(x[1], 0, 1)); }};
       }},
      {"matmul_2d_rhs", [](Rng& r) -> Result {
         const std::int64_t k = dim(r);
         return {{leaf({dim(r), dim(r), k}, r), leaf({k, dim(r)}, r)},
                 [](const Inputs& x) { return matmul(x[0], x[1]); }};
       }},
      {"linear", [](Rng& r) -> Result {
         const std::int64_t in = dim(r), out = dim(r);
         return {{leaf({dim(r), dim(r), in}, r), leaf({out, in}, r), leaf({out}, r)},
                 [](const Inputs& x) { return linear(x[0], x[1], x[2]); }};
       }},
      {"lora_linear", [](Rng& r) -> Result {
         const std::int64_t in = dim(r), out = dim(r), rank = dim(r);
         return {{leaf({dim(r), dim(r), in}, r), leaf({out, in}, r), leaf({out}, r), leaf({rank, in}, r),
                  leaf({out, rank}, r)},
                 [](const Inputs& x) { return lora_linear(x[0], x[1], x[2], x[3], x[4], 0.75f); }};
       }},
      {"embedding", [](Rng& r) -> Result {
         const std::int64_t vocab = dim(r) + 1;
         const Tensor index = ids({dim(r), dim(r)}, vocab, r);
         return {{leaf({vocab, dim(r)}, r)}, [index](const Inputs& x) { return embedding(x[0], index); }};
       }},
      {"rms_norm", [](Rng& r) -> Result {
         const std::int64_t d = dim(r) + 1;
         return {{leaf({dim(r), dim(r), d}, r), leaf({d}, r, 0.5f, 1.5f)},
                 [](const Inputs& x) { return rms_norm(x[0], x[1], 1e-5f); }};
       }},
      {"layer_norm", [](Rng& r) -> Result {
         const std::int64_t d = dim(r) + 1;
         const bool affine = r.uniform() < 0.7f;
         Inputs in{leaf({dim(r), d}, r)};
         if (affine) in = {in[0], leaf({d}, r), leaf({d}, r)};
         return {in, [affine](const Inputs& x) {
                   return affine ? layer_norm(x[0], x[1], x[2], 1e-5f) : layer_norm(x[0], {}, {}, 1e-5f);
                 }};
       }},
      {"softmax", [](Rng& r) -> Result {
         const std::int64_t d = pick(r, {0, 1, -1});
         return {{leaf(random_shape(r, 3), r, -2.0f, 2.0f)}, [d](const Inputs& x) { return softmax(x[0], d); }};
       }},
      {"silu_gelu", [](Rng& r) -> Result {
         return {{leaf(random_shape(r, 2), r, -3.0f, 3.0f)}, [](const Inputs& x) {
                   return add(add(silu(x[0]), gelu(x[0])), gelu(x[0], GeluApproximation::tanh));
                 }};
       }},
      {"swiglu", [](Rng& r) -> Result {
         const Shape s = random_shape(r, 2);
         return {{leaf(s, r, -3.0f, 3.0f), leaf(s, r)}, [](const Inputs& x) { return swiglu(x[0], x[1]); }};
       }},
      {"dropout", [](Rng& r) -> Result {
         const auto seed = r.next_u64();
         return {{leaf({dim(r) + 2, dim(r) + 2}, r)}, [seed](const Inputs& x) { return dropout(x[0], 0.3f, seed); }};
       }},
      {"cross_entropy", [](Rng& r) -> Result {
         const std::int64_t rows = dim(r) + 1, vocab = dim(r) + 1;
         Tensor targets = ids({rows}, vocab, r);
         auto values = targets.to_ints();
         values[0] = -100;  // one ignored row
         targets = Tensor::from_ints(values, {rows});
         return {{leaf({rows, vocab}, r, -2.0f, 2.0f)},
                 [targets](const Inputs& x) { return cross_entropy(x[0], targets); }};
       }},
      {"linear_cross_entropy", [](Rng& r) -> Result {
         const std::int64_t in = dim(r), vocab = dim(r) + 1, chunk = pick(r, {0, 1, 2});
         Tensor targets = ids({2, dim(r) + 1}, vocab, r);
         auto values = targets.to_ints();
         values[1] = -100;  // one ignored row
         targets = Tensor::from_ints(values, targets.shape());
         return {{leaf({2, targets.size(1), in}, r), leaf({vocab, in}, r)}, [targets, chunk](const Inputs& x) {
                   return linear_cross_entropy(x[0], x[1], targets, -100, chunk);
                 }};
       }},
      {"rope", [](Rng& r) -> Result {
         const auto layout = r.uniform() < 0.5f ? RopeLayout::half : RopeLayout::interleaved;
         const std::int64_t offset = pick(r, {0, 3});
         return {{leaf({dim(r), dim(r), dim(r), 2 * dim(r)}, r)}, [layout, offset](const Inputs& x) {
                   return rope(x[0], {.theta = 100.0f, .layout = layout, .position_offset = offset});
                 }};
       }},
      {"rope_heads", [](Rng& r) -> Result {
         const auto layout = r.uniform() < 0.5f ? RopeLayout::half : RopeLayout::interleaved;
         const std::int64_t heads = pick(r, {1, 3}), offset = pick(r, {0, 3});
         return {{leaf({dim(r), dim(r), heads * 2 * dim(r)}, r)}, [heads, layout, offset](const Inputs& x) {
                   return rope_heads(x[0], heads, {.theta = 100.0f, .layout = layout, .position_offset = offset});
                 }};
       }},
      {"attention", [](Rng& r) -> Result {
         const std::int64_t b = pick(r, {1, 2}), kvh = pick(r, {1, 2}), group = pick(r, {1, 2});
         const std::int64_t q_len = dim(r), kv_len = q_len + pick(r, {0, 2}), d = pick(r, {2, 3});
         const bool causal = r.uniform() < 0.7f;
         const bool masked = r.uniform() < 0.3f;
         Tensor mask = masked ? rand_uniform({1, 1, q_len, kv_len}, r, -1.0f, 0.0f) : Tensor();
         return {{leaf({b, kvh * group, q_len, d}, r), leaf({b, kvh, kv_len, d}, r), leaf({b, kvh, kv_len, 3}, r)},
                 [causal, mask](const Inputs& x) {
                   return scaled_dot_product_attention(x[0], x[1], x[2], {.causal = causal, .mask = mask});
                 }};
       }},
      {"conv2d", [](Rng& r) -> Result {
         const std::int64_t c = pick(r, {1, 2}), o = pick(r, {1, 3}), k = pick(r, {1, 2, 3});
         const Conv2dOptions options{pick(r, {1, 2}), pick(r, {1, 2}), pick(r, {0, 1}), pick(r, {0, 1})};
         return {{leaf({pick(r, {1, 2}), c, k + dim(r), k + dim(r)}, r), leaf({o, c, k, k}, r), leaf({o}, r)},
                 [options](const Inputs& x) { return conv2d(x[0], x[1], x[2], options); }};
       }},
      {"im2col", [](Rng& r) -> Result {
         return {{leaf({1, 2, 3 + dim(r), 2 + dim(r)}, r)},
                 [](const Inputs& x) { return im2col(x[0], 3, 2, {.stride_h = 2, .pad_w = 1}); }};
       }},
      {"max_pool2d", [](Rng& r) -> Result {
         const Pool2dOptions options{3, 2, pick(r, {1, 2}), 0, 1, pick(r, {0, 1})};
         return {{spaced({pick(r, {1, 2}), 2, 3 + dim(r), 2 + dim(r)}, r)},
                 [options](const Inputs& x) { return max_pool2d(x[0], options); }};
       }},
      // A segment recomputed in the backward pass; the second trainable tensor reaches it only as
      // a parameter, and a third one is listed but unused (its gradient is zero).
      {"checkpoint", [](Rng& r) -> Result {
         const std::int64_t n = dim(r), d = pick(r, {2, 3});
         return {{leaf({n, d}, r), leaf({d, d}, r), leaf({d}, r), leaf({2}, r)}, [](const Inputs& x) {
                   const Tensor w = x[1], b = x[2];
                   return autograd::checkpoint(
                       [w, b](const Tensor& in) { return mul(silu(linear(in, w, b)), scale(in, 2.0f)); }, x[0],
                       {w, b, x[3]});
                 }};
       }},
      {"avg_pool2d", [](Rng& r) -> Result {
         const Pool2dOptions options{2, 3, pick(r, {1, 2}), 0, 1, 1};
         return {{leaf({pick(r, {1, 2}), 2, 2 + dim(r), 3 + dim(r)}, r)},
                 [options](const Inputs& x) { return avg_pool2d(x[0], options); }};
       }},
  };
  return all;
}

void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class GradCheck : public ::testing::TestWithParam<GradCase> {};

TEST_P(GradCheck, BackwardMatchesFiniteDifferences) {
  for (std::uint64_t trial = 0; trial < 4; ++trial) {
    Rng rng(1000 * trial + std::hash<std::string>{}(GetParam().name) % 1000);
    auto [inputs, fn] = GetParam().make(rng);
    const auto result = autograd::gradcheck(fn, inputs);
    EXPECT_TRUE(result.ok) << "trial " << trial << "\n" << result.report;
    EXPECT_GT(result.checked, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, GradCheck, ::testing::ValuesIn(cases()), [](const auto& p) { return p.param.name; });

TEST(GradCheckCoverage, EveryOpIsCheckedByFiniteDifferences) {
  autograd::TraceScope trace;
  for (const auto& c : cases()) {
    Rng rng(1);
    auto [inputs, fn] = c.make(rng);
    fn(inputs);
  }
  for (std::size_t op = 0; op < kOpCount; ++op)
    EXPECT_TRUE(trace.saw(static_cast<OpId>(op))) << "op '" << kOpNames[op] << "' has no finite-difference case";
}

TEST(GradCheckHarness, EveryOpFreesItsGraphWithItsOutput) {
  // A backward function that held its own output would keep the whole graph alive (a leak that
  // grows every training step).
  for (const auto& c : cases()) {
    Rng rng(2);
    auto [inputs, fn] = c.make(rng);
    Tensor out = fn(inputs);
    ASSERT_NE(out.grad_fn(), nullptr) << c.name;
    std::weak_ptr<autograd::Node> node = out.grad_fn();
    out = Tensor();
    EXPECT_TRUE(node.expired()) << c.name << " keeps its graph alive";
  }
}

TEST(GradCheckHarness, CatchesAWrongBackward) {
  // A deliberately wrong gradient (2x) must be reported.
  Rng rng(3);
  Tensor x = rand_uniform({4}, rng, -1, 1).set_requires_grad();
  auto wrong = [](const Inputs& in) {
    Tensor y;
    {
      autograd::NoGradGuard raw;
      y = scale(in[0], 1.0f);
    }
    return autograd::record(OpId::scale, y, {in[0]}, [](const autograd::Node&, const Tensor& g) {
      return std::vector<Tensor>{scale(g, 2.0f)};
    });
  };
  EXPECT_FALSE(autograd::gradcheck(wrong, {x}).ok);
}

}  // namespace
}  // namespace loracpp

namespace loracpp {
namespace {

// A node keeps its inputs' values only when the op says its backward reads them; a backward that
// reads an input it did not keep gets a clear error instead of a crash, and one that said so works.
TEST(NodeInputs, ABackwardReadsOnlyTheInputValuesItsOpKept) {
  auto square = [](const Tensor& x, autograd::BackwardReads reads) {
    Tensor y;
    {
      autograd::NoGradGuard raw;
      y = ops::mul(x, x);
    }
    return autograd::record(ops::OpId::mul, y, {x}, [](const autograd::Node& node, const Tensor& g) {
      return std::vector<Tensor>{ops::scale(ops::mul(g, node.inputs[0]), 2.0f)};
    }, reads);
  };
  Tensor leaf = Tensor::from_floats(std::vector<float>{1.0f, -2.0f, 3.0f}, {3});
  leaf.set_requires_grad();
  {
    const Tensor x = ops::scale(leaf, 1.0f);  // an intermediate, so the node holds a handle on it
    EXPECT_TRUE(testing::throws_with_prefix([&] { autograd::backward(ops::sum(square(x, autograd::BackwardReads::shapes))); },
                                            "[tensor] this [3] tensor has no storage"));
  }
  leaf.set_grad(Tensor());
  const Tensor x = ops::scale(leaf, 1.0f);
  autograd::backward(ops::sum(square(x, autograd::BackwardReads::inputs)));
  EXPECT_EQ(leaf.grad().to_floats(), (std::vector<float>{2.0f, -4.0f, 6.0f}));
}

}  // namespace
}  // namespace loracpp
