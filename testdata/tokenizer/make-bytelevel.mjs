// Makes the byte-level BPE test tokenizer and its goldens; see README.md.
import { createRequire } from 'module';
import fs from 'fs';
import { Tokenizer } from '@huggingface/tokenizers';
const require = createRequire(import.meta.url);
const tok = require('llama3-tokenizer-js/bundle/commonjs-llama3-tokenizer-with-baked-data.cjs').llama3Tokenizer;
const PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const vocabById = tok.vocabById;
const merges = [...tok.merges.entries()].sort((a, b) => a[1] - b[1]).map(e => e[0]);
const specials = vocabById.slice(128000);

function build(nMerges, pattern) {
  // Base: the 256 byte characters, in the order of the full vocabulary.
  const base = vocabById.slice(0, 128000).filter(t => [...t].length === 1);
  if (base.length !== 256) throw new Error('base ' + base.length);
  const vocab = {};
  let id = 0;
  for (const t of base) vocab[t] = id++;
  const ms = [];
  // A truncated tokenizer keeps the first merges whose operands it
  // already has (Llama 3's list is not ordered by construction).
  for (const m of merges) {
    if (nMerges !== undefined && ms.length >= nMerges) break;
    const [a, b] = m.split(' ');
    if (nMerges !== undefined && (!(a in vocab) || !(b in vocab))) continue;
    if (!((a + b) in vocab)) vocab[a + b] = id++;
    ms.push(m);
  }
  if (nMerges === undefined) { // the full vocabulary keeps Llama-3's ids
    for (const k in vocab) delete vocab[k];
    vocabById.slice(0, 128000).forEach((t, i) => { vocab[t] = i; });
    id = 128000;
  }
  const added = specials.map((c, i) => ({ id: id + i, content: c, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: { type: 'Sequence', pretokenizers: [
      { type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
    post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: {} },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges: ms },
  };
}
const texts = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')).samples.map(s => s.text).concat([
  "It's I'M we'RE you've THEY'LL she'd 'tis o'clock", "don’t won't", "12 123 1234 12345 123456789", "x=1;\r\ny=2\r\n\r\n  z",
  "  \n\n  \t\n a", "hello   world  ", "a  b   c    d", "tab\t\tand\nnewline\n", "!!!...???", " (paren) [bracket] {brace}",
  "日本語のテキストと中文文本", "Ελληνικά и русский", "مرحبا بالعالم", "emoji 👨‍👩‍👧‍👦 family 🏳️‍🌈", "\u00a0\u2003 odd spaces\u3000end",
  "ſtate of the art's", "MIXED case WORDS and under_scores", "<|begin_of_text|>Hello<|end_of_text|>", "call f(x) -> y; // comment", "0x1F 1e-5 3.14159e+10",
]);
function goldens(tj, file) {
  const t = new Tokenizer(tj, { add_bos_token: false });
  const samples = texts.map(text => {
    const ids = t.encode(text, { add_special_tokens: false }).ids;
    return { text, ids, decoded: ids.length ? t.decode(ids, { skip_special_tokens: false }) : '' };
  });
  fs.writeFileSync(file, JSON.stringify({ library: '@huggingface/tokenizers 0.2.0 (tokenizers.js)', samples }, null, 1));
  return samples;
}
const small = build(3000, PATTERN);
fs.writeFileSync(process.argv[3] + '/bytelevel-llama3-3k.tokenizer.json', JSON.stringify(small));
const s = goldens(small, process.argv[3] + '/bytelevel-llama3-3k.golden.json');
console.log('small vocab', Object.keys(small.model.vocab).length, 'samples', s.length, s[0]);
// Full Llama 3 (not committed): checked against llama3-tokenizer-js too.
const full = build(undefined, PATTERN);
fs.writeFileSync(process.argv[3] + '/llama3.tokenizer.json', JSON.stringify(full));
const fg = goldens(full, process.argv[3] + '/llama3.golden.json');
let agree = 0;
for (const g of fg) { const ref = tok.encode(g.text, { bos: false, eos: false }); if (JSON.stringify(ref) === JSON.stringify(g.ids)) agree++; else console.log('differ', JSON.stringify(g.text), ref.slice(0,8), g.ids.slice(0,8)); }
console.log('full llama3: tokenizers.js and llama3-tokenizer-js agree on', agree, 'of', fg.length);
