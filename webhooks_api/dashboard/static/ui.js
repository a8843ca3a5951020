// Small DOM helpers shared by the dashboard's views. Everything that comes from the API
// or from a receiver is put in the page as text (textContent), never as HTML.

/** Build an element: h("td", {class: "x", dataset: {id}}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") {
      for (const [name, data] of Object.entries(value)) {
        if (data !== undefined && data !== null) el.dataset[name] = data;
      }
    }
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const TIME_FORMAT = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  timeZoneName: "short",
});

/** An ISO 8601 time in the viewer's own time zone and locale. */
export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return TIME_FORMAT.format(date);
}

/** A <time> element: local time shown, the exact UTC instant in datetime and title. */
export function timeEl(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: `${iso} (UTC)` }, formatTime(iso));
}

/** A local date-time input value ("2025-12-19T10:30:00") as an ISO 8601 UTC string. */
export function localInputToIso(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

const BADGE_KIND = {
  active: "ok",
  success: "ok",
  delivered: "ok",
  failed: "bad",
  disabled: "muted",
  cancelled: "muted",
  pending: "warn",
};

const BADGE_TEXT = {
  active: "Active",
  disabled: "Disabled",
  success: "Succeeded",
  failed: "Failed",
  delivered: "Delivered",
  pending: "Pending",
  cancelled: "Cancelled",
};

/** A status pill; its colour is backed by a word, never colour alone. */
export function badge(status) {
  const kind = BADGE_KIND[status] || "muted";
  return h("span", { class: `badge badge-${kind}`, dataset: { status } }, BADGE_TEXT[status] || status);
}

/** Pretty-print JSON text; anything else is returned as it is. */
export function prettyBody(text) {
  if (text === null || text === undefined) return "";
  const trimmed = String(text).trim();
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    try {
      return JSON.stringify(JSON.parse(trimmed), null, 2);
    } catch {
      // not JSON after all
    }
  }
  return String(text);
}

export function prettyJson(value) {
  return JSON.stringify(value, null, 2);
}

/** Roving-tabindex tabs (WAI-ARIA tabs pattern): arrows, Home and End move between tabs. */
export function setupTablist(tablist, onSelect, signal = undefined) {
  const tabs = () => [...tablist.querySelectorAll('[role="tab"]')];
  tablist.addEventListener(
    "click",
    (event) => {
      const tab = event.target.closest('[role="tab"]');
      if (tab) onSelect(tab.id);
    },
    { signal },
  );
  tablist.addEventListener(
    "keydown",
    (event) => {
    const list = tabs();
    const index = list.indexOf(document.activeElement);
    if (index === -1) return;
    let next = null;
    if (event.key === "ArrowRight") next = list[(index + 1) % list.length];
    else if (event.key === "ArrowLeft") next = list[(index - 1 + list.length) % list.length];
    else if (event.key === "Home") next = list[0];
    else if (event.key === "End") next = list[list.length - 1];
      if (next) {
        event.preventDefault();
        onSelect(next.id);
        next.focus();
      }
    },
    { signal },
  );
}

/** Mark one tab selected and show its panel. */
export function selectTab(tablist, tabId) {
  for (const tab of tablist.querySelectorAll('[role="tab"]')) {
    const selected = tab.id === tabId;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    const panel = document.getElementById(tab.getAttribute("aria-controls"));
    if (panel) panel.hidden = !selected;
  }
}

function focusable(el) {
  return Boolean(
    el && el !== document.body && document.contains(el) && el.getClientRects().length > 0,
  );
}

/**
 * Open a modal dialog; when it closes, focus goes back to where it was (or to `returnTo`),
 * else, if that element is gone or hidden by then, to the page's main region.
 */
export function openDialog(dialog, focusEl, returnTo = null) {
  const previous = document.activeElement;
  if (!dialog.open) dialog.showModal();
  if (focusEl) focusEl.focus();
  dialog.addEventListener(
    "close",
    () => {
      const target = [returnTo, previous].find(focusable) || document.getElementById("main");
      target.focus();
    },
    { once: true },
  );
}

/** Close buttons ([data-close]) inside every dialog; a click on the backdrop closes the
 * dialogs that hold no form (a stray click must not throw away what was typed). */
export function wireDialogs() {
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("click", (event) => {
      if (event.target.closest("[data-close]")) {
        event.preventDefault();
        dialog.close();
      } else if (event.target === dialog && !dialog.querySelector("form")) {
        const box = dialog.getBoundingClientRect();
        const inside =
          event.clientX >= box.left &&
          event.clientX <= box.right &&
          event.clientY >= box.top &&
          event.clientY <= box.bottom;
        if (!inside) dialog.close();
      }
    });
  }
}

const confirmDialog = () => document.getElementById("confirm-dialog");

/**
 * Ask before a destructive action. `action` runs on Confirm; the dialog stays open with the
 * error if it throws, and closes when it succeeds. Resolves true when it ran.
 */
export function confirmAction({ title, text, confirmLabel, action }) {
  const dialog = confirmDialog();
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  const error = document.getElementById("confirm-error");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  ok.textContent = confirmLabel;
  error.textContent = "";
  return new Promise((resolve) => {
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      ok.removeEventListener("click", onOk);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("close", onClose);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onOk = async () => {
      ok.disabled = true;
      try {
        await action();
        finish(true);
      } catch (err) {
        error.textContent = err.message;
      } finally {
        ok.disabled = false;
      }
    };
    const onCancel = () => finish(false);
    const onClose = () => finish(false);
    ok.addEventListener("click", onOk);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("close", onClose);
    // Cancel takes the focus: Enter on an unread dialog must not destroy anything.
    openDialog(dialog, cancel);
  });
}

let toastTimer = null;

/** A short message at the bottom of the screen (also read by screen readers). */
export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.dataset.kind = kind;
  el.classList.add("show");
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => el.classList.remove("show"), 4000);
}

/**
 * Run `fn` soon, once for a burst of calls: `wait` ms after the first call of a burst, and
 * never more often than every `every` ms (live events can arrive by the hundred).
 */
export function coalesce(fn, wait, every) {
  let timer = null;
  let last = 0;
  return () => {
    if (timer) return;
    const delay = Math.max(wait, last + every - Date.now());
    timer = window.setTimeout(() => {
      timer = null;
      last = Date.now();
      fn();
    }, delay);
  };
}

/** Show a signing secret once, with a copy button. */
export function showSecret(secret, text, returnTo = null) {
  const dialog = document.getElementById("secret-dialog");
  const input = document.getElementById("secret-value");
  const copy = document.getElementById("secret-copy");
  document.getElementById("secret-text").textContent =
    text || "Copy this secret now: it is shown only once.";
  input.value = secret;
  copy.textContent = "Copy";
  copy.onclick = async () => {
    try {
      await navigator.clipboard.writeText(secret);
      copy.textContent = "Copied";
    } catch {
      input.select();
      copy.textContent = "Press Ctrl+C";
    }
  };
  dialog.addEventListener(
    "close",
    () => {
      input.value = "";
    },
    { once: true },
  );
  openDialog(dialog, input, returnTo);
  input.select();
}

/** A display name for an endpoint: its name, else its description, else its host. */
export function endpointLabel(endpoint) {
  if (!endpoint) return "Unknown endpoint";
  if (endpoint.name) return endpoint.name;
  if (endpoint.description) return endpoint.description;
  try {
    return new URL(endpoint.url).host;
  } catch {
    return endpoint.url || endpoint.id;
  }
}
