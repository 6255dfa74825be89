#pragma once
// Training examples as users store them: .txt documents, JSONL lines and CSV/TSV rows in one of
// five shapes (plain text, prompt/completion, chat messages, Alpaca instruction/input/output,
// labelled text). The shape is recognised from the fields of the first record; every later
// record must have the same fields. Bad records name the file and line; with skip_bad_lines they
// are skipped and counted instead.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace loracpp::data {

enum class RecordFormat { text, prompt_completion, chat, alpaca, labelled };
std::string_view format_name(RecordFormat format);

struct Message {
  std::string role;  // system, user or assistant
  std::string content;
};

struct Record {
  std::string text;                         // text, labelled
  std::string label;                        // labelled (numbers are kept as their decimal text)
  std::string prompt, completion;           // prompt_completion
  std::vector<Message> messages;            // chat
  std::string instruction, input, output;   // alpaca (input may be empty)
  std::int64_t line = 0;                    // where the record starts in its file (1-based; 0 for .txt)
};

struct ReadOptions {
  bool skip_bad_lines = false;
  // Our field name -> the file's key or column name, e.g. {"prompt", "question"}.
  std::map<std::string, std::string> columns{};
};

struct Records {
  RecordFormat format = RecordFormat::text;
  std::vector<Record> records;
  std::int64_t skipped = 0;                  // bad lines skipped (skip_bad_lines)
  std::vector<std::string> skipped_reasons;  // the first few, for the user
};

// Reads .txt (documents split by lines holding only "%", else by blank lines; with
// one_per_line, every non-empty line), .jsonl, .csv and .tsv.
Records read_records(const std::filesystem::path& path, const ReadOptions& options = {}, bool one_per_line = false);

// Parses "field=column,field=column" as given to --columns; throws on unknown fields.
std::map<std::string, std::string> parse_column_map(const std::string& text);

// Label -> number of records, for labelled data.
std::map<std::string, std::int64_t> label_counts(const Records& records);

// True when text is well-formed UTF-8; else *bad_offset is the first bad byte's offset.
bool valid_utf8(std::string_view text, std::size_t* bad_offset = nullptr);

}  // namespace loracpp::data
