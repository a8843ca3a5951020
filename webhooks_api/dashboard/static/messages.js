// Messages: the paged list (Messages tab and an endpoint's event history) and the message
// dialog with its payload, deliveries and delivery attempts.

import {
  badge,
  coalesce,
  endpointLabel,
  fill,
  h,
  openDialog,
  prettyBody,
  prettyJson,
  timeEl,
  toast,
} from "./ui.js";

// Live refreshes wait this long for a burst of events to settle, so that fifty deliveries
// finishing together cost one request, not fifty; and come at most once a second.
const LIVE_SETTLE_MS = 250;
const LIVE_EVERY_MS = 1000;

/** A page of messages with cursor paging, refreshed in place when live events arrive. */
export class MessageList {
  /**
   * @param {object} options
   * @param {HTMLElement} options.container
   * @param {import("./api.js").Api} options.api
   * @param {(id: string) => void} options.onOpen
   * @param {string} options.label          accessible name of the table
   * @param {object} [options.fixedFilters] filters that always apply (e.g. {endpointId})
   * @param {number} [options.pageSize]
   */
  constructor({ container, api, onOpen, label, fixedFilters = {}, pageSize = 50 }) {
    this.api = api;
    this.onOpen = onOpen;
    this.fixedFilters = fixedFilters;
    this.pageSize = pageSize;
    this.filters = {};
    this.cursors = [null]; // cursor of each page visited; the last is the current page
    this.nextCursor = null;
    this.ids = new Set();
    this.loaded = false;
    this.loading = null;
    this.reloadWanted = false;
    this.refreshSoon = coalesce(() => this.load({ live: true }), LIVE_SETTLE_MS, LIVE_EVERY_MS);

    this.tbody = h("tbody");
    this.empty = h("p", { class: "empty", hidden: true }, "No messages yet.");
    this.status = h("p", { class: "list-status", role: "status" });
    this.newer = h("button", { type: "button", class: "btn", onclick: () => this.page(-1) }, "Newer");
    this.older = h("button", { type: "button", class: "btn", onclick: () => this.page(1) }, "Older");
    this.pageLabel = h("span", { class: "page-label" }, "Page 1");
    this.newest = h(
      "button",
      { type: "button", class: "btn btn-link", hidden: true, onclick: () => this.first() },
      "Show newest",
    );
    const table = h(
      "table",
      { class: "data messages-table", "aria-label": label },
      h("colgroup", {}, h("col", { class: "c-id" }), h("col", { class: "c-type" }), h("col", { class: "c-time" })),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Message ID"),
          h("th", { scope: "col" }, "Event type"),
          h("th", { scope: "col" }, "Timestamp"),
        ),
      ),
      this.tbody,
    );
    this.tbody.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-id]");
      if (row && !event.target.closest("button")) this.onOpen(row.dataset.id);
    });
    fill(
      container,
      h("div", { class: "table-wrap" }, table),
      this.empty,
      h("div", { class: "pager" }, this.newer, this.pageLabel, this.older),
      h("div", { class: "list-status-row" }, this.status, this.newest),
    );
    this.updatePager();
  }

  get onFirstPage() {
    return this.cursors.length === 1;
  }

  /** Apply new filters and go back to the newest page. */
  setFilters(filters) {
    this.filters = filters;
    this.cursors = [null];
    return this.load();
  }

  first() {
    this.cursors = [null];
    return this.load();
  }

  async page(direction) {
    if (direction > 0 && this.nextCursor) this.cursors.push(this.nextCursor);
    else if (direction < 0 && this.cursors.length > 1) this.cursors.pop();
    else return;
    await this.load();
  }

  /** A live event about message `messageId`: show it if it is news to this page. */
  noteActivity(messageId) {
    if (!this.loaded) return;
    if (this.onFirstPage) {
      if (!this.ids.has(messageId)) this.refreshSoon();
    } else if (!this.ids.has(messageId)) {
      this.status.textContent = "New messages have arrived.";
      this.newest.hidden = false;
    }
  }

  async load({ live = false } = {}) {
    if (this.loading) {
      // One request at a time; the latest wish runs when the current one ends.
      this.reloadWanted = true;
      return this.loading;
    }
    const cursor = this.cursors[this.cursors.length - 1];
    const query = { ...this.filters, ...this.fixedFilters, limit: this.pageSize, cursor };
    if (!live) this.status.textContent = "Loading…";
    this.loading = this.api
      .listMessages(query)
      .then((page) => {
        this.nextCursor = page.nextCursor || null;
        this.render(page.items || [], live);
        this.status.textContent = "";
        this.newest.hidden = true;
        this.loaded = true;
      })
      .catch((error) => {
        this.status.textContent = `Messages could not be loaded: ${error.message}`;
        if (!live && this.cursors.length > 1) this.cursors.pop();
      })
      .finally(() => {
        this.loading = null;
        this.updatePager();
        if (this.reloadWanted) {
          this.reloadWanted = false;
          this.load({ live: true });
        }
      });
    return this.loading;
  }

  updatePager() {
    this.newer.disabled = this.onFirstPage;
    this.older.disabled = !this.nextCursor;
    this.pageLabel.textContent = `Page ${this.cursors.length}`;
  }

  row(message) {
    return h(
      "tr",
      { dataset: { id: message.id } },
      h(
        "td",
        { "data-label": "Message ID" },
        h(
          "button",
          {
            type: "button",
            class: "link mono cell-ellipsis",
            title: message.id,
            onclick: () => this.onOpen(message.id),
          },
          message.id,
        ),
        message.test ? h("span", { class: "tag" }, "test") : null,
      ),
      h("td", { "data-label": "Event type" }, h("span", { class: "mono" }, message.eventType)),
      h("td", { "data-label": "Timestamp" }, timeEl(message.timestamp)),
    );
  }

  /** Keyed update: rows already shown stay (focus and scroll with them), new ones slide in. */
  render(items, live) {
    const existing = new Map([...this.tbody.rows].map((tr) => [tr.dataset.id, tr]));
    let ref = this.tbody.firstElementChild;
    for (const message of items) {
      let tr = existing.get(message.id);
      if (tr) existing.delete(message.id);
      else {
        tr = this.row(message);
        if (live) tr.classList.add("fresh");
      }
      if (tr === ref) ref = ref.nextElementSibling;
      else this.tbody.insertBefore(tr, ref);
    }
    for (const tr of existing.values()) tr.remove();
    this.ids = new Set(items.map((m) => m.id));
    const filtered = Object.values(this.filters).some(Boolean);
    this.empty.textContent = filtered ? "No messages match these filters." : "No messages yet.";
    this.empty.hidden = items.length > 0;
  }
}

/** The message dialog: payload, deliveries (with resend) and the attempts table. */
export class MessageDialog {
  /**
   * @param {object} options
   * @param {import("./api.js").Api} options.api
   * @param {() => Map<string, object>} options.endpoints the endpoints the caller can see
   * @param {AbortSignal} options.signal aborted at sign-out
   */
  constructor({ api, endpoints, signal }) {
    this.api = api;
    this.endpoints = endpoints;
    this.dialog = document.getElementById("message-dialog");
    this.messageId = null;
    this.expanded = new Set();
    this.seenAttempts = new Set();
    this.refreshSoon = coalesce(() => this.refresh(true), LIVE_SETTLE_MS, LIVE_EVERY_MS);
    this.dialog.addEventListener(
      "close",
      () => {
        this.messageId = null;
      },
      { signal },
    );
  }

  async open(messageId) {
    this.messageId = messageId;
    this.expanded = new Set();
    this.seenAttempts = new Set();
    document.getElementById("message-dialog-title").textContent = "Message";
    fill(document.getElementById("message-props"));
    fill(document.getElementById("message-payload"), "Loading…");
    fill(document.getElementById("message-deliveries"));
    fill(document.getElementById("message-attempts"));
    document.getElementById("resend-result").textContent = "";
    document.getElementById("message-dialog-body").scrollTop = 0;
    openDialog(this.dialog, this.dialog.querySelector("[data-close]"));
    await this.refresh(false);
  }

  /** A live attempt event: refresh if it concerns the open message. */
  noteActivity(data) {
    if (this.messageId && data && data.messageId === this.messageId) this.refreshSoon();
  }

  async refresh(live) {
    const id = this.messageId;
    if (!id) return;
    try {
      const [message, attempts] = await Promise.all([
        this.api.getMessage(id),
        this.api.messageAttempts(id),
      ]);
      if (this.messageId !== id) return;
      this.renderMessage(message);
      this.renderAttempts(attempts.items || [], live);
    } catch (error) {
      if (this.messageId !== id) return;
      fill(document.getElementById("message-payload"), `The message could not be loaded: ${error.message}`);
    }
  }

  renderMessage(message) {
    document.getElementById("message-dialog-title").textContent = `Message ${message.id}`;
    const props = [
      ["Message ID", h("span", { class: "mono" }, message.id)],
      ["Event type", h("span", { class: "mono" }, message.eventType)],
      ["Timestamp", timeEl(message.timestamp)],
    ];
    if (message.eventId) props.push(["Event ID", h("span", { class: "mono" }, message.eventId)]);
    if (message.test) props.push(["Kind", h("span", { class: "tag" }, "test")]);
    fill(
      document.getElementById("message-props"),
      props.map(([term, value]) => h("div", { class: "prop" }, h("dt", {}, term), h("dd", {}, value))),
    );
    const payload = document.getElementById("message-payload");
    const text = prettyJson(message.payload);
    if (payload.textContent !== text) payload.textContent = text;
    this.renderDeliveries(message);
  }

  renderDeliveries(message) {
    const known = this.endpoints();
    const rows = (message.deliveries || []).map((delivery) => {
      const endpoint = known.get(delivery.endpointId);
      const label = endpoint ? endpointLabel(endpoint) : delivery.endpointId;
      const disabled = endpoint && endpoint.status !== "active";
      const resend = h(
        "button",
        {
          type: "button",
          class: "btn btn-small",
          "aria-label": `Resend to ${label}`,
          disabled: disabled || undefined,
          title: disabled ? "The endpoint is disabled" : undefined,
          onclick: (event) => this.resend(event.currentTarget, delivery.endpointId, label),
        },
        "Resend",
      );
      // The last answer explains a failure; next to "Delivered" a later resend's 500 misleads.
      const code =
        delivery.httpStatusCode && delivery.status !== "delivered" ? ` ${delivery.httpStatusCode}` : "";
      return h(
        "tr",
        { dataset: { endpointId: delivery.endpointId } },
        h(
          "td",
          { "data-label": "Endpoint" },
          h("span", { class: "cell-ellipsis", title: label }, label),
          endpoint ? h("span", { class: "sub mono cell-ellipsis", title: endpoint.url }, endpoint.url) : null,
        ),
        h("td", { "data-label": "Status" }, badge(delivery.status), h("span", { class: "muted" }, code)),
        h(
          "td",
          { "data-label": "Attempts" },
          `${delivery.attemptNumber ?? 0} made`,
          // Manual and test attempts come on top of the automatic ones (docs/api.md §5).
          h("span", { class: "sub" }, `up to ${delivery.maxAttempts ?? "?"} automatic`),
          delivery.status === "pending" && delivery.nextRetryAt
            ? h("span", { class: "sub" }, "next ", timeEl(delivery.nextRetryAt))
            : null,
        ),
        h("td", { class: "actions" }, resend),
      );
    });
    fill(document.getElementById("message-deliveries"), rows);
    document.getElementById("message-deliveries-empty").hidden = rows.length > 0;
  }

  async resend(button, endpointId, label) {
    const result = document.getElementById("resend-result");
    button.disabled = true;
    try {
      await this.api.resend(this.messageId, endpointId);
      result.textContent = `Resend to ${label} queued. The attempt appears below when it is made.`;
      toast(`Resend to ${label} queued`);
    } catch (error) {
      result.textContent = `Resend failed: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }

  attemptRows(attempt, fresh) {
    const detailId = `attempt-${attempt.id}`;
    const open = this.expanded.has(attempt.id);
    const toggle = h(
      "button",
      {
        type: "button",
        class: "btn btn-quiet icon-btn expander",
        "aria-expanded": String(open),
        "aria-controls": detailId,
        "aria-label": "Show attempt details",
        onclick: () => this.toggle(attempt.id),
      },
      h("span", { class: "chevron", "aria-hidden": "true" }),
    );
    const summary = h(
      "tr",
      { class: `attempt${fresh ? " fresh" : ""}${open ? " open" : ""}`, dataset: { id: attempt.id } },
      h("td", { class: "toggle-cell" }, toggle),
      h(
        "td",
        { "data-label": "Status" },
        badge(attempt.status),
        attempt.statusCode ? h("span", { class: "muted" }, ` ${attempt.statusCode}`) : null,
      ),
      h("td", { "data-label": "URL" }, h("span", { class: "mono cell-ellipsis", title: attempt.url }, attempt.url)),
      h("td", { "data-label": "Timestamp" }, timeEl(attempt.timestamp)),
    );
    summary.addEventListener("click", (event) => {
      if (!event.target.closest("button")) this.toggle(attempt.id);
    });
    const fields = [
      ["Status code", attempt.statusCode ?? "—", "statusCode"],
      ["Duration", `${attempt.durationMs} ms`, "durationMs"],
      ["Trigger", attempt.trigger, "trigger"],
      ["Endpoint ID", h("span", { class: "mono" }, attempt.endpointId), "endpointId"],
    ];
    if (attempt.error) fields.push(["Error", attempt.error, "error"]);
    const body = attempt.responseBody;
    const detail = h(
      "tr",
      { class: "attempt-detail", id: detailId, hidden: !open, dataset: { for: attempt.id } },
      h(
        "td",
        { colspan: "4" },
        h(
          "dl",
          { class: "props compact" },
          fields.map(([term, value, key]) =>
            h("div", { class: "prop" }, h("dt", {}, term), h("dd", { dataset: { field: key } }, value)),
          ),
        ),
        h("div", { class: "body-head" }, "Response body"),
        body
          ? h("pre", { class: "code scroll body", tabindex: "0", dataset: { field: "responseBody" }, "aria-label": "Response body" }, prettyBody(body))
          : h("p", { class: "muted small", dataset: { field: "responseBody" } }, "Empty"),
      ),
    );
    return [summary, detail];
  }

  toggle(attemptId) {
    const open = !this.expanded.has(attemptId);
    if (open) this.expanded.add(attemptId);
    else this.expanded.delete(attemptId);
    const tbody = document.getElementById("message-attempts");
    const summary = tbody.querySelector(`tr.attempt[data-id="${CSS.escape(attemptId)}"]`);
    const detail = tbody.querySelector(`tr.attempt-detail[data-for="${CSS.escape(attemptId)}"]`);
    if (summary) {
      summary.querySelector(".expander").setAttribute("aria-expanded", String(open));
      summary.classList.toggle("open", open);
    }
    if (detail) detail.hidden = !open;
  }

  /** Attempts never change once made: keep their rows, add the new ones at the top. */
  renderAttempts(attempts, live) {
    const tbody = document.getElementById("message-attempts");
    const shown = new Set([...tbody.querySelectorAll("tr.attempt")].map((tr) => tr.dataset.id));
    let ref = tbody.firstElementChild;
    for (const attempt of attempts) {
      if (shown.has(attempt.id)) {
        // Skip past this attempt's two rows.
        while (ref && ref.dataset.id !== attempt.id) ref = ref.nextElementSibling;
        if (ref) ref = ref.nextElementSibling?.nextElementSibling ?? null;
        continue;
      }
      const fresh = live && !this.seenAttempts.has(attempt.id);
      for (const tr of this.attemptRows(attempt, fresh)) tbody.insertBefore(tr, ref);
    }
    for (const attempt of attempts) this.seenAttempts.add(attempt.id);
    document.getElementById("message-attempts-empty").hidden = attempts.length > 0;
  }
}
