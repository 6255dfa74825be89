// Every op against values computed independently by PyTorch in float64
// (tests/fixtures/ops.json, made by tools/make_op_fixtures.py): outputs and input gradients in f32,
// then the same cases in bf16 and f16 against the f32 reference within those formats' tolerance.
#include <functional>
#include <map>

#include "autograd/backward.h"
#include "autograd/checkpoint.h"
#include "ops/ops.h"
#include "test_util.h"

namespace loracpp {
namespace {

using namespace ops;
using Inputs = std::vector<Tensor>;
using Builder = std::function<Tensor(const Inputs&)>;

const std::map<std::string, Builder>& builders() {
  static const std::map<std::string, Builder> table = {
      {"contiguous", [](const Inputs& x) { return contiguous(transpose(x[0], 0, 1)); }},
      {"to_dtype_bf16", [](const Inputs& x) { return to_dtype(to_dtype(x[0], DType::bf16), x[0].dtype()); }},
      {"reshape", [](const Inputs& x) { return reshape(x[0], {4, 6}); }},
      {"permute", [](const Inputs& x) { return permute(x[0], {2, 0, 1}); }},
      {"transpose", [](const Inputs& x) { return transpose(x[0], 0, 2); }},
      {"slice", [](const Inputs& x) { return slice(x[0], 1, 1, 4); }},
      {"broadcast_to", [](const Inputs& x) { return broadcast_to(x[0], {2, 3, 4}); }},
      {"concat", [](const Inputs& x) { return concat({x[0], x[1]}, 1); }},
      {"split", [](const Inputs& x) { return split(x[0], {2, 3}, 0)[1]; }},
      {"add", [](const Inputs& x) { return add(x[0], x[1]); }},
      {"sub", [](const Inputs& x) { return sub(x[0], x[1]); }},
      {"mul", [](const Inputs& x) { return mul(x[0], x[1]); }},
      {"div", [](const Inputs& x) { return div(x[0], x[1]); }},
      {"scale", [](const Inputs& x) { return scale(x[0], 2.5f); }},
      {"sum_dim", [](const Inputs& x) { return sum(x[0], {1}); }},
      {"sum_all", [](const Inputs& x) { return sum(x[0]); }},
      {"mean_keepdim", [](const Inputs& x) { return mean(x[0], {0, 2}, true); }},
      {"matmul_2d_rhs", [](const Inputs& x) { return matmul(x[0], x[1]); }},
      {"matmul_broadcast", [](const Inputs& x) { return matmul(x[0], x[1]); }},
      {"matmul_transposed_lhs", [](const Inputs& x) { return matmul(transpose(x[0], -1, -2), x[1]); }},
      {"matmul_transposed_rhs", [](const Inputs& x) { return matmul(x[0], transpose(x[1], -1, -2)); }},
      {"linear", [](const Inputs& x) { return linear(x[0], x[1], x[2]); }},
      {"lora_linear", [](const Inputs& x) { return lora_linear(x[0], x[1], x[2], x[3], x[4], 1.5f); }},
      {"embedding", [](const Inputs& x) { return embedding(x[0], x[1]); }},
      {"rms_norm", [](const Inputs& x) { return rms_norm(x[0], x[1], 1e-5f); }},
      {"layer_norm", [](const Inputs& x) { return layer_norm(x[0], x[1], x[2], 1e-5f); }},
      {"layer_norm_plain", [](const Inputs& x) { return layer_norm(x[0], {}, {}, 1e-5f); }},
      {"softmax_last", [](const Inputs& x) { return softmax(scale(x[0], 3.0f), -1); }},
      {"softmax_middle", [](const Inputs& x) { return softmax(scale(x[0], 3.0f), 1); }},
      {"silu", [](const Inputs& x) { return silu(x[0]); }},
      {"gelu_erf", [](const Inputs& x) { return gelu(x[0]); }},
      {"gelu_tanh", [](const Inputs& x) { return gelu(x[0], GeluApproximation::tanh); }},
      {"swiglu", [](const Inputs& x) { return swiglu(x[0], x[1]); }},
      {"dropout_eval", [](const Inputs& x) { return dropout(x[0], 0.3f, 1, /*training=*/false); }},
      {"cross_entropy", [](const Inputs& x) { return cross_entropy(scale(x[0], 2.0f), x[1]); }},
      {"cross_entropy_3d", [](const Inputs& x) { return cross_entropy(scale(x[0], 2.0f), x[1]); }},
      // Three rows per chunk: eight rows go through as 3 + 3 + 2.
      {"linear_cross_entropy", [](const Inputs& x) { return linear_cross_entropy(x[0], x[1], x[2], -100, 3); }},
      {"checkpoint", [](const Inputs& x) {
         const Tensor w = x[1];
         return autograd::checkpoint([w](const Tensor& in) { return mul(silu(linear(in, w)), in); }, x[0], {w});
       }},
      {"rope_half", [](const Inputs& x) { return rope(x[0], {.theta = 10000.0f, .position_offset = 3}); }},
      {"rope_interleaved",
       [](const Inputs& x) { return rope(x[0], {.theta = 500.0f, .layout = RopeLayout::interleaved}); }},
      {"attention_causal_gqa",
       [](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2], {.causal = true}); }},
      {"attention_kv_longer",
       [](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2], {.causal = true}); }},
      {"attention_mask",
       [](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2], {.mask = x[3]}); }},
      {"im2col", [](const Inputs& x) { return im2col(x[0], 2, 3, {.stride_h = 1, .stride_w = 2, .pad_h = 1}); }},
      {"conv2d",
       [](const Inputs& x) { return conv2d(x[0], x[1], x[2], {.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1}); }},
      {"max_pool2d", [](const Inputs& x) { return max_pool2d(x[0], {.kernel_h = 2, .kernel_w = 2}); }},
      {"max_pool2d_padded",
       [](const Inputs& x) {
         return max_pool2d(x[0], {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1});
       }},
      {"avg_pool2d_padded",
       [](const Inputs& x) {
         return avg_pool2d(x[0], {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1});
       }},
  };
  return table;
}

struct Case {
  std::string name;
  nlohmann::json json;
};

std::vector<Case> load_cases() {
  std::vector<Case> cases;
  const nlohmann::json fixture = testing::load_fixture("ops.json");
  for (const auto& c : fixture["cases"]) cases.push_back({c["name"], c});
  return cases;
}

// Builds the inputs of a case: floats in `dtype`, integers in `index_dtype`; floats with a
// reference gradient require grad.
Inputs make_inputs(const nlohmann::json& c, DType dtype, DType index_dtype) {
  Inputs inputs;
  for (std::size_t i = 0; i < c["inputs"].size(); ++i) {
    const auto& in = c["inputs"][i];
    const Shape shape = in["shape"].get<Shape>();
    if (in["dtype"] == "f32") {
      const auto values = in["data"].get<std::vector<float>>();
      Tensor t = Tensor::from_floats(values, shape, dtype);
      if (!c["grads"][i].is_null()) t.set_requires_grad();
      inputs.push_back(t);
    } else {
      inputs.push_back(Tensor::from_ints(in["data"].get<std::vector<std::int64_t>>(), shape, index_dtype));
    }
  }
  return inputs;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class OpReference : public ::testing::TestWithParam<Case> {};

TEST_P(OpReference, MatchesTorchInF32) {
  const auto& c = GetParam().json;
  const auto it = builders().find(GetParam().name);
  ASSERT_NE(it, builders().end()) << "no builder for fixture case " << GetParam().name;
  Inputs inputs = make_inputs(c, DType::f32, DType::i64);
  const Tensor out = it->second(inputs);
  EXPECT_EQ(out.shape(), c["output"]["shape"].get<Shape>());
  EXPECT_TRUE(testing::all_close(out.to_floats(), c["output"]["data"].get<std::vector<double>>(), 1e-5, 1e-4));
  const auto upstream = c["grad_output"].get<std::vector<float>>();
  autograd::backward(out, Tensor::from_floats(upstream, out.shape()));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (c["grads"][i].is_null()) continue;
    ASSERT_TRUE(inputs[i].grad().defined()) << "input " << i << " got no gradient";
    EXPECT_TRUE(testing::all_close(inputs[i].grad().to_floats(), c["grads"][i].get<std::vector<double>>(), 1e-5,
                                   1e-4))
        << "gradient of input " << i;
  }
}

// bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%), f16 keeps 11 (0.05%). Each op rounds
// its inputs and its output, and a case chains up to a few ops, so errors are allowed up to ~8
// steps of the format relative to the largest reference value.
void check_low_precision(const Case& test, DType dtype, DType index_dtype, double step) {
  const auto& c = test.json;
  Inputs inputs = make_inputs(c, dtype, index_dtype);
  const Tensor out = builders().at(test.name)(inputs);
  EXPECT_EQ(out.dtype(), dtype);
  const auto want = c["output"]["data"].get<std::vector<double>>();
  const double tol = 8 * step * std::max(1.0, testing::max_abs(want));
  EXPECT_TRUE(testing::all_close(out.to_floats(), want, tol, 0.0)) << dtype_name(dtype) << " output";
  const auto upstream = c["grad_output"].get<std::vector<float>>();
  autograd::backward(out, Tensor::from_floats(upstream, out.shape(), dtype));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (c["grads"][i].is_null()) continue;
    ASSERT_TRUE(inputs[i].grad().defined());
    EXPECT_EQ(inputs[i].grad().dtype(), dtype);
    const auto grad_want = c["grads"][i].get<std::vector<double>>();
    const double grad_tol = 8 * step * std::max(1.0, testing::max_abs(grad_want));
    EXPECT_TRUE(testing::all_close(inputs[i].grad().to_floats(), grad_want, grad_tol, 0.0))
        << dtype_name(dtype) << " gradient of input " << i;
  }
}

// The same case with every input on the GPU: outputs and gradients must stay there and match the
// reference as the CPU's do. Ops whose kernels have no CUDA version yet must say so.
bool has_cuda_kernels(const std::string& name) {
  for (const char* prefix : {"layer_norm", "im2col", "conv2d", "max_pool2d", "avg_pool2d"})
    if (name.rfind(prefix, 0) == 0) return false;
  return true;
}

TEST_P(OpReference, MatchesTorchOnCuda) {
  if (!testing::cuda_available()) GTEST_SKIP() << "not run: " << testing::cuda_unavailable_reason();
  const auto& c = GetParam().json;
  Inputs inputs = make_inputs(c, DType::f32, DType::i64);
  for (auto& t : inputs) {
    const bool trains = t.requires_grad();
    t = t.to(Device::cuda);
    if (trains) t.set_requires_grad();
  }
  if (!has_cuda_kernels(GetParam().name)) {
    EXPECT_TRUE(testing::throws_containing([&] { builders().at(GetParam().name)(inputs); }, "has no CUDA implementation"));
    return;
  }
  const Tensor out = builders().at(GetParam().name)(inputs);
  EXPECT_EQ(out.device(), Device::cuda);
  EXPECT_TRUE(testing::all_close(out.to_floats(), c["output"]["data"].get<std::vector<double>>(), 1e-5, 1e-4));
  const auto upstream = c["grad_output"].get<std::vector<float>>();
  autograd::backward(out, Tensor::from_floats(upstream, out.shape()).to(Device::cuda));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (c["grads"][i].is_null()) continue;
    ASSERT_TRUE(inputs[i].grad().defined()) << "input " << i << " got no gradient";
    EXPECT_EQ(inputs[i].grad().device(), Device::cuda);
    EXPECT_TRUE(testing::all_close(inputs[i].grad().to_floats(), c["grads"][i].get<std::vector<double>>(), 1e-5,
                                   1e-4))
        << "gradient of input " << i;
  }
}

TEST_P(OpReference, Bf16WithinBf16Tolerance) { check_low_precision(GetParam(), DType::bf16, DType::i32, 1.0 / 256); }
TEST_P(OpReference, F16WithinF16Tolerance) { check_low_precision(GetParam(), DType::f16, DType::i32, 1.0 / 2048); }

INSTANTIATE_TEST_SUITE_P(Fixtures, OpReference, ::testing::ValuesIn(load_cases()),
                         [](const auto& p) { return p.param.name; });

TEST(OpReferenceCoverage, EveryOpHasAReferenceCase) {
  autograd::TraceScope trace;
  for (const auto& test : load_cases()) builders().at(test.name)(make_inputs(test.json, DType::f32, DType::i64));
  for (std::size_t op = 0; op < kOpCount; ++op)
    EXPECT_TRUE(trace.saw(static_cast<OpId>(op))) << "op '" << kOpNames[op] << "' has no case in ops.json";
}

TEST(OpReferenceCoverage, EveryFixtureCaseHasABuilder) {
  for (const auto& test : load_cases()) EXPECT_TRUE(builders().count(test.name)) << test.name;
}

}  // namespace
}  // namespace loracpp
