#!/usr/bin/python3
"""Writes a SentencePiece BPE model as a HuggingFace tokenizer.json in the Llama-2 layout
(Prepend + Replace normaliser, BPE with byte_fallback, merges derived from the piece scores),
the form Llama 2, TinyLlama and Mistral ship. Uses Debian's python3-sentencepiece.

    /usr/bin/python3 tools/make_spm_tokenizer_json.py ../shared/models/stories260K/tok512.model \
        tests/fixtures/tokenizers/tok512
"""
import json
import os
import sys

import sentencepiece as spm


def main(model_path, out_dir):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    score = {sp.id_to_piece(i): sp.get_score(i) for i in range(n)}
    # A merge for every way of spelling a piece as two pieces; earlier merges are those whose
    # result scores higher (SentencePiece merges by score), ties broken by the pieces' ids.
    merges = []
    for piece, pid in vocab.items():
        if sp.is_control(pid) or sp.is_unknown(pid) or sp.is_byte(pid):
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((-score[piece], pid, vocab[left], vocab[right], left, right))
    merges.sort()
    added = []
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i):
            added.append({"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True})
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": sp.id_to_piece(sp.unk_id()),
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": True, "vocab": vocab,
                  "merges": [f"{m[4]} {m[5]}" for m in merges]},
    }
    config = {"bos_token": sp.id_to_piece(sp.bos_id()), "eos_token": sp.id_to_piece(sp.eos_id()),
              "unk_token": sp.id_to_piece(sp.unk_id()), "add_bos_token": True, "add_eos_token": False,
              "tokenizer_class": "LlamaTokenizer"}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=1)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    print(f"{n} pieces, {len(merges)} merges -> {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
