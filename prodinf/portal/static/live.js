// Live pages: while a page says it is live (<meta name="prodinf-live">), it asks the
// server for itself every half second (from the start of one ask to the start of the
// next) and puts the new <main> in place of the old one, so a step that ends shows
// within a second (half a second of waiting at most, then the page's answer) without
// reloading the page. It waits while the user is typing in a form on the page, stops
// once the page is no longer live (the job ended), and slows down when the tab is
// hidden. Without JavaScript the page reloads itself instead (a <meta refresh> inside
// <noscript>).
(function () {
  "use strict";
  var EVERY = 500;
  var HIDDEN_EVERY = 10000;
  var GAP = 100;
  // what the server sent last: the page changes only when it sends something else (so a
  // <details> opened or a button about to be clicked stays as it is meanwhile)
  function content(main) {
    var copy = main.cloneNode(true);
    copy.querySelectorAll(":scope > .flash").forEach(function (flash) {
      flash.remove(); // said once, by the page the last action led to
    });
    return copy.innerHTML;
  }
  var last = content(document.querySelector("main"));

  function live(doc) {
    return doc.querySelector('meta[name="prodinf-live"]') !== null;
  }

  function busy() {
    var active = document.activeElement;
    return active !== null && active.closest("main form") !== null;
  }

  // when the last ask began: the next begins EVERY after it, however long the server
  // took to answer, and at least GAP after the answer
  var asked = Date.now();

  function next() {
    var every = document.hidden ? HIDDEN_EVERY : EVERY;
    window.setTimeout(look, Math.max(GAP, asked + every - Date.now()));
  }

  function look() {
    asked = Date.now();
    if (busy()) {
      next();
      return;
    }
    fetch(window.location.href, {
      credentials: "same-origin",
      headers: { "X-Prodinf-Live": "1" },
      redirect: "manual"
    })
      .then(function (answer) {
        if (!answer.ok) {
          throw new Error("answered " + answer.status);
        }
        return answer.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var main = fresh.querySelector("main");
        if (main !== null && content(main) !== last && !busy()) {
          last = content(main);
          var old = document.querySelector("main");
          var shown = document.importNode(main, true);
          if (shown.querySelector(".flash") === null) {
            // what the last action said (shown once by the server) stays in view
            old.querySelectorAll(":scope > .flash").forEach(function (flash, i) {
              shown.insertBefore(flash, shown.children[i] || null);
            });
          }
          old.replaceWith(shown);
          document.title = fresh.title;
        }
        if (live(fresh)) {
          next();
        }
      })
      .catch(function () {
        window.setTimeout(look, HIDDEN_EVERY); // the portal is away: try again later
      });
  }

  if (live(document)) {
    next();
  }
})();
