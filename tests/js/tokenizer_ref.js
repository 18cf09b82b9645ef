// Reference ids from @lenml/tokenizers (a JS port of Hugging Face's tokenizers/transformers
// tokenization) for the corpus, one JSON file per tokenizer in tests/fixtures/tokenizer/:
//   node tests/js/tokenizer_ref.js [name...]
// Each file: { name, source, ids: [[...]] (add_special_tokens), ids_plain (without),
// decoded (decode(ids_plain)), decoded_skip (decode(ids, skip_special_tokens)) }.
const fs = require("fs");
const path = require("path");
const { TokenizerLoader } = require("@lenml/tokenizers");

const root = path.join(__dirname, "..", "..");
const shared = process.env.LUNAR_SHARED || path.join(root, "..", "shared");
const mods = path.join(__dirname, "node_modules", "@lenml");
const all = {
  qwen3: path.join(mods, "tokenizer-qwen3", "models"),
  llama3: path.join(mods, "tokenizer-llama3", "models"),
  deepseek_v3: path.join(mods, "tokenizer-deepseek_v3", "models"),
  gemma3: path.join(mods, "tokenizer-gemma3", "models"),
  llama2: path.join(mods, "tokenizer-llama2", "models"),
  tinystories: path.join(shared, "models", "TinyStories-656K"),
  stories260k: path.join(shared, "models", "stories260K"),
};
const names = process.argv.length > 2 ? process.argv.slice(2) : Object.keys(all);
const corpus = JSON.parse(fs.readFileSync(path.join(root, "tests", "fixtures", "tokenizer", "corpus.json")));
for (const name of names) {
  const dir = all[name];
  const tokenizer = TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"))),
    tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"))),
  });
  const res = { name, source: "@lenml/tokenizers " + JSON.parse(fs.readFileSync(path.join(mods, "tokenizers", "package.json"))).version,
    ids: [], ids_plain: [], decoded: [], decoded_skip: [] };
  for (const { text } of corpus) {
    const a = Array.from(tokenizer.encode(text, { add_special_tokens: true }));
    const b = Array.from(tokenizer.encode(text, { add_special_tokens: false }));
    res.ids.push(a);
    res.ids_plain.push(b);
    res.decoded.push(b.length ? tokenizer.decode(b, { skip_special_tokens: false }) : "");
    res.decoded_skip.push(a.length ? tokenizer.decode(a, { skip_special_tokens: true }) : "");
  }
  const out = path.join(root, "tests", "fixtures", "tokenizer", `lenml_${name}.json`);
  fs.writeFileSync(out, JSON.stringify(res) + "\n");
  console.log(`${name}: ${corpus.length} texts -> ${out}`);
}
