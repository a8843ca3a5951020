// A minimal Socket.IO v4 client over a WebSocket (Engine.IO protocol 4), written for this
// dashboard so that no third-party file is served. It does what the dashboard needs:
// connect with an auth object, answer the server's pings, receive events, reconnect with
// backoff. No polling transport, no acknowledgements, no binary packets, default
// namespace only.
//
// Engine.IO 4 packets are text frames whose first character is the type:
//   0 open (JSON handshake), 1 close, 2 ping, 3 pong, 4 message, 6 noop.
// A message carries a Socket.IO packet, again typed by its first character:
//   0 CONNECT (client sends the auth object; the server answers with {sid}),
//   1 DISCONNECT, 2 EVENT (["name", data]), 4 CONNECT_ERROR ({message}).

const EIO_OPEN = "0";
const EIO_CLOSE = "1";
const EIO_PING = "2";
const EIO_PONG = "3";
const EIO_MESSAGE = "4";
const SIO_CONNECT = "0";
const SIO_DISCONNECT = "1";
const SIO_EVENT = "2";
const SIO_CONNECT_ERROR = "4";

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30000;

/** Parse the payload of a Socket.IO EVENT packet: optional "/nsp," and ack id, then JSON. */
export function parseEventPacket(text) {
  let rest = text;
  if (rest.startsWith("/")) {
    const comma = rest.indexOf(",");
    if (comma === -1) return null;
    rest = rest.slice(comma + 1);
  }
  let i = 0;
  while (i < rest.length && rest[i] >= "0" && rest[i] <= "9") i += 1;
  rest = rest.slice(i);
  try {
    const args = JSON.parse(rest);
    if (!Array.isArray(args) || typeof args[0] !== "string") return null;
    return { name: args[0], data: args[1] };
  } catch {
    return null;
  }
}

export class LiveSocket {
  /**
   * @param {object} options
   * @param {string} options.path       the server's Socket.IO path, e.g. "/api/webhook-socket.io"
   * @param {object} options.auth       sent in the CONNECT packet, e.g. {apiKey}
   * @param {(name: string, data: object) => void} options.onEvent
   * @param {(state: string, detail?: string) => void} options.onState
   *        states: "connecting", "live", "reconnecting", "refused", "closed"
   */
  constructor({ path, auth, onEvent, onState }) {
    this.path = path.replace(/\/+$/, "");
    this.auth = auth;
    this.onEvent = onEvent;
    this.onState = onState;
    this.ws = null;
    this.stopped = false;
    this.backoff = MIN_BACKOFF_MS;
    this.retryTimer = null;
    this.watchdog = null;
    this.heartbeatMs = 45000;
    this.everConnected = false;
  }

  url() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${window.location.host}${this.path}/?EIO=4&transport=websocket`;
  }

  connect() {
    this.stopped = false;
    this.onState(this.everConnected ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onmessage = (event) => this.handleFrame(ws, String(event.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearWatchdog();
      if (!this.stopped) this.scheduleReconnect();
    };
    ws.onerror = () => {
      // onclose follows and decides what to do.
    };
  }

  handleFrame(ws, frame) {
    const type = frame[0];
    const body = frame.slice(1);
    if (type === EIO_OPEN) {
      try {
        const handshake = JSON.parse(body);
        this.heartbeatMs = (handshake.pingInterval || 25000) + (handshake.pingTimeout || 20000);
      } catch {
        // keep the default heartbeat
      }
      this.armWatchdog();
      ws.send(EIO_MESSAGE + SIO_CONNECT + JSON.stringify(this.auth));
    } else if (type === EIO_PING) {
      this.armWatchdog();
      ws.send(EIO_PONG + body);
    } else if (type === EIO_CLOSE) {
      ws.close();
    } else if (type === EIO_MESSAGE) {
      this.handlePacket(ws, body);
    }
  }

  handlePacket(ws, packet) {
    const type = packet[0];
    const body = packet.slice(1);
    if (type === SIO_CONNECT) {
      this.backoff = MIN_BACKOFF_MS;
      const again = this.everConnected;
      this.everConnected = true;
      this.onState("live", again ? "reconnected" : "connected");
    } else if (type === SIO_CONNECT_ERROR) {
      let message = "Connection refused";
      try {
        message = JSON.parse(body).message || message;
      } catch {
        // keep the generic text
      }
      // A refused credential does not get better by retrying.
      this.stopped = true;
      this.clearWatchdog();
      ws.close();
      this.onState("refused", message);
    } else if (type === SIO_EVENT) {
      const event = parseEventPacket(body);
      if (event) {
        try {
          this.onEvent(event.name, event.data);
        } catch (error) {
          console.error("live event handler failed", error);
        }
      }
    } else if (type === SIO_DISCONNECT) {
      ws.close();
    }
  }

  armWatchdog() {
    this.clearWatchdog();
    // No ping within interval + timeout: the connection is dead even if TCP says otherwise.
    this.watchdog = window.setTimeout(() => {
      if (this.ws) this.ws.close();
    }, this.heartbeatMs + 1000);
  }

  clearWatchdog() {
    if (this.watchdog) window.clearTimeout(this.watchdog);
    this.watchdog = null;
  }

  scheduleReconnect() {
    if (this.stopped || this.retryTimer) return;
    this.onState("reconnecting");
    const delay = this.backoff * (0.8 + Math.random() * 0.4);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.retryTimer = window.setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  close() {
    this.stopped = true;
    this.clearWatchdog();
    if (this.retryTimer) window.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
    this.onState("closed");
  }
}
