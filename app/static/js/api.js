// Talking to the /v1 API: the API key (kept for this browser tab only), JSON calls, problem
// details as errors, the live event stream, and artifact downloads.

const KEY_NAME = "nncompress.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_NAME, key);
  else sessionStorage.removeItem(KEY_NAME);
}

/** An error response; `problem` is the RFC 9457 body (type, title, detail, errors[]). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  /** The stable problem code: urn:nncompress:problem:invalid_config → "invalid_config". */
  get code() {
    return (this.problem.type || "").split(":").pop();
  }
}

// Called on any 401, so that the app can send the user to the sign-in page.
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function headers(extra = {}) {
  const h = new Headers(extra);
  const key = apiKey();
  if (key) h.set("Authorization", `Bearer ${key}`);
  return h;
}

async function problemOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body === "object") return body;
  } catch {
    // not JSON: a proxy's error page, for instance
  }
  return { status: response.status, title: response.statusText || `HTTP ${response.status}`, detail: text.slice(0, 500) };
}

/** fetch() on the API: JSON in and out; throws ApiError with the problem details on 4xx/5xx. */
export async function api(path, { method = "GET", json, body, extraHeaders = {}, signal, quiet401 = false } = {}) {
  const h = headers({ Accept: "application/json, application/problem+json", ...extraHeaders });
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers: h, body, signal });
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response));
    if (response.status === 401 && !quiet401) onUnauthorized(error);
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

/**
 * Whether the server needs a key: "open" (it answers without one), "ok" (the stored key works)
 * or "needs-key" (401 without a key or with the stored one).
 */
export async function authState() {
  try {
    await api("/v1/jobs?limit=1", { quiet401: true });
    return apiKey() ? "ok" : "open";
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return "needs-key";
    throw error;
  }
}

/** Checks `key` against the server without keeping it unless it works. */
export async function trySignIn(key) {
  const response = await fetch("/v1/jobs?limit=1", {
    headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
  });
  if (response.ok) {
    setApiKey(key);
    return null;
  }
  return new ApiError(response.status, await problemOf(response));
}

/**
 * Reads a server-sent-event stream with fetch() (EventSource cannot send an Authorization
 * header). Calls onEvent({id, event, data}) per event; resolves when the server ends the stream.
 */
export async function streamEvents(path, { lastEventId = null, onEvent, onOpen, signal }) {
  const h = headers({ Accept: "text/event-stream" });
  if (lastEventId !== null) h.set("Last-Event-ID", String(lastEventId));
  const response = await fetch(path, { headers: h, signal, cache: "no-store" });
  if (!response.ok || !response.body) {
    throw new ApiError(response.status, await problemOf(response));
  }
  if (onOpen) onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let frame = { id: null, event: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\n|\r/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (frame.data.length) onEvent({ id: frame.id, event: frame.event, data: frame.data.join("\n") });
        frame = { id: null, event: "message", data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") frame.data.push(text);
      else if (field === "id") frame.id = text;
      else if (field === "event") frame.event = text;
    }
  }
}

async function sha256Hex(blob) {
  // crypto.subtle exists only in secure contexts (https, or http on localhost).
  if (!globalThis.crypto || !crypto.subtle) return null;
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Downloads an artifact with the API key (a plain link could not send it) and saves it under
 * its name. Resolves to {verified: true|false|null}: whether the bytes hash to `sha256`.
 */
export async function downloadArtifact(artifact) {
  const response = await fetch(artifact.url, { headers: headers() });
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  const blob = await response.blob();
  const digest = await sha256Hex(blob);
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = artifact.name;
  document.body.append(link);
  link.click();
  link.remove();
  // Revoked later: the download reads the blob after click() returns.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { verified: digest === null ? null : digest === artifact.sha256 };
}

/** A random Idempotency-Key (crypto.randomUUID is missing outside secure contexts). */
export function idempotencyKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
