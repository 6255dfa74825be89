// Records become token ids with a loss mask, and are packed into sequences without attention
// across examples: a packed example's logits equal those it gets alone.
#include "data/examples.h"

#include "core/error.h"
#include "data/token_dataset.h"
#include "models/registry.h"
#include "ops/ops.h"
#include "ops/tape.h"
#include "test_util.h"
#include "tokenizers/llama2c_tokenizer.h"

namespace loracpp::data {
namespace {

const auto kBytes = tokenizers::Llama2cTokenizer::bytes();

// The text of the ids whose trained flag equals `trained`.
std::string text_where(const TokenizedExample& e, bool trained) {
  std::vector<std::int64_t> ids;
  for (std::size_t i = 0; i < e.ids.size(); ++i)
    if ((e.trained[i] != 0) == trained) ids.push_back(e.ids[i]);
  return kBytes.decode(ids);
}

TEST(Examples, PromptCompletionTrainsOnlyTheCompletionAndEos) {
  Record r;
  r.prompt = "Q: two plus two?";
  r.completion = " A: four.";
  const auto e = tokenize_segments(record_segments(r, RecordFormat::prompt_completion, {}), kBytes);
  EXPECT_EQ(e.ids.front(), kBytes.bos_id());
  EXPECT_EQ(e.trained.front(), 0);
  EXPECT_EQ(e.ids.back(), kBytes.eos_id());
  EXPECT_EQ(e.trained.back(), 1);
  EXPECT_EQ(text_where(e, true), " A: four.");
  EXPECT_EQ(text_where(e, false), "Q: two plus two?");
  const auto all = tokenize_segments(record_segments(r, RecordFormat::prompt_completion, {.train_on_prompt = true}), kBytes);
  EXPECT_TRUE(std::all_of(all.trained.begin(), all.trained.end(), [](auto t) { return t == 1; }));
}

TEST(Examples, AlpacaLabelledAndChatMaskEverythingButTheAnswer) {
  Record alpaca;
  alpaca.instruction = "Name a colour.";
  alpaca.output = "Blue";
  EXPECT_EQ(text_where(tokenize_segments(record_segments(alpaca, RecordFormat::alpaca, {}), kBytes), true), "Blue");
  Record labelled;
  labelled.text = "What a lovely day";
  labelled.label = "positive";
  const auto l = tokenize_segments(record_segments(labelled, RecordFormat::labelled, {}), kBytes);
  EXPECT_EQ(text_where(l, true), " positive");
  EXPECT_EQ(text_where(l, false), "What a lovely day\nLabel:");
  Record chat;
  chat.messages = {{"user", "Hi"}, {"assistant", "Hey"}, {"user", "Bye"}, {"assistant", "Ciao"}};
  const auto c = tokenize_segments(record_segments(chat, RecordFormat::chat, {.chat_template = ChatTemplate::chatml}), kBytes);
  EXPECT_EQ(text_where(c, true), "Hey<|im_end|>Ciao<|im_end|>");
  EXPECT_THROW(record_segments(chat, RecordFormat::chat, {}), Error);
}

TEST(Examples, MaskBoundariesFollowTheTokenizationOfTheWholeText) {
  // SentencePiece merges across the prompt/completion boundary are impossible to split exactly;
  // the boundary falls at the token count of the prompt encoded alone.
  const auto tok = tokenizers::Llama2cTokenizer::load(testing::shared_path("models/stories260K/tok512.bin"), 512);
  Record r;
  r.prompt = "Once upon a time";
  r.completion = " there was a cat.";
  const auto e = tokenize_segments(record_segments(r, RecordFormat::prompt_completion, {}), tok);
  auto whole = tok.encode("Once upon a time there was a cat.", true, true);
  EXPECT_EQ(e.ids, whole);
  const auto prompt_tokens = tok.encode("Once upon a time", true, false).size();
  for (std::size_t i = 0; i < e.ids.size(); ++i) EXPECT_EQ(e.trained[i], i >= prompt_tokens ? 1 : 0) << i;
}

TokenizedExample example(std::vector<std::int64_t> ids, std::vector<std::uint8_t> trained) {
  return {std::move(ids), std::move(trained)};
}

TEST(TokenDatasetPacking, PackedExamplesStayWholeAndTargetsStopAtTheirEnds) {
  const std::vector<TokenizedExample> examples = {example({1, 10, 11, 2}, {0, 0, 1, 1}), example({1, 20, 21, 22, 2}, {0, 1, 1, 1, 1}),
                                                  example({1, 30, 2}, {1, 1, 1})};
  const TokenDataset d(examples, 8, Packing::packed, 0, "test");
  ASSERT_EQ(d.sequences(), 2);  // 4 + 5 > 8: the second example opens a new sequence
  EXPECT_EQ(d.inputs(0), (std::vector<std::int64_t>{1, 10, 11, 2, 0, 0, 0, 0}));
  EXPECT_EQ(d.targets(0), (std::vector<std::int64_t>{kIgnore, 11, 2, kIgnore, kIgnore, kIgnore, kIgnore, kIgnore}));
  EXPECT_EQ(d.inputs(1), (std::vector<std::int64_t>{1, 20, 21, 22, 2, 1, 30, 2}));
  EXPECT_EQ(d.example_of(1), (std::vector<std::int32_t>{0, 0, 0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(d.targets(1), (std::vector<std::int64_t>{20, 21, 22, 2, kIgnore, 30, 2, kIgnore}));
  EXPECT_EQ(d.tokens(), 12);
  EXPECT_EQ(d.padding(), 4);
  EXPECT_EQ(d.trained_tokens(), 8);
  EXPECT_TRUE(d.isolates_examples());
}

TEST(TokenDatasetPacking, LongExamplesAreTruncatedAndCounted) {
  const TokenDataset d({example({1, 2, 3, 4, 5, 6}, {1, 1, 1, 1, 1, 1}), example({1, 2}, {1, 1})}, 4, Packing::padded,
                       0, "test");
  ASSERT_EQ(d.sequences(), 2);
  EXPECT_EQ(d.truncated_examples(), 1);
  EXPECT_EQ(d.truncated_tokens(), 2);
  EXPECT_EQ(d.inputs(1), (std::vector<std::int64_t>{1, 2, 0, 0}));
  EXPECT_THROW(TokenDataset({example({1, 2}, {0, 0})}, 4, Packing::packed, 0, "all masked"), Error);
}

TEST(TokenDatasetPacking, StreamCutsTheConcatenationIntoEqualWindows) {
  const TokenDataset d({example({1, 2, 3, 4}, {1, 1, 1, 1}), example({5, 6, 7}, {0, 0, 1})}, 3, Packing::stream, 0, "t");
  ASSERT_EQ(d.sequences(), 2);
  EXPECT_EQ(d.targets(0), (std::vector<std::int64_t>{2, 3, 4}));
  EXPECT_EQ(d.targets(1), (std::vector<std::int64_t>{kIgnore, kIgnore, 7}));
}

TEST(TokenDatasetPacking, APackedExampleSeesNothingOfItsNeighbour) {
  auto loaded = models::load_model(testing::shared_path("models/stories260K/stories260K.bin"));
  const auto& model = *loaded.model;
  const auto& tok = *loaded.tokenizer;
  autograd::NoGradGuard no_grad;
  const auto first = tok.encode("The cat sat on the mat.", true, true);
  const auto second = tok.encode("Lily and Tom went to the park to play.", true, true);
  std::vector<std::int64_t> packed = first;
  packed.insert(packed.end(), second.begin(), second.end());
  const auto n = static_cast<std::int64_t>(packed.size());
  std::vector<float> mask(static_cast<std::size_t>(n * n), 0.0f);
  for (std::int64_t q = 0; q < n; ++q)
    for (std::int64_t k = 0; k < n; ++k)
      if ((q < static_cast<std::int64_t>(first.size())) != (k < static_cast<std::int64_t>(first.size())))
        mask[static_cast<std::size_t>(q * n + k)] = -std::numeric_limits<float>::infinity();
  const Tensor together = model.forward(Tensor::from_ints(packed, {1, n}), nullptr, false,
                                        {.attention_mask = Tensor::from_floats(mask, {1, 1, n, n})});
  const auto alone = static_cast<std::int64_t>(second.size());
  const Tensor by_itself = model.forward(Tensor::from_ints(second, {1, alone}));
  const auto got = ops::slice(together, 1, n - alone, n).to_floats();
  const auto want = by_itself.to_floats();
  ASSERT_EQ(got.size(), want.size());
  float worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
  EXPECT_LT(worst, 1e-4f);  // rotary positions are relative: the offset of 8 tokens changes nothing
  const Tensor unmasked = model.forward(Tensor::from_ints(packed, {1, n}));
  const auto leaked = ops::slice(unmasked, 1, n - alone, n).to_floats();
  float difference = 0;
  for (std::size_t i = 0; i < leaked.size(); ++i) difference = std::max(difference, std::abs(leaked[i] - want[i]));
  EXPECT_GT(difference, 1e-2f);  // without the mask the second example does see the first
}

}  // namespace
}  // namespace loracpp::data
