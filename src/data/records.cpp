#include "data/records.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace loracpp::data {

namespace {

constexpr std::string_view kPlace = "data";
constexpr std::size_t kReasonsKept = 5;

const std::vector<std::string>& known_fields() {
  static const std::vector<std::string> fields = {"text",   "label",       "prompt", "completion", "messages",
                                                  "instruction", "input", "output"};
  return fields;
}

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), kPlace, "cannot read {}", path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::int64_t line_of_offset(const std::string& text, std::size_t offset) {
  return 1 + static_cast<std::int64_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(offset), '\n'));
}

void check_utf8(const std::string& text, const std::string& file) {
  std::size_t bad = 0;
  if (!valid_utf8(text, &bad))
    fail(kPlace, "line {}: invalid UTF-8 at byte {} ({})", line_of_offset(text, bad), bad, file);
}

// A record whose fields have been read but not yet checked against the format: the field names
// are ours (after the column map).
using Fields = nlohmann::json;

// Thrown for one bad record; read_records decides whether it is fatal.
struct BadRecord {
  std::string reason;
};

std::string required_string(const Fields& f, const char* name, bool may_be_empty = false) {
  if (!f.contains(name)) throw BadRecord{fmt::format("field '{}' is missing", name)};
  const auto& v = f[name];
  if (!v.is_string()) throw BadRecord{fmt::format("field '{}' must be a string, got {}", name, v.type_name())};
  auto s = v.get<std::string>();
  if (!may_be_empty && s.find_first_not_of(" \t\r\n") == std::string::npos)
    throw BadRecord{fmt::format("field '{}' is empty", name)};
  return s;
}

RecordFormat detect(const Fields& f) {
  auto has = [&](const char* k) { return f.contains(k); };
  if (has("messages")) return RecordFormat::chat;
  if (has("prompt") && has("completion")) return RecordFormat::prompt_completion;
  if (has("instruction") && has("output")) return RecordFormat::alpaca;
  if (has("text") && has("label")) return RecordFormat::labelled;
  if (has("text")) return RecordFormat::text;
  std::vector<std::string> keys;
  for (const auto& [k, v] : f.items()) keys.push_back(k);
  throw BadRecord{fmt::format(
      "has fields [{}]; expected one of: 'text'; 'text' and 'label'; 'prompt' and 'completion'; 'messages'; "
      "'instruction', 'input' and 'output' (map other names with --columns)",
      fmt::join(keys, ", "))};
}

Record to_record(const Fields& f, RecordFormat format) {
  Record r;
  switch (format) {
    case RecordFormat::text:
      r.text = required_string(f, "text");
      break;
    case RecordFormat::labelled: {
      r.text = required_string(f, "text");
      if (!f.contains("label")) throw BadRecord{"field 'label' is missing"};
      const auto& label = f["label"];
      if (label.is_string()) {
        r.label = label.get<std::string>();
      } else if (label.is_number_integer() || label.is_boolean()) {
        r.label = label.dump();
      } else {
        throw BadRecord{fmt::format("field 'label' must be a string or an integer, got {}", label.type_name())};
      }
      if (r.label.empty()) throw BadRecord{"field 'label' is empty"};
      break;
    }
    case RecordFormat::prompt_completion:
      r.prompt = required_string(f, "prompt", /*may_be_empty=*/true);
      r.completion = required_string(f, "completion");
      break;
    case RecordFormat::alpaca:
      r.instruction = required_string(f, "instruction");
      r.input = f.contains("input") ? required_string(f, "input", true) : "";
      r.output = required_string(f, "output");
      break;
    case RecordFormat::chat: {
      if (!f.contains("messages")) throw BadRecord{"field 'messages' is missing"};
      Fields messages = f["messages"];
      if (messages.is_string()) {  // a CSV cell holding the JSON array
        try {
          messages = nlohmann::json::parse(messages.get<std::string>());
        } catch (const nlohmann::json::exception&) {
          throw BadRecord{"field 'messages' is a string that is not a JSON array"};
        }
      }
      if (!messages.is_array() || messages.empty())
        throw BadRecord{fmt::format("field 'messages' must be a non-empty array, got {}", messages.type_name())};
      bool assistant = false;
      for (std::size_t i = 0; i < messages.size(); ++i) {
        const auto& m = messages[i];
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
            !m["content"].is_string())
          throw BadRecord{fmt::format("messages[{}] needs string fields 'role' and 'content'", i)};
        Message message{m["role"].get<std::string>(), m["content"].get<std::string>()};
        if (message.role != "system" && message.role != "user" && message.role != "assistant")
          throw BadRecord{
              fmt::format("messages[{}] has role '{}'; expected system, user or assistant", i, message.role)};
        assistant |= message.role == "assistant";
        r.messages.push_back(std::move(message));
      }
      if (!assistant) throw BadRecord{"'messages' has no assistant turn to learn from"};
      break;
    }
  }
  return r;
}

// Renames the file's keys to ours following the column map; keys not mapped stay as they are.
Fields rename(const nlohmann::json& raw, const ReadOptions& options) {
  if (options.columns.empty()) return raw;
  Fields out = raw;
  for (const auto& [ours, theirs] : options.columns) {
    if (raw.contains(theirs)) {
      out.erase(theirs);
      out[ours] = raw[theirs];
    }
  }
  return out;
}

// Splits CSV/TSV text into rows of cells (RFC 4180 quoting: "a ""b""" is a "b"; quoted cells may
// hold the delimiter and newlines), with the line each row starts on.
std::vector<std::pair<std::int64_t, std::vector<std::string>>> split_rows(const std::string& text, char delimiter,
                                                                          const std::string& file) {
  std::vector<std::pair<std::int64_t, std::vector<std::string>>> rows;
  std::vector<std::string> row;
  std::string cell;
  bool quoted = false, cell_started = false;
  std::int64_t line = 1, row_line = 1, quote_line = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          cell += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        cell += c;
      }
      continue;
    }
    if (c == '"' && !cell_started) {
      quoted = cell_started = true;
      quote_line = line;
    } else if (c == delimiter) {
      row.push_back(std::move(cell));
      cell.clear();
      cell_started = false;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      row.push_back(std::move(cell));
      cell.clear();
      cell_started = false;
      if (!(row.size() == 1 && row[0].empty())) rows.emplace_back(row_line, std::move(row));
      row.clear();
      row_line = ++line;
    } else {
      cell += c;
      cell_started = true;
    }
  }
  check(!quoted, kPlace, "line {}: a quoted cell is never closed ({})", quote_line, file);
  if (cell_started || !row.empty()) {
    row.push_back(std::move(cell));
    rows.emplace_back(row_line, std::move(row));
  }
  return rows;
}

std::vector<std::string> split_txt(const std::string& text, bool one_per_line) {
  std::istringstream lines(text);
  std::vector<std::string> all;
  std::string line;
  bool percent = false;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    percent |= line == "%";
    all.push_back(line);
  }
  auto blank = [](const std::string& s) { return s.find_first_not_of(" \t") == std::string::npos; };
  std::vector<std::string> docs;
  if (one_per_line) {
    for (auto& l : all)
      if (!blank(l)) docs.push_back(l);
    return docs;
  }
  auto trim_newlines = [](const std::string& s) {
    const auto first = s.find_first_not_of("\r\n");
    if (first == std::string::npos) return std::string();
    return s.substr(first, s.find_last_not_of("\r\n") - first + 1);
  };
  std::string current;
  for (const auto& l : all) {
    if (percent ? l == "%" : blank(l)) {
      if (!trim_newlines(current).empty()) docs.push_back(trim_newlines(current));
      current.clear();
    } else {
      current += l + "\n";
    }
  }
  if (!trim_newlines(current).empty()) docs.push_back(trim_newlines(current));
  return docs;
}

}  // namespace

std::string_view format_name(RecordFormat format) {
  switch (format) {
    case RecordFormat::text: return "text";
    case RecordFormat::prompt_completion: return "prompt/completion";
    case RecordFormat::chat: return "chat messages";
    case RecordFormat::alpaca: return "alpaca";
    case RecordFormat::labelled: return "labelled text";
  }
  return "?";
}

bool valid_utf8(std::string_view s, std::size_t* bad_offset) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 && c >= 0xC2 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E && c <= 0xF4 ? 3 : -1;
    bool ok = extra >= 0 && i + static_cast<std::size_t>(extra) < s.size();
    if (ok && extra >= 2) {  // no overlong forms, UTF-16 surrogates or code points past U+10FFFF
      const auto next = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xE0 && next < 0xA0) && !(c == 0xED && next > 0x9F) && !(c == 0xF0 && next < 0x90) &&
           !(c == 0xF4 && next > 0x8F);
    }
    for (int k = 1; ok && k <= extra; ++k)
      ok = (static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]) & 0xC0) == 0x80;
    if (!ok) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    i += static_cast<std::size_t>(extra) + 1;
  }
  return true;
}

std::map<std::string, std::string> parse_column_map(const std::string& text) {
  std::map<std::string, std::string> out;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    if (item.empty()) continue;
    const auto eq = item.find('=');
    check(eq != std::string::npos && eq > 0 && eq + 1 < item.size(), kPlace,
          "--columns item '{}' must be FIELD=COLUMN", item);
    const std::string field = item.substr(0, eq);
    check(std::find(known_fields().begin(), known_fields().end(), field) != known_fields().end(), kPlace,
          "--columns names unknown field '{}'; known fields: {}", field, fmt::join(known_fields(), ", "));
    out[field] = item.substr(eq + 1);
  }
  return out;
}

Records read_records(const std::filesystem::path& path, const ReadOptions& options, bool one_per_line) {
  const std::string file = path.string();
  const std::string text = read_all(path);
  check(text.find_first_not_of(" \t\r\n") != std::string::npos, kPlace, "{} is empty", file);
  auto ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });

  Records result;
  if (ext != ".jsonl" && ext != ".csv" && ext != ".tsv") {
    check_utf8(text, file);
    for (auto& doc : split_txt(text, one_per_line)) {
      Record record;
      record.text = std::move(doc);
      result.records.push_back(std::move(record));
    }
    check(!result.records.empty(), kPlace, "{} holds no documents", file);
    return result;
  }

  // Rows of fields with their line numbers; a row that cannot even be parsed carries its reason.
  struct Row {
    std::int64_t line;
    Fields fields;
    std::string error;
  };
  std::vector<Row> rows;
  if (ext == ".jsonl") {
    std::istringstream lines(text);
    std::string line;
    for (std::int64_t number = 1; std::getline(lines, line); ++number) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      std::size_t bad = 0;
      if (!valid_utf8(line, &bad)) {
        rows.push_back({number, {}, fmt::format("invalid UTF-8 at column {}", bad + 1)});
        continue;
      }
      try {
        auto j = nlohmann::json::parse(line);
        if (!j.is_object()) {
          rows.push_back({number, {}, fmt::format("is a JSON {}, expected an object", j.type_name())});
        } else {
          rows.push_back({number, rename(j, options), ""});
        }
      } catch (const nlohmann::json::exception& e) {
        std::string what = e.what();
        if (const auto bracket = what.find("] "); bracket != std::string::npos) what = what.substr(bracket + 2);
        rows.push_back({number, {}, fmt::format("is not valid JSON: {}", what)});
      }
    }
  } else {
    check_utf8(text, file);
    const auto table = split_rows(text, ext == ".tsv" ? '\t' : ',', file);
    check(!table.empty(), kPlace, "{} is empty", file);
    const auto& header = table.front().second;
    for (std::size_t r = 1; r < table.size(); ++r) {
      const auto& [line, cells] = table[r];
      if (cells.size() != header.size()) {
        rows.push_back({line, {}, fmt::format("has {} cells, the header has {}", cells.size(), header.size())});
        continue;
      }
      nlohmann::json j = nlohmann::json::object();
      for (std::size_t c = 0; c < cells.size(); ++c) j[header[c]] = cells[c];
      rows.push_back({line, rename(j, options), ""});
    }
    check(!rows.empty(), kPlace, "{} has a header but no rows", file);
  }
  check(!rows.empty(), kPlace, "{} holds no records", file);

  bool detected = false;
  for (auto& row : rows) {
    try {
      if (!row.error.empty()) throw BadRecord{row.error};
      if (!detected) {
        result.format = detect(row.fields);
        detected = true;
      }
      Record record = to_record(row.fields, result.format);
      record.line = row.line;
      result.records.push_back(std::move(record));
    } catch (const BadRecord& bad) {
      if (!options.skip_bad_lines)
        fail(kPlace, "line {}: {} ({}; --skip-bad-lines skips such lines)", row.line, bad.reason, file);
      ++result.skipped;
      if (result.skipped_reasons.size() < kReasonsKept)
        result.skipped_reasons.push_back(fmt::format("line {}: {}", row.line, bad.reason));
    }
  }
  check(!result.records.empty(), kPlace, "{} holds no usable records ({} bad lines skipped)", file, result.skipped);
  if (result.format == RecordFormat::labelled) {
    const auto counts = label_counts(result);
    check(counts.size() >= 2, kPlace, "every record of {} has the label '{}'; a classifier needs at least two classes",
          file, counts.begin()->first);
  }
  return result;
}

std::map<std::string, std::int64_t> label_counts(const Records& records) {
  std::map<std::string, std::int64_t> counts;
  for (const auto& r : records.records)
    if (!r.label.empty()) ++counts[r.label];
  return counts;
}

}  // namespace loracpp::data
