// Splits the GPU machine's reference file (bench/tokenizer_gpu.sh -> hf_all.json) into
// tests/fixtures/tokenizer/hf_<name>.json, the format test_tokenizer.c reads:
//   node tests/js/split_hf_ref.js /path/to/hf_all.json
// tokenizer.json models: Python `tokenizers` (Tokenizer.from_file) — the Rust implementation
// itself. transformers 5.x is recorded in the source line but not used: it rebuilds Llama-class
// tokenizers from vocab and merges with its own pipeline and so departs from tokenizer.json
// (DeepSeek-V3 loses its spaces). tokenizer.model (spm260): sentencepiece's own encode/decode,
// which sees special-token strings as text, so texts holding one are marked null there.
const fs = require("fs");
const path = require("path");
const all = JSON.parse(fs.readFileSync(process.argv[2]));
const v = all.versions;
const corpus = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "fixtures", "tokenizer", "corpus.json")));
for (const [name, e] of Object.entries(all)) {
  if (name === "versions") continue;
  let out;
  if (e.tokenizers) {
    out = { name, source: `Python tokenizers ${v.tokenizers} (Tokenizer.from_file; transformers ${v.transformers} not used)`, ...e.tokenizers };
  } else if (e.sentencepiece) {
    const sp = e.sentencepiece;
    const special = /<s>|<\/s>|<unk>/;
    const keep = (i) => !special.test(corpus[i].text);
    out = { name, source: `sentencepiece ${v.sentencepiece} SentencePieceProcessor.encode/decode`,
      ids: null, decoded_skip: null,
      ids_plain: sp.ids_plain.map((x, i) => (keep(i) ? x : null)),
      decoded: sp.decoded.map((x, i) => (keep(i) ? x : null)) };
  } else continue;
  const file = path.join(__dirname, "..", "fixtures", "tokenizer", `hf_${name}.json`);
  fs.writeFileSync(file, JSON.stringify(out) + "\n");
  console.log(`${name}: ${out.source} -> ${file}`);
}
