// Clarion console: progressive enhancement only. Every page works without
// this script; it adds what needs it (no framework, no build step).
"use strict";

// Elements with data-refresh-url="<url>" and data-refresh-ms="<ms>" have
// their content replaced by the HTML fragment at the URL, periodically (the
// live page). Screen readers hear changes through aria-live on the element.
function startRefresh(el) {
  const url = el.dataset.refreshUrl;
  const ms = Math.max(500, parseInt(el.dataset.refreshMs || "2000", 10));
  async function tick() {
    try {
      const res = await fetch(url, { credentials: "same-origin", headers: { "accept": "text/html" } });
      if (res.ok) {
        el.innerHTML = await res.text();
        el.dataset.refreshedAt = String(Date.now());
      } else if (res.status === 401 || res.redirected) {
        return; // session over: stop; a reload goes to sign-in
      }
    } catch (e) { /* the next tick tries again */ }
    setTimeout(tick, ms);
  }
  setTimeout(tick, ms);
}

// Forms with data-preview-url="<url>" and data-preview-target="<id>" post
// their fields (CSRF token included) on input, debounced, and show the HTML
// answer in the target (the template preview).
function startPreview(form) {
  const target = document.getElementById(form.dataset.previewTarget);
  let timer = null;
  async function render() {
    const body = new URLSearchParams(new FormData(form));
    try {
      const res = await fetch(form.dataset.previewUrl, {
        method: "POST", credentials: "same-origin", body,
        headers: { "content-type": "application/x-www-form-urlencoded" },
      });
      target.innerHTML = await res.text();
    } catch (e) { /* keep the last preview */ }
  }
  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(render, 250); });
}

// Buttons with data-confirm="<question>" ask before their form is sent.
function confirmSubmit(btn) {
  btn.addEventListener("click", (ev) => {
    if (!window.confirm(btn.dataset.confirm)) ev.preventDefault();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh-url]").forEach(startRefresh);
  document.querySelectorAll("form[data-preview-url]").forEach(startPreview);
  document.querySelectorAll("[data-confirm]").forEach(confirmSubmit);
});
