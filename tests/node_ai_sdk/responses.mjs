// The Vercel AI SDK's default OpenAI model (`openai(model)`, the Responses API): one generated
// and one streamed answer. Prints the answers' ids and texts as JSON for the test to check.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const openai = createOpenAI({ baseURL: process.env.PLATFORM_URL + "/v1", apiKey: process.env.API_KEY });
const model = openai(process.env.MODEL);

const generated = await generateText({ model, prompt: "What is TON?", maxOutputTokens: 64 });
const streamed = streamText({ model, prompt: "Stream about TON.", maxOutputTokens: 48 });
let text = "";
for await (const part of streamed.textStream) text += part;
const response = await streamed.response;
console.log(JSON.stringify({
  generated: { id: generated.response.id, text: generated.text, usage: generated.usage },
  streamed: { id: response.id, text, usage: await streamed.usage, finishReason: await streamed.finishReason },
}));
