// The Janus page: chat (with an image) and image generation, both over the server's own OpenAI-style API,
// read as server-sent events from fetch() so that text and images appear while they are made. Model output
// is only ever inserted as text (textContent) or as an image, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, messages: [], image: null, chat: null, generation: null };

// ---- API ----------------------------------------------------------------------------------------------
class APIError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

// The server's error, worded for this page (a missing key points at the box to type it in).
function failure(error, status) {
  if (error?.code === "invalid_api_key") {
    $("api-key-box").hidden = false;
    $("api-key").focus();
    return new APIError(`${error.message}: enter this server's API key at the top right`, error.code);
  }
  return new APIError(error?.message || `the server answered ${status}`, error?.code);
}

async function post(path, body, signal) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!response.ok) {
    const answer = await response.json().catch(() => null);
    throw failure(answer?.error, response.status);
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
    if (done) throw new APIError("the server closed the stream before it finished");
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const payload = JSON.parse(data);
      if (payload.error) throw failure(payload.error);
      yield payload;
    }
  }
}

const stopped = (error) => error.name === "AbortError";
const seconds = (since) => `${((performance.now() - since) / 1000).toFixed(1)} s`;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- chat ---------------------------------------------------------------------------------------------
function nearBottom(log) {
  return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
}

function bubble(role, text, image) {
  const log = $("chat-log");
  const follow = nearBottom(log);
  const div = element("div", `msg ${role}`);
  if (image) {
    const img = element("img");
    img.src = image;
    img.alt = "attached image";
    div.append(img);
  }
  div.append(element("span", "text", text), element("div", "meta"));
  $("chat-empty").hidden = true;
  log.append(div);
  if (follow) log.scrollTop = log.scrollHeight;
  return div;
}

function setText(div, text) {
  const log = $("chat-log");
  const follow = nearBottom(log);
  div.querySelector(".text").textContent = text;
  if (follow) log.scrollTop = log.scrollHeight;
}

function setMeta(div, text) {
  div.querySelector(".meta").textContent = text;
}

function setImage(image) {
  state.image = image;
  $("chat-attachment").hidden = !image;
  $("chat-preview").src = image ? image.url : "";
  $("chat-image-name").textContent = image ? image.name : "";
  if (!image) $("chat-image").value = "";
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    if (!file.type.startsWith("image/")) {
      reject(new Error(`${file.name} is not an image: attach a PNG, JPEG, WebP or GIF file`));
      return;
    }
    const reader = new FileReader();
    reader.onload = () => resolve({ url: reader.result, name: file.name || "pasted image" });
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

async function attach(file) {
  try {
    setImage(await readImage(file));
  } catch (error) {
    bubble("error", error.message).setAttribute("role", "alert");
  }
}

// What the user had typed and attached comes back when a turn fails, unless they have typed something since.
function restore(text, image) {
  if ($("chat-input").value.trim() || state.image) return;
  $("chat-input").value = text;
  if (image) setImage(image);
}

function chatBusy(on) {
  $("chat-send").hidden = on;
  $("chat-stop").hidden = !on;
  $("chat-reset").disabled = on;
}

function usageNote(usage, finish, started) {
  const parts = [];
  if (usage) parts.push(`${usage.completion_tokens} tokens (prompt ${usage.prompt_tokens})`);
  parts.push(seconds(started));
  if (finish === "length") parts.push("stopped at the max tokens limit");
  return parts.join(" · ");
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  const image = state.image;
  if (state.chat || (!text && !image)) return;
  const content = image ? [{ type: "image_url", image_url: { url: image.url } }, { type: "text", text }] : text;
  const messages = [...state.messages, { role: "user", content }];
  const question = bubble("user", text, image?.url);
  const answer = bubble("assistant", "");
  answer.dataset.done = "false";
  $("chat-input").value = "";
  setImage(null);
  const controller = new AbortController();
  state.chat = controller;
  chatBusy(true);
  const started = performance.now();
  let reply = "";
  let finish = null;
  let usage = null;
  try {
    const response = await post("/v1/chat/completions", {
      model: state.model, messages, stream: true, stream_options: { include_usage: true },
      temperature: Number($("chat-temperature").value), max_tokens: Number($("chat-max-tokens").value),
    }, controller.signal);
    for await (const chunk of events(response)) {
      const choice = chunk.choices?.[0];
      if (choice?.delta?.content) {
        reply += choice.delta.content;
        setText(answer, reply);
      }
      finish = choice?.finish_reason || finish;
      usage = chunk.usage || usage;
    }
    state.messages = [...messages, { role: "assistant", content: reply }];
    setMeta(answer, usageNote(usage, finish, started));
  } catch (error) {
    if (stopped(error) && reply) {  // keep what was said: the conversation goes on from there
      state.messages = [...messages, { role: "assistant", content: reply }];
      setMeta(answer, `stopped · ${seconds(started)}`);
    } else {
      question.classList.add("failed");
      restore(text, image);
      if (!reply) answer.remove();
      if (stopped(error)) bubble("notice", "Stopped before the answer began.");
      else bubble("error", error.message).setAttribute("role", "alert");
    }
  } finally {
    answer.dataset.done = "true";
    state.chat = null;
    chatBusy(false);
  }
}

function newChat() {
  state.messages = [];
  for (const node of [...$("chat-log").children]) if (node.id !== "chat-empty") node.remove();
  $("chat-empty").hidden = false;
  $("chat-input").focus();
}

// ---- generation ---------------------------------------------------------------------------------------
function slug(text) {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "image";
}

function pngBlob(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: "image/png" });
}

// One generation request in the gallery: a heading and a card per image, each with its own progress bar.
function newRun(prompt, n, seed) {
  const section = element("section", "run");
  const title = element("h2", "", prompt);
  title.append(element("small", "", seed === undefined ? "random seed" : `seed ${seed}`));
  const grid = element("div", "cards");
  const cards = Array.from({ length: n }, (_, index) => {
    const card = element("figure", "card");
    card.dataset.index = String(index);
    card.dataset.state = "waiting";
    const frame = element("div", "frame");
    const waiting = element("div", "waiting");
    const bar = element("progress");
    bar.max = 1;
    bar.value = 0;
    waiting.append(bar, element("div", "label", "waiting"));
    frame.append(waiting);
    const caption = element("figcaption");
    caption.append(element("span", "", `Image ${index + 1} of ${n}`));
    card.append(frame, caption);
    grid.append(card);
    return card;
  });
  section.append(title, grid);
  $("gen-empty").hidden = true;
  $("gen-gallery").prepend(section);
  const name = `janus-${slug(prompt)}-${seed === undefined ? "random" : seed}`;
  return {
    progress(item) {
      for (let i = item.finished; i < item.finished + item.running; i += 1) {
        const card = cards[i];
        if (card.dataset.state === "done") continue;
        card.dataset.state = "running";
        card.querySelector("progress").value = item.step / item.total;
        card.querySelector(".label").textContent = `token ${item.step} of ${item.total}`;
      }
    },
    finish(item) {
      const card = cards[item.index];
      const url = URL.createObjectURL(pngBlob(item.b64_json));
      const img = element("img");
      img.src = url;
      img.alt = `${prompt} (${item.index + 1} of ${n})`;
      const open = element("a");
      open.href = url;
      open.target = "_blank";
      open.append(img);
      card.querySelector(".frame").replaceChildren(open);
      const download = element("a", "download", "Download PNG");
      download.href = url;
      download.download = `${name}-${item.index + 1}.png`;
      card.querySelector("figcaption").append(download);
      card.dataset.state = "done";
    },
    end(how) {
      for (const card of cards) {
        if (card.dataset.state === "done") continue;
        card.dataset.state = how;
        card.querySelector(".label").textContent = how;
      }
    },
  };
}

function genBusy(on) {
  $("gen-run").disabled = on;
  $("gen-stop").disabled = !on;
}

async function generate(event) {
  event.preventDefault();
  const prompt = $("gen-prompt").value.trim();
  if (state.generation || !prompt) return;
  const n = Number($("gen-n").value);
  const body = {
    model: state.model, prompt, n, stream: true, response_format: "b64_json",
    cfg_weight: Number($("gen-cfg").value), temperature: Number($("gen-temperature").value),
  };
  const seed = $("gen-seed").value === "" ? undefined : Number($("gen-seed").value);
  if (seed !== undefined) body.seed = seed;
  const run = newRun(prompt, n, seed);
  const status = $("gen-status");
  status.textContent = "waiting for the model…";
  $("gen-error").hidden = true;
  const controller = new AbortController();
  state.generation = controller;
  genBusy(true);
  const started = performance.now();
  let finished = 0;
  try {
    const response = await post("/v1/images/generations", body, controller.signal);
    for await (const item of events(response)) {
      if (item.type === "janus.progress") {
        run.progress(item);
        const last = item.finished + item.running;
        const which = item.running > 1 ? `${item.finished + 1}–${last}` : `${last}`;
        status.textContent = `drawing image ${which} of ${item.n}: token ${item.step} of ${item.total}`;
      } else if (item.type === "image_generation.completed") {
        run.finish(item);
        finished += 1;
      }
    }
    status.textContent = `done: ${finished} image${finished === 1 ? "" : "s"} in ${seconds(started)}`;
  } catch (error) {
    run.end(stopped(error) ? "stopped" : "failed");
    status.textContent = stopped(error) ? "stopped" : "failed";
    if (!stopped(error)) {
      $("gen-error").textContent = error.message;
      $("gen-error").hidden = false;
    }
  } finally {
    state.generation = null;
    genBusy(false);
  }
}

// ---- page ---------------------------------------------------------------------------------------------
const TABS = ["chat", "generate"];

function selectTab(name) {
  for (const tab of TABS) {
    const tabButton = $(`tab-${tab}`);
    tabButton.setAttribute("aria-selected", String(tab === name));
    tabButton.tabIndex = tab === name ? 0 : -1;
    $(`panel-${tab}`).hidden = tab !== name;
  }
  history.replaceState(null, "", name === "chat" ? location.pathname : `#${name}`);
}

function count(value) {
  if (value >= 1e9) return `${(value / 1e9).toFixed(1)} billion`;
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)} million`;
  return value.toLocaleString("en");
}

function showModel(health) {
  state.model = health.model;
  $("model-name").textContent = health.model;
  document.title = `Janus · ${health.model}`;
  $("api-key-box").hidden = !health.auth;
  const note = $("test-note");
  note.hidden = !health.test_model;
  note.textContent = health.test_model
    ? `Test model: ${health.model} has ${count(health.parameters)} parameters, far fewer than any released ` +
      "Janus, so its weights are random. Answers will be gibberish and images noise; serve a released " +
      "checkpoint (e.g. deepseek-ai/Janus-Pro-1B) for real output."
    : "";
  const limits = health.limits;
  $("chat-max-tokens").max = limits.max_tokens;
  $("chat-max-tokens").value = Math.min(limits.default_max_tokens, limits.max_tokens);
  $("gen-n").max = limits.max_n;
}

function wire() {
  $("api-key").value = sessionStorage.getItem("janus-api-key") || "";
  $("api-key").addEventListener("change", () => sessionStorage.setItem("janus-api-key", $("api-key").value));
  for (const tab of TABS) $(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
  document.querySelector("nav").addEventListener("keydown", (e) => {
    if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
    const next = TABS[(TABS.indexOf(document.activeElement.id.slice(4)) + 1) % TABS.length];
    selectTab(next);
    $(`tab-${next}`).focus();
  });
  $("chat-form").addEventListener("submit", sendChat);
  $("gen-form").addEventListener("submit", generate);
  $("chat-stop").addEventListener("click", () => state.chat?.abort());
  $("gen-stop").addEventListener("click", () => state.generation?.abort());
  $("chat-reset").addEventListener("click", newChat);
  $("chat-clear-image").addEventListener("click", () => setImage(null));
  $("chat-image").addEventListener("change", () => {
    const file = $("chat-image").files[0];
    if (file) attach(file);
  });
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("chat-input").addEventListener("paste", (e) => {
    const file = [...e.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) { e.preventDefault(); attach(file); }
  });
  const panel = $("panel-chat");
  panel.addEventListener("dragover", (e) => { e.preventDefault(); panel.classList.add("dragging"); });
  panel.addEventListener("dragleave", () => panel.classList.remove("dragging"));
  panel.addEventListener("drop", (e) => {
    e.preventDefault();
    panel.classList.remove("dragging");
    const file = e.dataTransfer.files[0];
    if (file) attach(file);
  });
}

async function init() {
  wire();
  selectTab(location.hash === "#generate" ? "generate" : "chat");
  try {
    const response = await fetch("/health");
    if (!response.ok) throw new Error(`/health answered ${response.status}`);
    showModel(await response.json());
    document.body.dataset.ready = "true";
  } catch (error) {
    $("page-error").textContent = `The server does not answer (${error.message}); reload the page once it runs.`;
    $("page-error").hidden = false;
  }
}

init();
