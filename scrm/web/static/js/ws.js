// One WebSocket per tab with reconnect + backoff; after a reconnect the app refetches what it shows.
import { emit } from "./state.js";

export class LiveSocket {
  constructor() {
    this.ws = null;
    this.attempt = 0;
    this.connectedOnce = false;
    this.stopped = false;
    this.timer = null;
    this.status = "connecting";
  }

  start() {
    this.stopped = false;
    this.open();
    window.addEventListener("online", () => this.kick());
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }

  /** Reconnect now (browser came back online). */
  kick() {
    if (this.stopped || (this.ws && this.ws.readyState <= 1)) return;
    clearTimeout(this.timer);
    this.open();
  }

  setStatus(status) {
    this.status = status;
    emit("live-status", status);
  }

  open() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/ws`);
    this.ws = ws;
    this.setStatus(this.connectedOnce ? "reconnecting" : "connecting");
    ws.onmessage = (msg) => {
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (frame.type === "hello") {
        const resumed = this.connectedOnce;
        this.connectedOnce = true;
        this.attempt = 0;
        this.setStatus("live");
        if (resumed) emit("live-resync"); // catch up on what happened while we were away
      } else if (frame.type === "event") {
        emit("live-event", frame);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      if (ev.code === 4401) {
        emit("session-expired");
        return;
      }
      this.setStatus("reconnecting");
      // Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... at most 15 s.
      const delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
      this.attempt += 1;
      this.timer = setTimeout(() => this.open(), delay);
    };
    ws.onerror = () => {}; // onclose follows and schedules the retry
  }

  send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }
}

export const live = new LiveSocket();
