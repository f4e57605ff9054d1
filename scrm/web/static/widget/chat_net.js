// The chat's connection: a WebSocket with reconnect and backoff; long polling where WebSockets are blocked.
// Messages are sent with a client id and re-sent until acknowledged: the server stores each once.

const MAX_BACKOFF = 30000;

export class Connection {
  /** handlers: {frame(data), status(state), lastId(), shownIds(), expired(), refused()} */
  constructor(base, headers, handlers) {
    this.base = base; // "/chat/3"
    this.headers = headers; // () => ({"X-Scrm-Visitor": token}) or {}
    this.h = handlers;
    this.sock = null;
    this.mode = "ws";
    this.failures = 0;
    this.attempt = 0;
    this.unacked = new Map(); // client_id -> frame
    this.stopped = false;
    this.timer = null;
    this.cursor = null; // long polling: what this client was shown, as the server's last answer put it
  }

  start() {
    if (!("WebSocket" in window) || typeof WebSocket !== "function") this.mode = "poll";
    this.mode === "ws" ? this.openSocket() : this.pollLoop();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.sock) this.sock.close(1000);
  }

  openSocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let opened = false;
    let sock;
    try {
      sock = new WebSocket(`${scheme}//${location.host}${this.base}/ws`);
    } catch {
      this.fallBack();
      return;
    }
    this.sock = sock;
    this.h.status("connecting");
    sock.onopen = () => {
      opened = true;
      this.failures = 0;
      this.attempt = 0;
      const token = this.headers()["X-Scrm-Visitor"];
      sock.send(JSON.stringify({ type: "auth", token: token || undefined, after: this.h.lastId(), shown: this.h.shownIds() }));
    };
    sock.onmessage = (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch { return; }
      if (data.type === "hello") {
        this.h.status("live");
        for (const frame of this.unacked.values()) sock.send(JSON.stringify(frame)); // resend after a reconnect
      } else if (data.type === "ack") {
        this.unacked.delete(data.client_id);
      } else if (data.type === "error" && data.client_id) {
        this.unacked.delete(data.client_id);
      }
      this.h.frame(data);
    };
    sock.onclose = (e) => {
      if (this.sock !== sock || this.stopped) return;
      this.sock = null;
      if (e.code === 4401) return this.h.expired();
      if (e.code === 4403) return this.h.refused();
      if (!opened && ++this.failures >= 2) return this.fallBack(); // blocked by a proxy or firewall
      this.h.status("reconnecting");
      this.retry(() => this.openSocket());
    };
  }

  retry(fn) {
    const delay = Math.min(MAX_BACKOFF, 1000 * 2 ** this.attempt++) * (0.75 + Math.random() / 2);
    clearTimeout(this.timer);
    this.timer = setTimeout(fn, delay);
  }

  fallBack() {
    this.mode = "poll";
    this.h.status("polling");
    this.pollLoop();
    for (const frame of this.unacked.values()) this.postMessage(frame);
  }

  async pollLoop() {
    while (!this.stopped && this.mode === "poll") {
      try {
        const where = `cursor=${encodeURIComponent(this.cursor || [this.h.lastId(), ...this.h.shownIds()].join("."))}`;
        const r = await fetch(`${this.base}/poll?${where}`, { headers: this.headers(), credentials: "same-origin" });
        if (r.status === 401) return this.h.expired();
        if (r.status === 403) return this.h.refused();
        if (!r.ok) throw new Error("HTTP " + r.status);
        const data = await r.json();
        if (data.cursor) this.cursor = data.cursor;
        this.attempt = 0;
        this.h.status("polling");
        this.h.frame({ type: "messages", items: data.messages || [] });
        if (data.conversation) this.h.frame({ type: "conversation", conversation: data.conversation });
      } catch {
        this.h.status("reconnecting");
        await new Promise((ok) => this.retry(ok));
      }
    }
  }

  /** Send a message frame {type: "message", client_id, ...}; kept until the server acknowledges it. */
  sendMessage(frame) {
    this.unacked.set(frame.client_id, frame);
    if (this.mode === "ws") {
      if (this.sock && this.sock.readyState === 1) this.sock.send(JSON.stringify(frame));
      return;
    }
    this.postMessage(frame);
  }

  async postMessage(frame, attempt = 0) {
    try {
      const r = await fetch(`${this.base}/messages`, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", ...this.headers() }, body: JSON.stringify(frame),
      });
      const data = await r.json().catch(() => ({}));
      if (r.ok) {
        this.unacked.delete(frame.client_id);
        this.h.frame({ type: "ack", ...data });
      } else if (r.status >= 500 || r.status === 429) {
        throw new Error("retry");
      } else {
        this.unacked.delete(frame.client_id);
        this.h.frame({ type: "error", client_id: frame.client_id, code: data.error?.code, message: data.error?.message, status: r.status });
      }
    } catch {
      if (this.unacked.has(frame.client_id) && attempt < 8) {
        setTimeout(() => this.postMessage(frame, attempt + 1), Math.min(MAX_BACKOFF, 1000 * 2 ** attempt));
      }
    }
  }

  /** A passing signal (typing, read receipt): over the socket, or HTTP for read receipts when polling. */
  signal(frame) {
    if (this.sock && this.sock.readyState === 1) {
      this.sock.send(JSON.stringify(frame));
    } else if (frame.type === "read") {
      fetch(`${this.base}/read`, { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", ...this.headers() }, body: JSON.stringify({ upto: frame.upto }) }).catch(() => {});
    }
  }
}
