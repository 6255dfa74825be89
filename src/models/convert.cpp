#include "models/convert.h"

#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "models/gguf_names.h"
#include "ops/tape.h"

namespace loracpp::models {

Tensor permute_rotary_rows(const Tensor& weight, std::int64_t heads, ops::RopeLayout from, ops::RopeLayout to) {
  if (from == to) return weight;
  const std::int64_t rows = weight.size(0), head_dim = rows / heads;
  const Shape rest(weight.shape().begin() + 1, weight.shape().end());
  const std::int64_t cols = shape_numel(rest);
  Shape split{heads, head_dim / 2, 2, cols};
  // interleaved row h*d + 2i + j  <->  half row h*d + j*d/2 + i
  const Tensor x = ops::reshape(ops::contiguous(weight), from == ops::RopeLayout::interleaved
                                                              ? split
                                                              : Shape{heads, 2, head_dim / 2, cols});
  Shape back{rows};
  back.insert(back.end(), rest.begin(), rest.end());
  return ops::reshape(ops::contiguous(ops::transpose(x, 1, 2)), back);
}

namespace {

bool is_rotary_projection(const std::string& name) {
  return name.find("self_attn.q_proj.") != std::string::npos || name.find("self_attn.k_proj.") != std::string::npos;
}

// Weights under HuggingFace names, in `layout`'s rotary row order and in dtype.
std::vector<std::pair<std::string, Tensor>> export_weights(const LlamaModel& model, ops::RopeLayout layout, DType dtype) {
  const auto& c = model.config();
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, shape] : llama_tensor_shapes(c)) {
    Tensor t = model.weight(name);
    if (is_block_dtype(t.dtype())) t = ops::to_dtype(t, DType::f32);  // rows are permuted and converted widened
    if (is_rotary_projection(name)) {
      const std::int64_t heads = name.find("q_proj") != std::string::npos ? c.num_heads : c.num_kv_heads;
      t = permute_rotary_rows(t, heads, c.rope_layout, layout);
    }
    // Blocks (GGUF only): the matrices whose rows are whole blocks, as llama.cpp's quantiser does;
    // norms and any other tensor stay f32. Under q4_0 the output layer (a tied table included)
    // takes q8_0, as LlamaModel::store_weights does.
    DType out_dtype = dtype;
    if (dtype == DType::q4_0 && (name == "lm_head.weight" || (c.tie_word_embeddings && name == "model.embed_tokens.weight")))
      out_dtype = DType::q8_0;
    if (is_block_dtype(out_dtype) && (t.dim() != 2 || t.size(1) % dtype_block(out_dtype) != 0)) out_dtype = DType::f32;
    out.emplace_back(name, ops::contiguous(ops::to_dtype(t, out_dtype)));
  }
  return out;
}

void save_hf(const LlamaModel& model, const tokenizers::Llama2cTokenizer* tokenizer, const std::filesystem::path& folder,
             DType dtype) {
  std::error_code error;
  std::filesystem::create_directories(folder, error);
  check(std::filesystem::is_directory(folder), "convert", "cannot create folder {}: {}", folder.string(), error.message());
  LlamaConfig config = model.config();
  config.rope_layout = ops::RopeLayout::half;
  auto json = config.to_hf_json();
  json["torch_dtype"] = dtype == DType::bf16 ? "bfloat16" : dtype == DType::f16 ? "float16" : "float32";
  io::write_safetensors(folder / "model.safetensors", export_weights(model, ops::RopeLayout::half, dtype),
                        {{"format", "pt"}});
  io::write_file_atomically(folder / "config.json", [&](std::ostream& out) { out << json.dump(2) << "\n"; });
  if (tokenizer) tokenizer->save(folder / "tokenizer.bin");
}

void save_gguf(const LlamaModel& model, const tokenizers::Llama2cTokenizer* tokenizer, const std::filesystem::path& path,
               DType dtype) {
  const auto& c = model.config();
  const GgufArch arch = gguf_arch_for(c.model_type);
  io::GgufFile file;
  file.metadata = gguf_metadata(c, arch);
  if (tokenizer) add_gguf_tokenizer(file.metadata, *tokenizer);
  for (auto& [name, tensor] : export_weights(model, arch.rope_layout, dtype))
    file.tensors.emplace_back(gguf_tensor_name(name), tensor);
  io::write_gguf(path, file);
}

}  // namespace

void save_model(const LlamaModel& model, const tokenizers::Tokenizer* tokenizer, const std::filesystem::path& out,
                const std::string& format, DType dtype) {
  autograd::NoGradGuard no_grad;
  const auto* spm = dynamic_cast<const tokenizers::Llama2cTokenizer*>(tokenizer);
  check(is_floating(dtype), "convert", "output dtype must be f32, f16, bf16, q8_0 or q4_0, got {}", dtype_name(dtype));
  check(!is_block_dtype(dtype) || format == "gguf", "convert",
        "{} is written to GGUF files only (safetensors has no block dtypes); use --format gguf", dtype_name(dtype));
  if (format == "hf") return save_hf(model, spm, out, dtype);
  if (format == "gguf") return save_gguf(model, spm, out, dtype);
  fail("convert", "unknown format '{}'; expected hf or gguf", format);
}

}  // namespace loracpp::models
