// Data files in every supported shape, and the errors bad ones get.
#include "data/records.h"

#include "core/error.h"
#include "test_util.h"

namespace loracpp::data {
namespace {

class RecordsTest : public ::testing::Test {
 protected:
  std::filesystem::path write(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    testing::write_text(path, text);
    return path;
  }
  // The error message read_records throws, or "" when it does not.
  std::string error_of(const std::string& name, const std::string& text, const ReadOptions& options = {}) {
    try {
      read_records(write(name, text), options);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  testing::TempDir dir_;
};

TEST_F(RecordsTest, TxtSplitsOnPercentLinesThenBlankLinesOrEveryLine) {
  auto r = read_records(write("a.txt", "one\ntwo\n%\nthree\n\nstill three\n%\n"));
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.records[0].text, "one\ntwo");
  EXPECT_EQ(r.records[1].text, "three\n\nstill three");
  r = read_records(write("b.txt", "first para\nline\n\n\nsecond\n"));
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.records[1].text, "second");
  r = read_records(write("c.txt", "a\n\nb\nc\n"), {}, /*one_per_line=*/true);
  ASSERT_EQ(r.records.size(), 3u);
  EXPECT_EQ(r.format, RecordFormat::text);
}

TEST_F(RecordsTest, JsonlShapesAreRecognisedFromTheirFields) {
  auto r = read_records(write("t.jsonl", R"({"text": "hello", "id": 3})" "\n\n" R"({"text": "world"})" "\n"));
  EXPECT_EQ(r.format, RecordFormat::text);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.records[1].line, 3);

  r = read_records(write("pc.jsonl", R"({"prompt": "2+2=", "completion": " 4"})" "\n"));
  EXPECT_EQ(r.format, RecordFormat::prompt_completion);
  EXPECT_EQ(r.records[0].completion, " 4");

  r = read_records(write("chat.jsonl", R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})" "\n"));
  EXPECT_EQ(r.format, RecordFormat::chat);
  ASSERT_EQ(r.records[0].messages.size(), 2u);
  EXPECT_EQ(r.records[0].messages[1].content, "hello");

  r = read_records(write("alpaca.jsonl", R"({"instruction": "Add", "input": "2 and 2", "output": "4"})" "\n"
                                         R"({"instruction": "Say hi", "output": "hi"})" "\n"));
  EXPECT_EQ(r.format, RecordFormat::alpaca);
  EXPECT_EQ(r.records[0].input, "2 and 2");
  EXPECT_EQ(r.records[1].input, "");

  r = read_records(write("l.jsonl", R"({"text": "good film", "label": "pos"})" "\n" R"({"text": "bad", "label": 0})" "\n"));
  EXPECT_EQ(r.format, RecordFormat::labelled);
  EXPECT_EQ(r.records[1].label, "0");
  EXPECT_EQ(label_counts(r).size(), 2u);
}

TEST_F(RecordsTest, CsvAndTsvUseTheirHeaderWithQuotedCells) {
  auto r = read_records(write("d.csv", "text,label\n\"a, \"\"quoted\"\"\nline\",yes\nplain,no\r\n"));
  EXPECT_EQ(r.format, RecordFormat::labelled);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.records[0].text, "a, \"quoted\"\nline");
  EXPECT_EQ(r.records[1].label, "no");
  EXPECT_EQ(r.records[1].line, 4);
  r = read_records(write("d.tsv", "prompt\tcompletion\nQ: 1+1?\t 2\n"));
  EXPECT_EQ(r.format, RecordFormat::prompt_completion);
  EXPECT_EQ(r.records[0].prompt, "Q: 1+1?");
}

TEST_F(RecordsTest, ColumnsMapTheFilesNamesToOurFields) {
  const ReadOptions options{.columns = parse_column_map("prompt=question,completion=answer")};
  const auto r = read_records(write("qa.jsonl", R"({"question": "Why?", "answer": "Because."})" "\n"), options);
  EXPECT_EQ(r.format, RecordFormat::prompt_completion);
  EXPECT_EQ(r.records[0].prompt, "Why?");
  EXPECT_THROW(parse_column_map("promt=question"), Error);
  EXPECT_THROW(parse_column_map("prompt"), Error);
}

TEST_F(RecordsTest, BrokenJsonLineIsReportedWithItsNumber) {
  const auto e = error_of("b.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": oops}\n");
  EXPECT_NE(e.find("line 3"), std::string::npos) << e;
  EXPECT_NE(e.find("not valid JSON"), std::string::npos) << e;
  EXPECT_NE(e.find("b.jsonl"), std::string::npos) << e;
  EXPECT_NE(e.find("--skip-bad-lines"), std::string::npos) << e;
}

TEST_F(RecordsTest, SkipBadLinesSkipsAndCountsThem) {
  const auto r = read_records(write("s.jsonl", "{\"text\": \"a\"}\nnot json\n[1]\n{\"text\": 5}\n{\"text\": \"b\"}\n"),
                              {.skip_bad_lines = true});
  EXPECT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.skipped, 3);
  ASSERT_EQ(r.skipped_reasons.size(), 3u);
  EXPECT_NE(r.skipped_reasons[2].find("line 4"), std::string::npos);
  EXPECT_NE(error_of("all_bad.jsonl", "nope\nnope\n", {.skip_bad_lines = true}).find("no usable records"),
            std::string::npos);
}

TEST_F(RecordsTest, InvalidUtf8IsRefusedWithItsLine) {
  auto e = error_of("u.txt", "fine\nbad \xC3\x28 byte\n");
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("UTF-8"), std::string::npos) << e;
  e = error_of("u.jsonl", "{\"text\": \"fine\"}\n{\"text\": \"bad \xFF\"}\n");
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("UTF-8"), std::string::npos) << e;
  EXPECT_NE(error_of("u.csv", "text,label\nok,a\n\xED\xA0\x80,b\n").find("UTF-8"), std::string::npos);
}

TEST_F(RecordsTest, MissingAndMistypedFieldsNameTheFieldAndLine) {
  auto e = error_of("m.jsonl", R"({"prompt": "a", "completion": "b"})" "\n" R"({"prompt": "a"})" "\n");
  EXPECT_NE(e.find("line 2: field 'completion' is missing"), std::string::npos) << e;
  e = error_of("t.jsonl", R"({"text": "a", "label": [1]})" "\n");
  EXPECT_NE(e.find("field 'label' must be a string or an integer, got array"), std::string::npos) << e;
  e = error_of("r.jsonl", R"({"messages": [{"role": "robot", "content": "x"}]})" "\n");
  EXPECT_NE(e.find("role 'robot'"), std::string::npos) << e;
  e = error_of("n.jsonl", R"({"messages": [{"role": "user", "content": "x"}]})" "\n");
  EXPECT_NE(e.find("no assistant turn"), std::string::npos) << e;
  e = error_of("x.jsonl", R"({"body": "a"})" "\n");
  EXPECT_NE(e.find("has fields [body]"), std::string::npos) << e;
  e = error_of("c.csv", "text,label\na,b,c\n");
  EXPECT_NE(e.find("line 2: has 3 cells, the header has 2"), std::string::npos) << e;
  e = error_of("q.csv", "text,label\n\"never closed,a\n");
  EXPECT_NE(e.find("never closed"), std::string::npos) << e;
}

TEST_F(RecordsTest, EmptyFilesAndOneClassLabelsAreErrors) {
  EXPECT_NE(error_of("e.jsonl", "").find("is empty"), std::string::npos);
  EXPECT_NE(error_of("e.txt", "\n\n  \n").find("is empty"), std::string::npos);
  EXPECT_NE(error_of("h.csv", "text,label\n").find("no rows"), std::string::npos);
  const auto e = error_of("one.jsonl", R"({"text": "a", "label": "x"})" "\n" R"({"text": "b", "label": "x"})" "\n");
  EXPECT_NE(e.find("the label 'x'"), std::string::npos) << e;
  EXPECT_NE(e.find("at least two classes"), std::string::npos) << e;
}

}  // namespace
}  // namespace loracpp::data
