// An endpoint's lifecycle in the Endpoints tab: the resource it is bound to, its expiry,
// and the warning of a failing endpoint with its cause (docs/api.md §11.4, §11.5).

import { h, localInputToIso, timeEl } from "./ui.js";

const $ = (id) => document.getElementById(id);

/** "HTTP 503", "timeout", ...: what the last failure was, in a few words. */
function cause(failing) {
  const parts = [];
  if (failing.lastStatusCode != null) parts.push(`status ${failing.lastStatusCode}`);
  if (failing.lastError) parts.push(failing.lastError);
  return parts.length ? parts.join(": ") : "no answer recorded";
}

/** The failing warning of an endpoint, or null while it is not failing. */
export function failingWarning(endpoint) {
  const failing = endpoint && endpoint.failing;
  if (!failing) return null;
  const text = `Failing: ${cause(failing)}`;
  return h(
    "span",
    { class: "badge badge-bad failing-warning", title: `Every attempt has failed since ${failing.since || "—"}` },
    text,
  );
}

/** Details rows for the resource binding and the expiry, where set. */
export function lifecycleProps(endpoint) {
  const props = [];
  if (endpoint.resourceId) props.push(["Resource", h("span", { class: "mono" }, endpoint.resourceId)]);
  if (endpoint.expiresAt) props.push(["Expires", timeEl(endpoint.expiresAt)]);
  return props;
}

/** "2025-12-19T10:30" in local time, for a datetime-local input. */
function toLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** Fill the form's fields: the resource only when creating (it is set once). */
export function fillLifecycleFields(endpoint) {
  $("endpoint-resource-field").hidden = Boolean(endpoint);
  $("endpoint-resource").value = "";
  $("endpoint-expires").value = endpoint ? toLocalInput(endpoint.expiresAt) : "";
}

/** The body fields the form gives: on an edit an empty expiry clears it. */
export function lifecycleBody(editing) {
  const body = {};
  const expires = localInputToIso($("endpoint-expires").value);
  if (editing) body.expiresAt = expires || null;
  else if (expires) body.expiresAt = expires;
  const resource = $("endpoint-resource").value.trim();
  if (!editing && resource) body.resourceId = resource;
  return body;
}
