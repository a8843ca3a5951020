// The dashboard's calls to the organization service (/api/webhooks, docs/api.md §6.2).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  /** @param {string} key an API key (or JWT), sent as X-API-Key */
  constructor(key) {
    this.key = key;
    this.organizationId = null;
    this.onUnauthorized = null;
    this.closed = false;
  }

  /** Forget the key: a view left over from before sign-out can send nothing more. */
  close() {
    this.closed = true;
    this.key = null;
    this.onUnauthorized = null;
  }

  async request(method, path, body) {
    if (this.closed) throw new ApiError(0, "Signed out");
    const headers = { Accept: "application/json", "X-API-Key": this.key };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, "The service cannot be reached. Check your connection and try again.");
    }
    if (response.status === 204) return null;
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const message =
        (data && (data.message || data.error)) || `The request failed (HTTP ${response.status}).`;
      const error = new ApiError(response.status, message);
      if (response.status === 401 && this.onUnauthorized) this.onUnauthorized(error);
      throw error;
    }
    return data;
  }

  org(path = "") {
    return `/api/webhooks/organizations/${encodeURIComponent(this.organizationId)}${path}`;
  }

  me() {
    return this.request("GET", "/api/webhooks/me");
  }

  eventTypes() {
    return this.request("GET", "/api/webhooks/event-types");
  }

  listEndpoints() {
    return this.request("GET", this.org("/endpoints"));
  }

  getEndpoint(id) {
    return this.request("GET", this.org(`/endpoints/${encodeURIComponent(id)}`));
  }

  createEndpoint(body) {
    return this.request("POST", this.org("/endpoints"), body);
  }

  updateEndpoint(id, body) {
    return this.request("PATCH", this.org(`/endpoints/${encodeURIComponent(id)}`), body);
  }

  deleteEndpoint(id) {
    return this.request("DELETE", this.org(`/endpoints/${encodeURIComponent(id)}`));
  }

  rotateSecret(id) {
    return this.request("POST", this.org(`/endpoints/${encodeURIComponent(id)}/rotate-secret`));
  }

  endpointStats(id) {
    return this.request("GET", this.org(`/endpoints/${encodeURIComponent(id)}/stats`));
  }

  sendTest(id, eventType) {
    return this.request("POST", this.org(`/endpoints/${encodeURIComponent(id)}/test`), {
      eventType,
    });
  }

  /** @param {object} query eventType, endpointId, status, before, after, limit, cursor */
  listMessages(query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
    }
    const qs = params.toString();
    return this.request("GET", this.org(`/messages${qs ? `?${qs}` : ""}`));
  }

  getMessage(id) {
    return this.request("GET", this.org(`/messages/${encodeURIComponent(id)}`));
  }

  messageAttempts(id) {
    return this.request("GET", this.org(`/messages/${encodeURIComponent(id)}/attempts`));
  }

  resend(messageId, endpointId) {
    return this.request(
      "POST",
      this.org(
        `/messages/${encodeURIComponent(messageId)}/endpoints/${encodeURIComponent(endpointId)}/resend`,
      ),
    );
  }
}
