// Mado forms posted with fetch (no dependencies): the study page's share
// dialog and the admin page. The endpoints answer JSON; on success the page
// is reloaded (with #share / the admin anchor) so the lists are current.
(function () {
  "use strict";

  // Form fields as x-www-form-urlencoded, empty optional fields left out.
  function body(form) {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (v, k) {
      if (typeof v === "string" && v !== "") params.append(k, v);
    });
    return params;
  }

  function post(form) {
    return fetch(form.getAttribute("action"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Accept": "application/json" },
      body: body(form),
    });
  }

  function reloadAt(hash) {
    if (location.hash === hash) location.reload();
    else { location.hash = hash; location.reload(); }
  }

  // --- share dialog (study page) ---
  var dialog = document.getElementById("share-dialog");
  if (dialog) {
    var openBtn = document.getElementById("share-open");
    var form = document.getElementById("share-form");
    var result = document.getElementById("share-result");
    var urlBox = document.getElementById("share-url");
    var error = document.getElementById("share-error");
    var created = false;
    openBtn.addEventListener("click", function () { dialog.showModal(); });
    dialog.querySelector("[data-close-dialog]").addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("close", function () {
      if (created) reloadAt("#share");
      else if (location.hash === "#share") history.replaceState(null, "", location.pathname);
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      error.hidden = true;
      post(form).then(function (res) {
        if (res.status !== 201) throw new Error("status " + res.status);
        return res.json();
      }).then(function (j) {
        created = true;
        urlBox.value = location.origin + j.url;
        result.hidden = false;
        form.reset();
        urlBox.focus();
        urlBox.select();
      }).catch(function () { error.hidden = false; });
    });
    document.getElementById("share-copy").addEventListener("click", function () {
      urlBox.select();
      if (navigator.clipboard) navigator.clipboard.writeText(urlBox.value).catch(function () {});
    });
    Array.prototype.forEach.call(dialog.querySelectorAll("form.share-revoke"), function (f) {
      f.addEventListener("submit", function (e) {
        e.preventDefault();
        post(f).then(function (res) {
          if (!res.ok) throw new Error("status " + res.status);
          reloadAt("#share");
        }).catch(function () { error.hidden = false; });
      });
    });
    if (location.hash === "#share") dialog.showModal();
  }

  // --- admin page ---
  Array.prototype.forEach.call(document.querySelectorAll("form[data-admin]"), function (f) {
    f.addEventListener("submit", function (e) {
      e.preventDefault();
      var out = f.querySelector(".form-error");
      if (out) out.hidden = true;
      post(f).then(function (res) {
        if (res.ok) { reloadAt("#" + f.getAttribute("data-admin")); return null; }
        return res.json().then(function (j) {
          if (out) { out.textContent = (j && j.detail) || ("HTTP " + res.status); out.hidden = false; }
        }, function () {
          if (out) { out.textContent = "HTTP " + res.status; out.hidden = false; }
        });
      }).catch(function () { if (out) { out.textContent = "network error"; out.hidden = false; } });
    });
  });
})();
