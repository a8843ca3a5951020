// The Endpoints tab: the list, one endpoint's details (overview, event history, testing),
// and the add / edit / delete / rotate-secret actions.

import { HeadersEditor, headersList } from "./headers.js";
import { filterText, isFilterError, readFilter } from "./filter.js";
import { failingWarning, fillLifecycleFields, lifecycleBody, lifecycleProps } from "./endpoint_lifecycle.js";
import { MessageList } from "./messages.js";
import {
  badge,
  coalesce,
  confirmAction,
  endpointLabel,
  fill,
  h,
  openDialog,
  prettyJson,
  selectTab,
  setupTablist,
  showSecret,
  timeEl,
  toast,
} from "./ui.js";

const $ = (id) => document.getElementById(id);

export class EndpointsView {
  /**
   * @param {object} options
   * @param {import("./api.js").Api} options.api
   * @param {{role: string}} options.me
   * @param {() => Promise<object[]>} options.eventTypes the catalog (GET /event-types)
   * @param {(id: string) => void} options.openMessage
   * @param {(route: string) => void} options.navigate
   * @param {() => void} options.onChange called when the set of endpoints changes
   * @param {AbortSignal} options.signal   aborted at sign-out: removes this view's listeners
   */
  constructor({ api, me, eventTypes, openMessage, navigate, onChange, signal }) {
    this.api = api;
    this.me = me;
    this.eventTypes = eventTypes;
    this.openMessage = openMessage;
    this.navigate = navigate;
    this.onChange = onChange;
    this.items = new Map();
    this.detailId = null;
    this.detail = null;
    this.history = null;
    this.editing = null;
    this.stats = null;
    this.canManage = me.role === "root" || me.role === "admin";
    this.refreshStatsSoon = coalesce(() => this.loadStats(), 300, 1000);

    $("add-endpoint").hidden = !this.canManage;
    $("endpoint-actions").hidden = !this.canManage;
    // Static elements outlive this view (one per sign-in): every listener goes with `signal`.
    const on = (el, type, handler) => el.addEventListener(type, handler, { signal });
    on($("add-endpoint"), "click", () => this.openEditor(null));
    on($("endpoint-back"), "click", () => this.navigate("endpoints"));
    on($("endpoint-edit"), "click", () => this.detail && this.openEditor(this.detail));
    on($("endpoint-delete"), "click", () => this.confirmDelete());
    on($("endpoint-rotate"), "click", () => this.confirmRotate());
    on($("endpoint-rows"), "click", (event) => {
      const row = event.target.closest("tr[data-id]");
      if (row && !event.target.closest("button")) this.navigate(`endpoints/${row.dataset.id}`);
    });
    setupTablist(
      document.querySelector("#endpoint-detail-view .subtabs"),
      (tabId) => this.selectSubtab(tabId),
      signal,
    );
    on($("endpoint-form"), "submit", (event) => {
      event.preventDefault();
      this.submitEditor();
    });
    for (const radio of document.querySelectorAll('input[name="eventsMode"]')) {
      on(radio, "change", () => this.syncEventsMode());
    }
    on($("test-form"), "submit", (event) => {
      event.preventDefault();
      this.sendTest();
    });
    on($("test-event-type"), "change", () => this.showExample());
    this.headersEditor = new HeadersEditor($("header-rows"), $("add-header"), signal);
  }

  /** Endpoints newest first. */
  sorted() {
    return [...this.items.values()].sort((a, b) =>
      (b.createdAt || "").localeCompare(a.createdAt || "") || b.id.localeCompare(a.id),
    );
  }

  async load() {
    $("endpoints-status").textContent = this.items.size ? "" : "Loading…";
    try {
      const page = await this.api.listEndpoints();
      this.items = new Map((page.items || []).map((e) => [e.id, e]));
      $("endpoints-status").textContent = "";
    } catch (error) {
      $("endpoints-status").textContent = `Endpoints could not be loaded: ${error.message}`;
    }
    this.renderList();
    this.onChange();
  }

  row(endpoint) {
    const label = endpointLabel(endpoint);
    return h(
      "tr",
      { dataset: { id: endpoint.id } },
      h(
        "td",
        { "data-label": "Name" },
        h(
          "button",
          {
            type: "button",
            class: "link cell-ellipsis",
            title: label,
            onclick: () => this.navigate(`endpoints/${endpoint.id}`),
          },
          label,
        ),
      ),
      h("td", { "data-label": "URL" }, h("span", { class: "mono cell-ellipsis", title: endpoint.url }, endpoint.url)),
      h("td", { "data-label": "Status" }, badge(endpoint.status), " ", failingWarning(endpoint)),
      h("td", { "data-label": "Created" }, timeEl(endpoint.createdAt)),
    );
  }

  renderList() {
    const tbody = $("endpoint-rows");
    const focused = document.activeElement?.closest?.("#endpoint-rows tr")?.dataset.id;
    const rows = this.sorted().map((endpoint) => this.row(endpoint));
    fill(tbody, rows);
    if (focused) tbody.querySelector(`tr[data-id="${CSS.escape(focused)}"] button`)?.focus();
    $("endpoints-empty").hidden = rows.length > 0;
  }

  /** A live endpoint.* event. */
  applyEvent(name, data) {
    const endpoint = data && data.endpoint;
    if (!endpoint) return;
    if (name === "endpoint.deleted") {
      this.items.delete(endpoint.id);
      if (this.detailId === endpoint.id) {
        toast("This endpoint was deleted");
        this.navigate("endpoints");
      }
    } else {
      this.items.set(endpoint.id, endpoint);
      if (this.detailId === endpoint.id) {
        this.detail = endpoint;
        this.renderDetail();
      }
    }
    this.renderList();
    this.onChange();
  }

  /** A live attempt event: refresh what shows this endpoint's deliveries. */
  noteAttempt(data) {
    if (!data || data.endpointId !== this.detailId) return;
    this.refreshStatsSoon();
    if (this.history) this.history.noteActivity(data.messageId);
  }

  showList() {
    const wasInDetail = $("endpoint-detail-view").contains(document.activeElement);
    this.detailId = null;
    this.detail = null;
    $("endpoint-detail-view").hidden = true;
    $("endpoint-list-view").hidden = false;
    // Focus left in the hidden details would be lost: start again at the list's heading.
    if (wasInDetail || document.activeElement === document.body) $("endpoints-heading").focus();
  }

  async showDetail(id) {
    const changed = this.detailId !== id;
    this.detailId = id;
    $("endpoint-list-view").hidden = true;
    $("endpoint-detail-view").hidden = false;
    if (changed) {
      this.detail = this.items.get(id) || null;
      this.stats = null;
      this.history = null;
      fill($("history-list"));
      $("test-result").textContent = "";
      this.selectSubtab("sub-overview");
      this.renderDetail();
    }
    try {
      this.detail = await this.api.getEndpoint(id);
      if (this.detailId !== id) return;
      this.items.set(id, this.detail);
      this.renderDetail();
    } catch (error) {
      if (error.status === 404) {
        toast("That endpoint does not exist (any more)", "error");
        this.navigate("endpoints");
        return;
      }
      toast(`The endpoint could not be loaded: ${error.message}`, "error");
    }
    this.loadStats();
    if (!document.querySelector("dialog[open]")) $("endpoint-title").focus();
  }

  renderDetail() {
    const e = this.detail;
    if (!e) {
      $("endpoint-title").textContent = "Endpoint";
      return;
    }
    $("endpoint-title").textContent = endpointLabel(e);
    $("endpoint-url").textContent = e.url;
    const events = e.eventTypes && e.eventTypes.length
      ? h("ul", { class: "chips" }, e.eventTypes.map((t) => h("li", { class: "chip mono" }, t)))
      : h("span", {}, "All events");
    const status = h("span", {}, badge(e.status), e.disabledReason ? h("span", { class: "muted" }, ` ${e.disabledReason}`) : null, " ", failingWarning(e));
    const props = [
      ["Status", status],
      ["Events", events],
      ["Last delivery", this.lastDelivery(), "last"],
      ["URL", h("span", { class: "mono break" }, e.url)],
      ["Description", e.description || h("span", { class: "muted" }, "—")],
      ["Endpoint ID", h("span", { class: "mono" }, e.id)],
      ["Payload format", e.payloadFormat],
      ["Timeout", `${e.timeoutSeconds} s`],
      ["Retries", String(e.maxRetries)],
      ["Custom headers", headersList(e.headers)],
      [
        "Payload filter",
        e.filter ? h("pre", { class: "code" }, filterText(e.filter)) : h("span", { class: "muted" }, "None"),
        "filter",
      ],
      ...flowProps(e),
      ["Scope", e.scope],
      ["Created", timeEl(e.createdAt)],
      ["Updated", timeEl(e.updatedAt)],
      ...lifecycleProps(e),
    ];
    if (e.category) props.splice(5, 0, ["Category", e.category]);
    fill(
      $("endpoint-props"),
      props.map(([term, value, key]) =>
        h("div", { class: "prop", dataset: { prop: key } }, h("dt", {}, term), h("dd", {}, value)),
      ),
    );
    for (const [key, el] of Object.entries(this.statCells())) {
      el.textContent = this.stats ? String(this.stats[key] ?? 0) : "–";
    }
  }

  statCells() {
    const cells = {};
    for (const el of document.querySelectorAll("#endpoint-stats [data-stat]")) cells[el.dataset.stat] = el;
    return cells;
  }

  /** The "Last delivery" value: placeholders until the stats arrive, so nothing jumps. */
  lastDelivery() {
    const s = this.stats;
    return [
      timeEl(s && s.lastDeliveryAt),
      h("span", { class: "sub" }, "last success ", timeEl(s && s.lastSuccessAt)),
      h("span", { class: "sub" }, "last failure ", timeEl(s && s.lastFailureAt)),
    ];
  }

  async loadStats() {
    const id = this.detailId;
    if (!id) return;
    try {
      const stats = await this.api.endpointStats(id);
      if (this.detailId !== id) return;
      this.stats = stats;
      for (const [key, el] of Object.entries(this.statCells())) el.textContent = String(stats[key] ?? 0);
      const dd = $("endpoint-props").querySelector('[data-prop="last"] dd');
      if (dd) fill(dd, this.lastDelivery());
    } catch {
      // Stats are a nicety; the next live event tries again.
    }
  }

  selectSubtab(tabId) {
    selectTab(document.querySelector("#endpoint-detail-view .subtabs"), tabId);
    if (tabId === "sub-history" && this.detailId) {
      if (!this.history || this.history.fixedFilters.endpointId !== this.detailId) {
        this.history = new MessageList({
          container: $("history-list"),
          api: this.api,
          onOpen: this.openMessage,
          label: "Event history of this endpoint",
          fixedFilters: { endpointId: this.detailId },
          pageSize: 20,
        });
      }
      this.history.load();
    } else if (tabId === "sub-testing") {
      this.fillTestTypes();
    }
  }

  async fillTestTypes() {
    const select = $("test-event-type");
    if (!select.options.length) {
      try {
        const types = await this.eventTypes();
        fill(
          select,
          types.map((t) => h("option", { value: t.name }, t.name)),
        );
      } catch (error) {
        $("test-result").textContent = `Event types could not be loaded: ${error.message}`;
        return;
      }
    }
    this.showExample();
  }

  async showExample() {
    const types = await this.eventTypes();
    const chosen = types.find((t) => t.name === $("test-event-type").value);
    $("test-event-description").textContent = chosen ? chosen.description : "";
    $("test-example").textContent = chosen ? prettyJson(chosen.example) : "";
  }

  async sendTest() {
    const button = $("test-send");
    const result = $("test-result");
    const eventType = $("test-event-type").value;
    if (!eventType || !this.detailId) return;
    button.disabled = true;
    result.textContent = "Sending…";
    try {
      const message = await this.api.sendTest(this.detailId, eventType);
      fill(
        result,
        "Example sent as message ",
        h("button", { type: "button", class: "link mono", onclick: () => this.openMessage(message.id) }, message.id),
        ". Its delivery attempt appears in the message and in the event history.",
      );
    } catch (error) {
      result.textContent = `The example could not be sent: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }

  // ---- add / edit ----------------------------------------------------------------------

  async openEditor(endpoint) {
    this.editing = endpoint;
    const form = $("endpoint-form");
    form.reset();
    $("endpoint-form-error").textContent = "";
    this.showFilterError("");
    $("endpoint-dialog-title").textContent = endpoint ? "Edit endpoint" : "Add endpoint";
    $("endpoint-submit").textContent = endpoint ? "Save" : "Create";
    $("endpoint-status-field").hidden = !endpoint;
    await this.renderEventChoices(endpoint ? endpoint.eventTypes || [] : []);
    if (endpoint) {
      $("endpoint-name").value = endpoint.name || "";
      $("endpoint-url-input").value = endpoint.url || "";
      $("endpoint-description").value = endpoint.description || "";
      $("endpoint-status").value = endpoint.status === "active" ? "active" : "disabled";
      $("endpoint-filter").value = filterText(endpoint.filter);
      $("endpoint-ordering").value = endpoint.ordering || "none";
      $("endpoint-rate-limit").value = endpoint.rateLimit == null ? "" : String(endpoint.rateLimit);
    }
    this.headersEditor.load(endpoint ? endpoint.headers : {});
    fillLifecycleFields(endpoint);
    openDialog($("endpoint-dialog"), $("endpoint-name"));
  }

  async renderEventChoices(selected) {
    let types = [];
    try {
      types = await this.eventTypes();
    } catch {
      types = [];
    }
    const root = this.me.role === "root";
    const offered = types.filter((t) => !t.accountLevel || root);
    const names = new Set(offered.map((t) => t.name));
    const groups = new Map();
    for (const t of offered) {
      if (!groups.has(t.category)) groups.set(t.category, []);
      groups.get(t.category).push(t);
    }
    const chosen = new Set(selected);
    fill(
      $("event-choices"),
      [...groups.entries()].map(([category, list]) =>
        h(
          "div",
          { class: "event-group", role: "group", "aria-label": `${category} events` },
          h("div", { class: "event-group-title" }, category),
          list.map((t) =>
            h(
              "label",
              { class: "check", title: t.description },
              h("input", { type: "checkbox", name: "eventType", value: t.name, checked: chosen.has(t.name) }),
              h("span", { class: "mono" }, t.name),
            ),
          ),
        ),
      ),
    );
    $("endpoint-other-events").value = selected.filter((n) => !names.has(n)).join(", ");
    const mode = selected.length ? "some" : "all";
    document.querySelector(`input[name="eventsMode"][value="${mode}"]`).checked = true;
    this.syncEventsMode();
  }

  syncEventsMode() {
    const some = document.querySelector('input[name="eventsMode"][value="some"]').checked;
    $("event-choices").hidden = !some;
    $("other-events-field").hidden = !some;
  }

  chosenEventTypes() {
    const some = document.querySelector('input[name="eventsMode"][value="some"]').checked;
    if (!some) return [];
    const checked = [...document.querySelectorAll('#event-choices input[name="eventType"]:checked')].map(
      (el) => el.value,
    );
    const other = $("endpoint-other-events")
      .value.split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    return [...new Set([...checked, ...other])];
  }

  async submitEditor() {
    const error = $("endpoint-form-error");
    const url = $("endpoint-url-input").value.trim();
    const name = $("endpoint-name").value.trim();
    const description = $("endpoint-description").value.trim();
    const eventTypes = this.chosenEventTypes();
    const filter = readFilter($("endpoint-filter").value);
    const flow = flowFields();
    error.textContent = "";
    this.showFilterError(filter.error || "");
    if (!url) {
      error.textContent = "Enter the URL that should receive the webhooks.";
      $("endpoint-url-input").focus();
      return;
    }
    if (document.querySelector('input[name="eventsMode"][value="some"]').checked && !eventTypes.length) {
      error.textContent = "Choose at least one event, or All events.";
      return;
    }
    const { headers, error: headersError } = this.headersEditor.collect();
    if (headersError) {
      error.textContent = headersError;
      return;
    }
    if (filter.error) {
      $("endpoint-filter").focus();
      return;
    }
    if (flow.error) {
      error.textContent = flow.error;
      $("endpoint-rate-limit").focus();
      return;
    }
    const submit = $("endpoint-submit");
    submit.disabled = true;
    try {
      if (this.editing) {
        const updated = await this.api.updateEndpoint(this.editing.id, {
          name: name || null,
          url,
          description: description || null,
          eventTypes,
          status: $("endpoint-status").value,
          headers,
          filter: filter.value,
          ...lifecycleBody(this.editing),
          ...flow.values,
        });
        this.items.set(updated.id, updated);
        if (this.detailId === updated.id) {
          this.detail = updated;
          this.renderDetail();
        }
        $("endpoint-dialog").close();
        toast("Endpoint saved");
      } else {
        const body = { url, eventTypes, ...lifecycleBody(null), ...flow.values };
        if (name) body.name = name;
        if (description) body.description = description;
        if (Object.keys(headers).length) body.headers = headers;
        if (filter.value) body.filter = filter.value;
        const created = await this.api.createEndpoint(body);
        const { secret, ...endpoint } = created;
        this.items.set(endpoint.id, endpoint);
        $("endpoint-dialog").close();
        this.navigate(`endpoints/${endpoint.id}`);
        if (secret) {
          showSecret(
            secret,
            "Endpoint created. Copy its signing secret now: it is shown only once. Your receiver uses it to verify each webhook's signature.",
            $("endpoint-title"),
          );
        }
      }
      this.renderList();
      this.onChange();
    } catch (err) {
      if (isFilterError(err.message)) {
        this.showFilterError(err.message);
        $("endpoint-filter").focus();
      } else {
        error.textContent = err.message;
      }
    } finally {
      submit.disabled = false;
    }
  }

  showFilterError(message) {
    $("endpoint-filter-error").textContent = message;
    if (message) $("endpoint-filter").setAttribute("aria-invalid", "true");
    else $("endpoint-filter").removeAttribute("aria-invalid");
  }

  // ---- delete / rotate -----------------------------------------------------------------

  confirmDelete() {
    const e = this.detail;
    if (!e) return;
    confirmAction({
      title: "Delete endpoint?",
      text: `“${endpointLabel(e)}” (${e.url}) stops receiving webhooks and its pending deliveries are cancelled. Its delivery history is kept.`,
      confirmLabel: "Delete endpoint",
      action: async () => {
        await this.api.deleteEndpoint(e.id);
        this.items.delete(e.id);
        this.renderList();
        this.onChange();
      },
    }).then((done) => {
      if (done) {
        toast("Endpoint deleted");
        this.navigate("endpoints");
      }
    });
  }

  confirmRotate() {
    const e = this.detail;
    if (!e) return;
    let secret = null;
    confirmAction({
      title: "Rotate signing secret?",
      text: "A new secret signs every webhook from now on. The current one keeps signing alongside it for 24 hours, so that you can update your receiver.",
      confirmLabel: "Rotate secret",
      action: async () => {
        secret = (await this.api.rotateSecret(e.id)).secret;
      },
    }).then((done) => {
      if (done && secret) {
        showSecret(
          secret,
          "New signing secret. Copy it now: it is shown only once. The previous secret keeps working for 24 hours.",
          $("endpoint-rotate"),
        );
      }
    });
  }
}

// ---- ordering and rate limit (docs/api.md §11.3, §11.6) ---------------------------------

const ORDERING_LABELS = {
  none: "Any order",
  resource: "Each resource's events one at a time, in order",
};

/** The details' rows for an endpoint's ordering and rate limit. */
function flowProps(e) {
  return [
    ["Delivery order", ORDERING_LABELS[e.ordering] || e.ordering],
    ["Rate limit", e.rateLimit == null ? "No limit" : `${e.rateLimit} attempts per second`],
  ];
}

/** The form's ordering and rate limit as the API takes them, or an error to show. */
function flowFields() {
  const raw = $("endpoint-rate-limit").value.trim();
  const rate = raw === "" ? null : Number(raw);
  if (rate !== null && !(Number.isInteger(rate) && rate >= 1 && rate <= 10000)) {
    return { error: "Rate limit must be a whole number of attempts per second from 1 to 10,000, or empty." };
  }
  return { values: { ordering: $("endpoint-ordering").value, rateLimit: rate } };
}
