// The Janus page: chat (with an image) and image generation, both over the server's own OpenAI-style API,
// read as server-sent events from fetch() so text and images appear as they are made. Model output is only
// ever inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, messages: [], image: null, controller: null };

// ---- API ----------------------------------------------------------------------------------------------
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function post(path, body, signal) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!response.ok) {
    const answer = await response.json().catch(() => null);
    throw new Error(answer?.error?.message || `${response.status} ${response.statusText}`);
  }
  return response;
}

// Yields the JSON payload of each `data:` event until `data: [DONE]`; an error event throws.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the server closed the stream early");
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const payload = JSON.parse(data);
      if (payload.error) throw new Error(payload.error.message);
      yield payload;
    }
  }
}

function showError(error) {
  const box = $("error");
  if (!error || error.name === "AbortError") { box.hidden = true; return; }
  box.textContent = error.message || String(error);
  box.hidden = false;
}

function busy(run, stop, on) {
  $(run).disabled = on;
  $(stop).disabled = !on;
}

// ---- chat ---------------------------------------------------------------------------------------------
function bubble(role, text, image) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  if (image) {
    const img = document.createElement("img");
    img.src = image;
    img.alt = "attached image";
    div.append(img);
  }
  div.append(document.createTextNode(text));
  $("chat-log").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function setImage(dataUrl) {
  state.image = dataUrl;
  $("chat-preview").src = dataUrl || "";
  $("chat-preview").hidden = !dataUrl;
  $("chat-clear-image").hidden = !dataUrl;
  if (!dataUrl) $("chat-image").value = "";
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text && !state.image) return;
  const content = state.image
    ? [{ type: "image_url", image_url: { url: state.image } }, { type: "text", text }]
    : text;
  const turn = { role: "user", content };
  bubble("user", text, state.image);
  state.messages.push(turn);
  $("chat-input").value = "";
  setImage(null);
  const answer = bubble("assistant", "");
  answer.dataset.done = "false";
  const temperature = Number($("chat-temperature").value) || 0;
  state.controller = new AbortController();
  busy("chat-send", "chat-stop", true);
  showError(null);
  let reply = "";
  try {
    const response = await post("/v1/chat/completions", {
      model: state.model, messages: state.messages, stream: true, temperature,
      max_tokens: Number($("chat-max-tokens").value) || undefined,
    }, state.controller.signal);
    for await (const chunk of events(response)) {
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) { reply += piece; answer.textContent = reply; }
    }
    state.messages.push({ role: "assistant", content: reply });
  } catch (error) {
    state.messages.pop();  // the turn got no answer: leave it out of the history
    if (!reply) answer.remove();
    showError(error);
  } finally {
    answer.dataset.done = "true";
    busy("chat-send", "chat-stop", false);
  }
}

// ---- generation ---------------------------------------------------------------------------------------
async function generate(event) {
  event.preventDefault();
  const prompt = $("gen-prompt").value.trim();
  if (!prompt) return;
  const n = Number($("gen-n").value) || 1;
  const body = { model: state.model, prompt, n, stream: true, response_format: "b64_json",
                 cfg_weight: Number($("gen-cfg").value) };
  if ($("gen-seed").value !== "") body.seed = Number($("gen-seed").value);
  const progress = $("gen-progress");
  const status = $("gen-status");
  $("gen-images").replaceChildren();
  progress.value = 0;
  progress.hidden = false;
  status.textContent = "waiting for the model…";
  state.controller = new AbortController();
  busy("gen-run", "gen-stop", true);
  showError(null);
  let finished = 0;
  try {
    const response = await post("/v1/images/generations", body, state.controller.signal);
    for await (const item of events(response)) {
      if (item.type === "janus.progress") {
        progress.value = (item.finished + (item.running * item.step) / item.total) / item.n;
        status.textContent = `image ${item.finished + 1} of ${item.n}: token ${item.step} / ${item.total}`;
      } else if (item.type === "image_generation.completed") {
        const img = document.createElement("img");
        img.src = `data:image/png;base64,${item.b64_json}`;
        img.alt = `${prompt} (${item.index + 1})`;
        $("gen-images").append(img);
        finished += 1;
      }
    }
    progress.value = 1;
    status.textContent = `done: ${finished} image(s)`;
  } catch (error) {
    status.textContent = error.name === "AbortError" ? "stopped" : "failed";
    showError(error);
  } finally {
    busy("gen-run", "gen-stop", false);
  }
}

// ---- page ---------------------------------------------------------------------------------------------
function selectTab(name) {
  for (const tab of ["chat", "generate"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`panel-${tab}`).hidden = tab !== name;
  }
}

async function init() {
  $("api-key").value = sessionStorage.getItem("janus-api-key") || "";
  $("api-key").addEventListener("change", () => sessionStorage.setItem("janus-api-key", $("api-key").value));
  $("tab-chat").addEventListener("click", () => selectTab("chat"));
  $("tab-generate").addEventListener("click", () => selectTab("generate"));
  $("chat-form").addEventListener("submit", sendChat);
  $("gen-form").addEventListener("submit", generate);
  $("chat-stop").addEventListener("click", () => state.controller?.abort());
  $("gen-stop").addEventListener("click", () => state.controller?.abort());
  $("chat-reset").addEventListener("click", () => { state.messages = []; $("chat-log").replaceChildren(); });
  $("chat-clear-image").addEventListener("click", () => setImage(null));
  $("chat-image").addEventListener("change", async () => {
    const file = $("chat-image").files[0];
    if (file) setImage(await readFile(file).catch((error) => { showError(error); return null; }));
  });
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat-form").requestSubmit(); }
  });
  try {
    const health = await (await fetch("/health")).json();
    state.model = health.model;
    $("model-name").textContent = health.model;
    $("api-key-box").hidden = !health.auth;
    document.body.dataset.ready = "true";
  } catch (error) {
    showError(new Error(`the server does not answer: ${error.message}`));
  }
}

init();
