// Encodes texts with Hugging Face's tokenizers.js from a model directory's
// tokenizer.json and tokenizer_config.json, special tokens added as the
// post-processor says, and prints the ids as JSON.
//
//   node tokenizers-encode.mjs MODEL_DIR TEXTS.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [dir, textsPath] = process.argv.slice(2);
const json = (f) => JSON.parse(readFileSync(join(dir, f), "utf8"));
const tok = new Tokenizer(json("tokenizer.json"), json("tokenizer_config.json"));
const texts = JSON.parse(readFileSync(textsPath, "utf8"));
process.stdout.write(JSON.stringify(texts.map((t) => tok.encode(t, { add_special_tokens: true }).ids)) + "\n");
