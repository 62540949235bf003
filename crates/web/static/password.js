// Live password checklist: as the user types a new password, ask the server which rules are met and
// mark each rule. The page works without this script; the server checks again on submit.
(function () {
  "use strict";
  var list = document.getElementById("rules");
  var input = document.getElementById("password") || document.getElementById("new_password");
  if (!list || !input || !window.fetch) { return; }
  var loginField = document.getElementById("login");
  var timer = null;
  var seq = 0;
  function mark(rules) {
    var byId = {};
    rules.forEach(function (r) { byId[r.rule] = r.met; });
    Array.prototype.forEach.call(list.querySelectorAll("li[data-rule]"), function (li) {
      var rule = li.getAttribute("data-rule");
      li.classList.remove("met", "unmet");
      if (input.value !== "" && Object.prototype.hasOwnProperty.call(byId, rule)) {
        li.classList.add(byId[rule] ? "met" : "unmet");
        li.setAttribute("aria-label", (byId[rule] ? "Met: " : "Not met yet: ") + li.textContent);
      } else {
        li.removeAttribute("aria-label");
      }
    });
  }
  function check() {
    var mine = ++seq;
    fetch("/api/v1/password/check", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ login: loginField ? loginField.value : "", password: input.value })
    }).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body && mine === seq) { mark(body.rules || []); } })
      .catch(function () { /* the server checks on submit anyway */ });
  }
  input.addEventListener("input", function () {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(check, 250);
  });
})();
