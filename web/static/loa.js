// The operator page's only script: an optional refresh every minute, remembered in this
// browser. The page works without it (the box stays hidden when scripts do not run).
(function () {
  "use strict";
  var KEY = "loa.autoRefresh";
  var PERIOD_MS = 60000;
  var box = document.getElementById("auto-refresh");
  if (!box) {
    return;
  }
  box.closest("label").hidden = false;
  var timer = null;
  function schedule() {
    window.clearTimeout(timer);
    timer = box.checked ? window.setTimeout(function () { window.location.reload(); }, PERIOD_MS) : null;
  }
  try {
    box.checked = window.localStorage.getItem(KEY) === "1";
  } catch (e) {
    // Storage refused (private mode): the box still works for this page.
  }
  box.addEventListener("change", function () {
    try {
      window.localStorage.setItem(KEY, box.checked ? "1" : "0");
    } catch (e) {
      // As above.
    }
    schedule();
  });
  schedule();
})();
