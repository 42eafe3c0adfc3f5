// Drives a running `minitron serve` with OpenAI's official Node client and
// prints what it got, as JSON, for the Go test to check.
//
//   node openai-client.mjs BASE_URL MODEL
import OpenAI, { NotFoundError } from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 60_000 });
const out = {};

out.models = (await client.models.list()).data.map((m) => m.id);
out.retrieved = (await client.models.retrieve(model)).id;

const plain = await client.completions.create({ model, prompt: "func main() {", max_tokens: 20, temperature: 0.8, seed: 7 });
out.completion = { text: plain.choices[0].text, finish: plain.choices[0].finish_reason, usage: plain.usage };

let streamed = "";
let finish = null;
let usage = null;
const stream = await client.completions.create({
  model, prompt: "func main() {", max_tokens: 20, temperature: 0.8, seed: 7, stream: true, stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.choices.length > 0) {
    streamed += chunk.choices[0].text;
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  if (chunk.usage) usage = chunk.usage;
}
out.streamed = { text: streamed, finish, usage };

const stopped = await client.completions.create({ model, prompt: "func main() {", max_tokens: 20, temperature: 0.8, seed: 7, stop: ["\n"] });
out.stopped = { text: stopped.choices[0].text, finish: stopped.choices[0].finish_reason };

const lp = await client.completions.create({ model, prompt: "package main", max_tokens: 0, echo: true, logprobs: 2, temperature: 0 });
out.logprobs = { text: lp.choices[0].text, ...lp.choices[0].logprobs };

const n = await client.completions.create({ model, prompt: ["var a = ", "var b = "], n: 2, max_tokens: 8, temperature: 1, seed: 3 });
out.choices = n.choices.map((c) => ({ index: c.index, text: c.text }));

const messages = [{ role: "system", content: "You write Go." }, { role: "user", content: "Write a loop." }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0.7, seed: 11 });
out.chat = { object: chat.object, role: chat.choices[0].message.role, content: chat.choices[0].message.content, finish: chat.choices[0].finish_reason, usage: chat.usage };

let chatText = "";
let chatUsage = null;
const chatStream = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0.7, seed: 11, stream: true, stream_options: { include_usage: true } });
for await (const chunk of chatStream) {
  if (chunk.choices.length > 0) chatText += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) chatUsage = chunk.usage;
}
out.chatStreamed = { content: chatText, usage: chatUsage };

try {
  await client.completions.create({ model: "no-such-model", prompt: "x", max_tokens: 1 });
  out.unknownModel = "accepted";
} catch (e) {
  out.unknownModel = { notFound: e instanceof NotFoundError, status: e.status, code: e.code, type: e.type, message: e.message };
}
process.stdout.write(JSON.stringify(out) + "\n");
