// The dashboard: sign-in, the two tabs, routing by URL hash, and the live socket that
// turns delivery and endpoint events into targeted refreshes.

import { Api } from "./api.js";
import { EndpointsView } from "./endpoints.js";
import { MessageDialog, MessageList } from "./messages.js";
import { LiveSocket } from "./socket.js";
import { fill, h, localInputToIso, selectTab, setupTablist, toast, wireDialogs } from "./ui.js";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "webhooks.apiKey";
const SOCKET_PATH = "/api/webhook-socket.io";

const LIVE_TEXT = {
  connecting: "Connecting",
  live: "Live",
  reconnecting: "Reconnecting",
  refused: "Live updates off",
  closed: "Offline",
};

class Dashboard {
  constructor() {
    this.api = null;
    this.me = null;
    this.socket = null;
    this.endpoints = null;
    this.messages = null;
    this.dialog = null;
    this.eventTypesPromise = null;
    this.session = null; // an AbortController per sign-in, for the views' listeners
    wireDialogs();
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn($("api-key").value.trim());
    });
    $("sign-out").addEventListener("click", () => this.signOut());
    setupTablist(document.querySelector("#app-view > .tabs"), (tabId) =>
      this.navigate(tabId === "tab-messages" ? "messages" : "endpoints"),
    );
    $("message-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      this.applyFilters();
    });
    $("message-filters").addEventListener("reset", () => {
      // After the browser cleared the fields.
      window.setTimeout(() => this.applyFilters(), 0);
    });
    for (const id of ["filter-endpoint", "filter-status"]) {
      $(id).addEventListener("change", () => this.applyFilters());
    }
    window.addEventListener("hashchange", () => this.route());
  }

  async start() {
    const saved = window.sessionStorage.getItem(KEY_STORAGE);
    if (saved) await this.signIn(saved, { restoring: true });
    else this.showSignIn();
  }

  showSignIn(message = "") {
    $("app-view").hidden = true;
    $("session").hidden = true;
    $("sign-in-view").hidden = false;
    $("sign-in-error").textContent = message;
    $("api-key").setAttribute("aria-invalid", String(Boolean(message)));
    $("api-key").focus();
  }

  async signIn(key, { restoring = false } = {}) {
    const error = $("sign-in-error");
    if (!key) {
      error.textContent = "Enter an API key.";
      $("api-key").setAttribute("aria-invalid", "true");
      $("api-key").focus();
      return;
    }
    const submit = $("sign-in-submit");
    submit.disabled = true;
    error.textContent = "";
    const api = new Api(key);
    try {
      this.me = await api.me();
    } catch (err) {
      submit.disabled = false;
      window.sessionStorage.removeItem(KEY_STORAGE);
      if (err.status === 401 || err.status === 403) {
        this.showSignIn(
          restoring
            ? "Your saved API key is no longer accepted. Sign in again."
            : "That API key was not accepted. Check that you copied all of it and that it has not been revoked.",
        );
      } else {
        this.showSignIn(`Signing in failed: ${err.message}`);
      }
      return;
    }
    submit.disabled = false;
    window.sessionStorage.setItem(KEY_STORAGE, key);
    $("api-key").value = "";
    api.organizationId = this.me.organizationId;
    api.onUnauthorized = () => this.signOut("Your API key is no longer accepted. Sign in again.");
    this.api = api;
    this.enterApp();
  }

  signOut(message = "") {
    window.sessionStorage.removeItem(KEY_STORAGE);
    if (this.socket) this.socket.close();
    this.socket = null;
    if (this.session) this.session.abort();
    this.session = null;
    if (this.api) this.api.close();
    this.api = null;
    this.me = null;
    this.eventTypesPromise = null;
    for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
    fill($("endpoint-rows"));
    fill($("messages-list"));
    fill($("history-list"));
    fill($("test-event-type"));
    if (window.location.hash) history.replaceState(null, "", window.location.pathname);
    this.showSignIn(message);
    if (!message) toast("Signed out");
  }

  eventTypes() {
    if (!this.eventTypesPromise) {
      this.eventTypesPromise = this.api.eventTypes().then((body) => body.items || []);
      this.eventTypesPromise.catch(() => {
        this.eventTypesPromise = null;
      });
    }
    return this.eventTypesPromise;
  }

  enterApp() {
    $("sign-in-view").hidden = true;
    $("app-view").hidden = false;
    $("session").hidden = false;
    fill(
      $("who"),
      h("span", { class: "mono", title: "Organization" }, this.me.organizationId),
      h("span", { class: "role" }, this.me.role),
    );
    this.session = new AbortController();
    const signal = this.session.signal;
    this.dialog = new MessageDialog({
      api: this.api,
      endpoints: () => this.endpoints.items,
      signal,
    });
    this.endpoints = new EndpointsView({
      signal,
      api: this.api,
      me: this.me,
      eventTypes: () => this.eventTypes(),
      openMessage: (id) => this.dialog.open(id),
      navigate: (route) => this.navigate(route),
      onChange: () => this.fillEndpointFilter(),
    });
    this.messages = new MessageList({
      container: $("messages-list"),
      api: this.api,
      onOpen: (id) => this.dialog.open(id),
      label: "Messages",
    });
    this.eventTypes()
      .then((types) => fill($("event-type-names"), types.map((t) => h("option", { value: t.name }))))
      .catch(() => {});
    this.endpoints.load();
    this.connectSocket();
    this.route();
  }

  connectSocket() {
    const key = this.api.key;
    this.socket = new LiveSocket({
      path: SOCKET_PATH,
      auth: key.split(".").length === 3 ? { token: key } : { apiKey: key },
      onEvent: (name, data) => this.onLiveEvent(name, data),
      onState: (state, detail) => this.onLiveState(state, detail),
    });
    this.socket.connect();
  }

  onLiveState(state, detail) {
    const el = $("live-status");
    el.dataset.state = state;
    $("live-text").textContent = LIVE_TEXT[state] || state;
    el.title = state === "refused" && detail ? detail : "";
    if (state === "live" && detail === "reconnected") {
      // Events sent while the socket was away are gone: catch up from the API.
      this.endpoints.load();
      if (this.messages.loaded && this.messages.onFirstPage) this.messages.load({ live: true });
      if (this.dialog.messageId) this.dialog.refresh(true);
    }
  }

  onLiveEvent(name, data) {
    if (name === "webhook.delivered" || name === "webhook.failed") {
      this.messages.noteActivity(data.messageId);
      this.dialog.noteActivity(data);
      this.endpoints.noteAttempt(data);
    } else if (name.startsWith("endpoint.")) {
      this.endpoints.applyEvent(name, data);
    }
  }

  fillEndpointFilter() {
    const select = $("filter-endpoint");
    const current = select.value;
    const options = [h("option", { value: "" }, "Any")];
    for (const endpoint of this.endpoints.sorted()) {
      const label = endpoint.name || endpoint.description || endpoint.url;
      options.push(h("option", { value: endpoint.id }, label));
    }
    fill(select, options);
    select.value = current;
    if (select.value !== current) select.value = "";
  }

  applyFilters() {
    this.messages.setFilters({
      eventType: $("filter-event-type").value.trim(),
      endpointId: $("filter-endpoint").value,
      status: $("filter-status").value,
      after: localInputToIso($("filter-after").value),
      before: localInputToIso($("filter-before").value),
    });
  }

  navigate(route) {
    const hash = `#${route}`;
    if (window.location.hash === hash) this.route();
    else window.location.hash = hash;
  }

  /** #endpoints, #endpoints/<id>, #messages */
  route() {
    if (!this.api) return;
    const [section, id] = window.location.hash.replace(/^#\/?/, "").split("/");
    const tablist = document.querySelector("#app-view > .tabs");
    if (section === "messages") {
      selectTab(tablist, "tab-messages");
      if (!this.messages.loaded) this.applyFilters();
    } else {
      selectTab(tablist, "tab-endpoints");
      if (id) this.endpoints.showDetail(decodeURIComponent(id));
      else this.endpoints.showList();
    }
  }
}

const dashboard = new Dashboard();
dashboard.start();
