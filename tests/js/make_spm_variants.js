// Writes two synthetic sentencepiece models derived from $LUNAR_SHARED/models/stories260K's
// tokenizer.model, for what the real model leaves unexercised (references: sentencepiece on the
// GPU machine, hf_spm_user.json / hf_spm_noprefix.json):
//   spm_user.model      user-defined pieces: two existing pieces re-typed USER_DEFINED and three
//                       new ones appended ("<tool>", "😀", "New York")
//   spm_noprefix.model  add_dummy_prefix = false, remove_extra_whitespaces = false
//   node tests/js/make_spm_variants.js
const fs = require("fs");
const path = require("path");
const shared = process.env.LUNAR_SHARED || path.join(__dirname, "..", "..", "..", "shared");
const src = fs.readFileSync(path.join(shared, "models", "stories260K", "tokenizer.model"));
const outDir = path.join(__dirname, "..", "fixtures", "tokenizer");

function varint(b, i) {
  let v = 0n, s = 0n;
  for (;;) { const c = b[i++]; v |= BigInt(c & 0x7f) << s; s += 7n; if (!(c & 0x80)) return [v, i]; }
}
function enc(v) {
  v = BigInt(v); const out = [];
  do { let c = Number(v & 0x7fn); v >>= 7n; if (v) c |= 0x80; out.push(c); } while (v);
  return Buffer.from(out);
}
function fields(b) {
  const out = []; let i = 0;
  while (i < b.length) {
    const start = i; let tag; [tag, i] = varint(b, i);
    const f = Number(tag >> 3n), wt = Number(tag & 7n); let val;
    if (wt === 0) [val, i] = varint(b, i);
    else if (wt === 2) { let n; [n, i] = varint(b, i); val = b.subarray(i, i + Number(n)); i += Number(n); }
    else if (wt === 5) { val = b.subarray(i, i + 4); i += 4; }
    else if (wt === 1) { val = b.subarray(i, i + 8); i += 8; }
    out.push({ f, wt, val, raw: b.subarray(start, i) });
  }
  return out;
}
const msg = (f, body) => Buffer.concat([enc((f << 3) | 2), enc(body.length), body]);
const vint = (f, v) => Buffer.concat([enc(f << 3), enc(v)]);
function piece(text, score, type) {
  const s = Buffer.alloc(4); s.writeFloatLE(score);
  return msg(1, Buffer.concat([msg(1, Buffer.from(text)), Buffer.concat([enc((2 << 3) | 5), s]), vint(3, type)]));
}

function build(file, { user = [], extra = [], normalizer = null }) {
  const top = fields(src), parts = [];
  let lastPiece = -1;
  top.forEach((x, k) => { if (x.f === 1) lastPiece = k; });
  top.forEach((x, k) => {
    if (x.f === 1) {
      const pf = fields(x.val);
      const text = pf.find((y) => y.f === 1).val.toString();
      if (user.includes(text)) {
        const score = pf.find((y) => y.f === 2);
        parts.push(piece(text, score ? score.val.readFloatLE() : 0, 4));
      } else parts.push(x.raw);
      if (k === lastPiece) for (const t of extra) parts.push(piece(t, 0, 4));
    } else if (x.f === 3 && normalizer) {
      const nf = fields(x.val).filter((y) => !(y.f in normalizer)).map((y) => y.raw);
      for (const [f, v] of Object.entries(normalizer)) nf.push(vint(Number(f), v ? 1 : 0));
      parts.push(msg(3, Buffer.concat(nf)));
    } else parts.push(x.raw);
  });
  fs.writeFileSync(path.join(outDir, file), Buffer.concat(parts));
  console.log(`${file}: ${Buffer.concat(parts).length} bytes`);
}
build("spm_user.model", { user: ["▁the", "ing"], extra: ["<tool>", "😀", "New York"] });
build("spm_noprefix.model", { normalizer: { 3: false, 4: false } });
