// #/signin: the API key, checked against the server before it is kept (for this tab only).

import { trySignIn } from "./api.js";
import { h } from "./dom.js";

export function renderSignIn(ctx) {
  const input = h("input", {
    id: "api-key",
    type: "password",
    name: "api-key",
    autocomplete: "off",
    required: true,
    "aria-describedby": "api-key-hint api-key-error",
  });
  const error = h("div", { id: "api-key-error", class: "field-error", role: "alert" });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", { class: "subtle" }, "This server needs an API key. Ask your administrator for one (nncompress keys create)."),
    h(
      "div",
      { class: "field" },
      h("label", { for: "api-key" }, "API key"),
      input,
      h("div", { id: "api-key-hint", class: "hint" }, "Kept in this browser tab only and sent as Authorization: Bearer."),
      error,
    ),
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      error.textContent = "Enter a key.";
      input.setAttribute("aria-invalid", "true");
      return;
    }
    button.disabled = true;
    error.textContent = "";
    try {
      const problem = await trySignIn(key);
      if (problem) {
        input.setAttribute("aria-invalid", "true");
        error.textContent =
          problem.status === 401 || problem.status === 403
            ? "The server did not accept this key."
            : `The server answered ${problem.status}: ${problem.message}`;
        return;
      }
      ctx.signedIn();
      ctx.navigate("#/jobs");
    } catch (e) {
      error.textContent = `Could not reach the server: ${e.message}`;
    } finally {
      button.disabled = false;
    }
  });
  ctx.main.append(form);
  input.focus();
}
