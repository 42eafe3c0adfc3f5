// Loads GGUF files with llama.cpp (node-llama-cpp's prebuilt CPU build)
// and prints, as JSON, for each job of a JSON list
// [{"model": FILE, "texts": [...], "special": BOOL, "prompt": [ids], "n": N}]:
// the token ids llama.cpp gives each text (no BOS; special tokens' text
// read as those tokens when "special" is set), llama.cpp's BOS id, and its
// greedy continuation of the prompt.
//
//   node llama-gguf.mjs JOBS.json
import { readFileSync } from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const jobs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const results = [];
for (const job of jobs) {
  const model = await llama.loadModel({ modelPath: job.model });
  const tokens = job.texts.map((t) => Array.from(model.tokenize(t, job.special)));
  const bos = model.tokens.bos ?? null;
  const context = await model.createContext({ contextSize: job.prompt.length + job.n + 8, batchSize: 64, threads: 2 });
  const sequence = context.getSequence();
  const continuation = [];
  for await (const token of sequence.evaluate(job.prompt, { temperature: 0 })) {
    continuation.push(token);
    if (continuation.length >= job.n) break;
  }
  await context.dispose();
  await model.dispose();
  results.push({ model: job.model, tokens, bos, continuation });
}
process.stdout.write(JSON.stringify(results) + "\n");
process.exit(0); // llama.cpp's threads would keep the process a few seconds more
