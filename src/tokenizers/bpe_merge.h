#pragma once
// The BPE merge loop SentencePiece and HuggingFace's BPE share: repeatedly merge the adjacent pair
// of highest priority (ties: the leftmost) until no pair merges. A linked list of symbols and a
// priority queue of candidate pairs make it O(n log n) in the text length, instead of rescanning
// every pair after each merge.
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <vector>

namespace loracpp::tokenizers {

struct PairMerge {
  std::int64_t id;  // the merged token
  double priority;  // higher merges first (a SentencePiece score, or minus a merge rank)
};

// The key of an adjacent pair (left, right) of token ids, for tables of merges.
inline std::uint64_t pair_key(std::int64_t left, std::int64_t right) {
  return static_cast<std::uint64_t>(left) << 32 | static_cast<std::uint64_t>(right);
}

// symbols: token ids in text order, merged in place. merge_of(left, right) says whether and how
// an adjacent pair merges.
template <class MergeOf>
void bpe_merge(std::vector<std::int64_t>& symbols, const MergeOf& merge_of) {
  const std::size_t n = symbols.size();
  if (n < 2) return;
  std::vector<std::int64_t> next(n), prev(n);
  for (std::size_t i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? static_cast<std::int64_t>(i + 1) : -1;
    prev[i] = static_cast<std::int64_t>(i) - 1;
  }
  struct Candidate {
    double priority;
    std::int64_t left, right, merged;  // positions of the pair; the merged id
    std::int64_t left_id, right_id;    // the ids when queued: stale entries no longer match
  };
  auto worse = [](const Candidate& a, const Candidate& b) {
    return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> queue(worse);
  auto offer = [&](std::int64_t left) {
    if (left < 0) return;
    const std::int64_t right = next[static_cast<std::size_t>(left)];
    if (right < 0) return;
    const auto a = symbols[static_cast<std::size_t>(left)], b = symbols[static_cast<std::size_t>(right)];
    if (const std::optional<PairMerge> m = merge_of(a, b)) queue.push({m->priority, left, right, m->id, a, b});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) offer(static_cast<std::int64_t>(i));
  std::vector<bool> gone(n, false);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    const auto l = static_cast<std::size_t>(c.left), r = static_cast<std::size_t>(c.right);
    if (gone[l] || gone[r] || next[l] != c.right || symbols[l] != c.left_id || symbols[r] != c.right_id) continue;
    symbols[l] = c.merged;
    gone[r] = true;
    next[l] = next[r];
    if (next[r] >= 0) prev[static_cast<std::size_t>(next[r])] = c.left;
    offer(prev[l]);
    offer(c.left);
  }
  std::size_t out = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (!gone[i]) symbols[out++] = symbols[i];
  symbols.resize(out);
}

}  // namespace loracpp::tokenizers
