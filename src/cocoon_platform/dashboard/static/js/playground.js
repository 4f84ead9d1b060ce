/* The playground: one message to a model with this session's key, its answer streamed in as it
 * comes (fetch + server-sent events), then its tokens and cost. It is an ordinary API request,
 * billed like any other; Stop cuts the stream, and what was delivered is billed. */

import { ApiError, isAbort, request } from "./api.js";
import { $, clearChildren, el, setText, show, showMessage } from "./dom.js";
import { formatInt, formatTon } from "./format.js";
import { defaultModel } from "./network.js";

const CHAT = "/v1/chat/completions";
const COMPLETIONS = "/v1/completions";
const MAX_TOKENS = 512;

let listed = [];
let allowed = null; // the session key's model allow-list (ids or aliases); null: every model
let models = [];
let running = null; // the AbortController of the request in flight

function isAllowed(model) {
  if (allowed === null) return true;
  const names = [model.id, ...(model.aliases || [])].map((name) => name.toLowerCase());
  return allowed.some((name) => names.includes(name.toLowerCase()));
}

/* The session key's allow-list (null: none): the picker offers only the models it may use. */
export function setPlaygroundAllowed(list) {
  allowed = list && list.length ? list : null;
  setPlaygroundModels(listed);
}

/* The models the playground can talk to (chat and completion endpoints), in the model picker. */
export function setPlaygroundModels(list) {
  listed = list;
  models = list.filter((model) => (model.endpoint === CHAT || model.endpoint === COMPLETIONS) && isAllowed(model));
  const select = $("playground-model");
  const chosen = select.value || defaultModel(models);
  clearChildren(select);
  for (const model of models) {
    select.appendChild(el("option", { value: model.id, selected: model.id === chosen },
      model.id + (model.type && model.type !== "chat" ? " (" + model.type + ")" : "")));
  }
  $("playground-send").disabled = !models.length || running !== null;
  showMessage("playground-models", models.length ? "" : "No models are available right now.");
}

/* The events of a server-sent event stream, as the JSON of their data (or "[DONE]"). */
async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const parts = buffer.split(/\r?\n\r?\n/);
    buffer = parts.pop();
    for (const part of parts) {
      const data = part.split(/\r?\n/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (data) yield data === "[DONE]" ? data : JSON.parse(data);
    }
  }
}

function usageText(usage, requestId) {
  const details = usage.completion_tokens_details || {};
  const prompt = usage.prompt_tokens_details || {};
  const parts = [
    formatInt(usage.prompt_tokens) + " prompt"
      + (prompt.cached_tokens ? " (" + formatInt(prompt.cached_tokens) + " cached)" : ""),
    formatInt(usage.completion_tokens) + " completion"
      + (details.reasoning_tokens ? " (" + formatInt(details.reasoning_tokens) + " reasoning)" : ""),
  ];
  return "Tokens: " + parts.join(", ") + ". Cost: " + formatTon(usage.cost_nanoton) + " TON"
    + (requestId ? " (request " + requestId + ")." : ".");
}

async function send(onDone) {
  const model = models.find((m) => m.id === $("playground-model").value);
  const message = $("playground-message").value.trim();
  showMessage("playground-error", "");
  if (!model) {
    showMessage("playground-error", "Pick a model.");
    return;
  }
  if (!message) {
    showMessage("playground-error", "Write a message to send.");
    $("playground-message").focus();
    return;
  }
  const chat = model.endpoint === CHAT;
  const body = { model: model.id, stream: true, stream_options: { include_usage: true }, max_tokens: MAX_TOKENS };
  if (chat) body.messages = [{ role: "user", content: message }];
  else body.prompt = message;

  const answer = $("playground-answer");
  const reasoning = $("playground-reasoning");
  setText("playground-answer-text", "");
  setText("playground-reasoning-text", "");
  show(reasoning, false);
  show(answer, true);
  answer.setAttribute("aria-busy", "true");
  showMessage("playground-usage", "");
  running = new AbortController();
  $("playground-send").disabled = true;
  show("playground-stop", true);
  try {
    const response = await request(model.endpoint, {
      method: "POST", body, auth: true, accept: "text/event-stream", signal: running.signal,
    });
    const requestId = response.headers.get("x-request-id");
    let usage = null;
    for await (const event of events(response.body)) {
      if (event === "[DONE]") break;
      if (event.error) throw new ApiError(event.error.message || "The answer was cut short.", 502);
      const choice = (event.choices || [])[0];
      if (choice) {
        const delta = chat ? (choice.delta || {}) : { content: choice.text };
        if (delta.reasoning_content) {
          $("playground-reasoning-text").append(delta.reasoning_content);
          show(reasoning, true);
        }
        if (delta.content) $("playground-answer-text").append(delta.content);
      }
      if (event.usage) usage = event.usage;
    }
    if (usage) showMessage("playground-usage", usageText(usage, requestId));
  } catch (error) {
    showMessage("playground-error", isAbort(error)
      ? "Stopped. What was delivered is billed and shows in the usage table."
      : error.message || "Something went wrong.");
  } finally {
    answer.setAttribute("aria-busy", "false");
    running = null;
    $("playground-send").disabled = !models.length;
    show("playground-stop", false);
    onDone();
  }
}

/* onDone: after each request, refreshed or not (the balance and usage move). */
export function initPlayground(onDone) {
  $("playground-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (running === null) send(onDone);
  });
  $("playground-stop").addEventListener("click", () => {
    if (running !== null) running.abort();
  });
}
