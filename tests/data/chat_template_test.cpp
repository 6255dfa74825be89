// Chat templates spell conversations as each model family expects, train only the assistant's
// turns, and are recognised from a model's Jinja template or refused with the known names.
#include "data/chat_template.h"

#include "core/error.h"
#include "test_util.h"

namespace loracpp::data {
namespace {

const std::vector<Message> kChat = {{"system", "Be brief."},
                                    {"user", "Hi"},
                                    {"assistant", "Hello!"},
                                    {"user", "Bye"},
                                    {"assistant", "Goodbye."}};

// The segments spelled out: BOS/EOS as <s>/</s>, trained text inside { }.
std::string spell(const std::vector<Segment>& segments) {
  std::string out;
  for (const auto& s : segments) {
    const std::string text = s.kind == Segment::Kind::bos ? "<s>" : s.kind == Segment::Kind::eos ? "</s>" : s.text;
    out += s.trained ? "{" + text + "}" : text;
  }
  return out;
}

TEST(ChatTemplate, ChatMlTrainsAssistantContentAndItsEndMarker) {
  EXPECT_EQ(spell(render_chat(ChatTemplate::chatml, kChat)),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            "{Hello!<|im_end|>}\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n{Goodbye.<|im_end|>}");
}

TEST(ChatTemplate, Llama3UsesHeadersAndEotMarkers) {
  EXPECT_EQ(spell(render_chat(ChatTemplate::llama3, kChat)),
            "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n{Hello!<|eot_id|>}"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n{Goodbye.<|eot_id|>}");
}

TEST(ChatTemplate, Llama2PutsTheSystemPromptInTheFirstInstBlock) {
  EXPECT_EQ(spell(render_chat(ChatTemplate::llama2, kChat)),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]{ Hello! }{</s>}"
            "<s>[INST] Bye [/INST]{ Goodbye. }{</s>}");
}

TEST(ChatTemplate, MistralHasOneBosAndNoSpaceBeforeTheAnswer) {
  EXPECT_EQ(spell(render_chat(ChatTemplate::mistral, kChat)),
            "<s>[INST] Be brief.\n\nHi [/INST]{Hello!}{</s>}[INST] Bye [/INST]{Goodbye.}{</s>}");
}

TEST(ChatTemplate, AlpacaUsesInstructionAndResponseHeadings) {
  EXPECT_EQ(spell(render_chat(ChatTemplate::alpaca, {{"user", "Add 2 and 2."}, {"assistant", "4"}})),
            "<s>Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nAdd 2 and 2.\n\n### Response:\n{4}{</s>}");
  EXPECT_EQ(alpaca_prompt("Sum", "1, 2"),
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\nSum\n\n### Input:\n1, "
            "2\n\n### Response:\n");
}

TEST(ChatTemplate, SystemMessagesOutsideTheStartAreRefusedWhereTheTemplateHasNoPlace) {
  const std::vector<Message> late = {{"user", "a"}, {"system", "b"}, {"assistant", "c"}};
  EXPECT_THROW(render_chat(ChatTemplate::llama2, late), Error);
  EXPECT_NO_THROW(render_chat(ChatTemplate::chatml, late));
}

TEST(ChatTemplate, RecognisesModelTemplatesByTheirMarkers) {
  EXPECT_EQ(detect_chat_template("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + "
                                 "'<|im_end|>\\n'}}{% endfor %}"),
            ChatTemplate::chatml);
  EXPECT_EQ(detect_chat_template("{{ '<|start_header_id|>' + role + '<|end_header_id|>' + content + '<|eot_id|>' }}"),
            ChatTemplate::llama3);
  EXPECT_EQ(detect_chat_template("{{ bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>' }}"),
            ChatTemplate::llama2);
  EXPECT_EQ(detect_chat_template("{{ bos_token }}{{ '[INST] ' + content + ' [/INST]' }}"), ChatTemplate::mistral);
  EXPECT_EQ(detect_chat_template("### Instruction:\n{{ x }}\n\n### Response:\n"), ChatTemplate::alpaca);
  EXPECT_FALSE(detect_chat_template("<start_of_turn>user\n{{ content }}<end_of_turn>").has_value());
}

TEST(ChatTemplate, UnknownOrMissingTemplatesAreErrorsListingTheKnownOnes) {
  for (const auto& [requested, model_template] :
       std::vector<std::pair<std::string, std::string>>{{"vicuna", ""}, {"", ""}, {"", "<start_of_turn>"}}) {
    try {
      choose_chat_template(requested, model_template, "model-dir");
      ADD_FAILURE() << "no error for '" << requested << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("chatml, llama3, llama2, mistral, alpaca"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(choose_chat_template("llama3", "<|im_start|><|im_end|>", "m"), ChatTemplate::llama3);  // the flag wins
  EXPECT_EQ(choose_chat_template("", "<|im_start|><|im_end|>", "m"), ChatTemplate::chatml);
}

}  // namespace
}  // namespace loracpp::data
