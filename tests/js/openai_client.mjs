// The official openai npm client against `lunar serve` (a client nobody here wrote).
// usage: node openai_client.mjs BASE_URL API_KEY MODEL [chat]
// Prints "N passed, N failed" and exits nonzero on any failure.
import OpenAI from "openai";

const [base, apiKey, model, withChat] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey, maxRetries: 0, timeout: 60000 });
let passed = 0, failed = 0;
function check(cond, what, detail) {
  if (cond) passed++;
  else { failed++; console.error("FAIL:", what, detail === undefined ? "" : JSON.stringify(detail)); }
}

async function main() {
  const models = await client.models.list();
  check(models.data.some((m) => m.id === model), "models.list has the served name", models.data);

  const c = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 16, temperature: 0 });
  check(c.object === "text_completion" && c.id.startsWith("cmpl-"), "completion object and id", c);
  check(c.choices[0].text.startsWith(", there was a little girl named Lily"), "greedy completion text", c.choices[0]);
  check(c.choices[0].finish_reason === "length", "finish_reason length", c.choices[0]);
  check(c.usage.prompt_tokens === 5 && c.usage.completion_tokens === 16 && c.usage.total_tokens === 21, "usage", c.usage);

  const two = await client.completions.create({ model, prompt: "The dog", max_tokens: 8, n: 2, seed: 5, temperature: 1 });
  check(two.choices.length === 2 && two.choices[1].index === 1, "n=2 gives two indexed choices", two.choices);

  const lp = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 4, temperature: 0, logprobs: 2 });
  const l = lp.choices[0].logprobs;
  check(l && l.tokens.length === 4 && l.token_logprobs.length === 4 && l.top_logprobs.length === 4, "completion logprobs shape", l);
  check(l.token_logprobs.every((x) => x <= 0), "logprobs are <= 0", l.token_logprobs);

  const st = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 40, temperature: 0, stop: ["park"] });
  check(st.choices[0].finish_reason === "stop" && !st.choices[0].text.includes("park"), "stop string", st.choices[0]);
  check(st.choices[0].stop_reason === "park", "stop_reason names the stop string", st.choices[0]);

  const stream = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 12, temperature: 0,
    stream: true, stream_options: { include_usage: true } });
  let text = "", usage = null, finish = null, chunks = 0;
  for await (const ch of stream) {
    chunks++;
    if (ch.usage) usage = ch.usage;
    for (const choice of ch.choices) { text += choice.text; if (choice.finish_reason) finish = choice.finish_reason; }
  }
  // one chunk per engine event; tokens the engine produced while the event loop was busy share
  // one (as vLLM merges deltas its consumer has not taken yet), so on a loaded machine 12 tokens
  // may come in as little as one token chunk plus the usage chunk
  check(chunks >= 2, "streamed: token chunks and a usage chunk", chunks);
  check(text === c.choices[0].text.slice(0, text.length) && text.length > 0, "streamed text equals the prefix of the non-streamed", text);
  check(usage && usage.completion_tokens === 12, "usage chunk when asked", usage);
  check(finish === "length", "stream finish_reason", finish);

  try {
    await client.completions.create({ model, prompt: "x", max_tokens: 4, temperature: -3 });
    check(false, "negative temperature rejected");
  } catch (e) {
    check(e.status === 400 && /temperature/.test(e.message), "400 naming temperature", e.message);
  }
  try {
    await client.completions.create({ model: "no-such-model", prompt: "x", max_tokens: 4 });
    check(false, "unknown model rejected");
  } catch (e) {
    check(e.status === 404, "404 for an unknown model", e.message);
  }

  if (withChat === "chat") {
    const msgs = [{ role: "system", content: "You tell stories." }, { role: "user", content: "Tell me a story." }];
    const cc = await client.chat.completions.create({ model, messages: msgs, max_tokens: 16, temperature: 0 });
    check(cc.object === "chat.completion" && cc.choices[0].message.role === "assistant", "chat completion shape", cc);
    check(cc.choices[0].message.content.length > 0, "chat content", cc.choices[0]);
    const cs = await client.chat.completions.create({ model, messages: msgs, max_tokens: 16, temperature: 0, stream: true,
      stream_options: { include_usage: true }, logprobs: true, top_logprobs: 2 });
    let ctext = "", cusage = null, roleSeen = false, lps = 0;
    for await (const ch of cs) {
      if (ch.usage) cusage = ch.usage;
      for (const choice of ch.choices) {
        if (choice.delta.role === "assistant") roleSeen = true;
        ctext += choice.delta.content || "";
        if (choice.logprobs && choice.logprobs.content) lps += choice.logprobs.content.length;
      }
    }
    check(roleSeen, "first chat chunk carries the role");
    check(ctext === cc.choices[0].message.content, "streamed chat text equals the non-streamed", [ctext, cc.choices[0].message.content]);
    check(cusage && cusage.completion_tokens === 16, "chat usage chunk", cusage);
    check(lps === 16, "chat logprobs per token", lps);
  }
}

main().catch((e) => { failed++; console.error("FAIL: exception", e && e.stack || e); })
  .finally(() => { console.log(`${passed} passed, ${failed} failed`); process.exit(failed ? 1 : 0); });
