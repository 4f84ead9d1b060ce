// Streams a chat completion with a tool through the Node openai SDK and prints what its
// accumulator made of it, as JSON. Usage: BASE_URL=... API_KEY=... node tool_stream.mjs
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0 });
const stream = client.chat.completions.stream({
  model: "Qwen/Qwen3-32B",
  messages: [{ role: "user", content: "Weather in Lima? [[sim:calls=1]]" }],
  tools: [{
    type: "function",
    function: {
      name: "get_weather",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  }],
  max_tokens: 300,
  stream_options: { include_usage: true },
});
const done = [];
stream.on("tool_calls.function.arguments.done", (event) => done.push(event.name));
const completion = await stream.finalChatCompletion();
console.log(JSON.stringify({ completion, done }));
