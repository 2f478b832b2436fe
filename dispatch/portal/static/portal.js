// octo-worker portal: follows an operation's log (the NDJSON stream of the API's follow route) and copies
// text. Everything is written with textContent: nothing from the server is ever parsed as HTML.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("button[data-copy]")) {
    b.addEventListener("click", () => {
      const el = document.getElementById(b.dataset.copy);
      if (el && navigator.clipboard) navigator.clipboard.writeText(el.textContent).then(() => { b.textContent = "Copied"; });
    });
  }
  const log = document.getElementById("log");
  if (log && log.dataset.src) follow(log, log.dataset.src);
});

// follow reads the log stream after the last position it has, appends each line, and on the end record
// shows the operation's final state. A stream cut short (server restart, network) is read again from there.
async function follow(log, src) {
  const status = document.getElementById("log-status");
  let after = 0;
  for (let attempt = 0; ; attempt++) {
    try {
      const resp = await fetch(src + "?follow=true&after=" + after, { credentials: "same-origin", cache: "no-store" });
      if (resp.status === 401) { status.textContent = "Logged out: reload the page to log in again."; return; }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      status.textContent = "Following the log…";
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const rec = JSON.parse(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          if (rec.line) {
            const span = document.createElement("span");
            span.className = rec.line.stream;
            span.dataset.pos = rec.line.pos;
            span.textContent = rec.line.text + "\n";
            const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
            log.appendChild(span);
            if (atEnd) log.scrollTop = log.scrollHeight;
            after = rec.line.pos;
          } else if (rec.end) {
            ended(rec.end);
            status.textContent = "The operation ended.";
            return;
          }
        }
      }
      attempt = 0;
    } catch (e) {
      status.textContent = "The log stream broke (" + e.message + "); retrying…";
    }
    await new Promise((r) => setTimeout(r, Math.min(1000 * (attempt + 1), 10000)));
  }
}

function ended(end) {
  const state = document.getElementById("state");
  if (state) { state.textContent = end.state; state.className = "state " + end.state; }
  const form = document.getElementById("cancel-form");
  if (form) form.remove();
}
