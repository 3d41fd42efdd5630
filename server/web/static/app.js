// Yard now and the wall: fetch the server-rendered part every few seconds and swap it in,
// so the page stays current without a reload. No library: a phone on a slow link
// downloads this file once.
(function () {
  "use strict";
  var box = document.getElementById("now");
  var offline = document.getElementById("offline");
  if (!box) { return; }
  var source = box.getAttribute("data-source");
  var every = Math.max(2, Number(box.getAttribute("data-every")) || 5) * 1000;
  var busy = false;
  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(source, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          // The session ended: log in again and come back here.
          window.location.href = "/login?next=" + encodeURIComponent(
            window.location.pathname + window.location.search);
          return null;
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        box.innerHTML = html;
        box.setAttribute("data-refreshed", String(Date.now()));
        offline.hidden = true;
      })
      .catch(function () { offline.hidden = false; })
      .then(function () { busy = false; });
  }
  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
  // A wall screen left on for weeks: reload the whole page twice a day, in case.
  if (document.body.classList.contains("wall")) {
    setTimeout(function () { window.location.reload(); }, 12 * 3600 * 1000);
  }
})();
