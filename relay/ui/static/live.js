// Live updates for the relay's status page. The page works without this
// script; with it, the regions marked data-live-region are refreshed from
// the server whenever the relay announces a status event for what the page
// shows (an EventSource on the page's own /ui/events), and every 30 s so
// that times and uptime move on. Forms are never replaced, so nothing an
// admin is typing is lost.
(function () {
  "use strict";
  var stream = document.body.getAttribute("data-live");
  var state = document.getElementById("live-state");
  if (!stream || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var pending = null;
  var inflight = false;

  function say(text) {
    if (state) {
      state.textContent = text;
    }
  }

  function refresh() {
    pending = null;
    if (inflight) {
      schedule(250);
      return;
    }
    inflight = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (resp) {
        if (resp.redirected || resp.status === 401) {
          window.location.reload(); // signed out: show the sign-in page
          return null;
        }
        return resp.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var regions = document.querySelectorAll("[data-live-region]");
        for (var i = 0; i < regions.length; i++) {
          var fresh = doc.getElementById(regions[i].id);
          if (fresh) {
            regions[i].innerHTML = fresh.innerHTML;
          }
        }
        say("Live: updated " + new Date().toLocaleTimeString());
      })
      .catch(function () {
        say("Live updates paused: the relay did not answer");
      })
      .then(function () {
        inflight = false;
      });
  }

  function schedule(ms) {
    if (pending === null) {
      pending = window.setTimeout(refresh, ms);
    }
  }

  var events = new EventSource(stream);
  ["tunnel", "auth", "allowlist", "reset"].forEach(function (type) {
    events.addEventListener(type, function () {
      schedule(100);
    });
  });
  events.onopen = function () {
    say("Live: following the relay's events");
  };
  events.onerror = function () {
    say("Live updates reconnecting…");
  };
  window.setInterval(function () {
    schedule(0);
  }, 30000);
})();
