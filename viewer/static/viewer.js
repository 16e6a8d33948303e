// Mado stack viewer: click an image to open its series full screen, then
// scroll, drag or use the arrow keys to page through it. No dependencies.
(function () {
  "use strict";
  var overlay = document.getElementById("stack");
  if (!overlay) return;
  var img = overlay.querySelector(".stack-img");
  var pos = overlay.querySelector(".stack-pos");
  var closeBtn = overlay.querySelector(".stack-close");
  var stack = [];
  var index = 0;

  function show(i) {
    if (!stack.length) return;
    index = Math.max(0, Math.min(stack.length - 1, i));
    img.src = stack[index].src;
    img.alt = stack[index].alt;
    pos.textContent = (index + 1) + " / " + stack.length;
    // Warm the cache for the neighbours.
    [index - 1, index + 1].forEach(function (j) {
      if (j >= 0 && j < stack.length) { var p = new Image(); p.src = stack[j].src; }
    });
  }

  function open(series, start) {
    stack = Array.prototype.map.call(series.querySelectorAll(".thumb img"), function (el) {
      return { src: el.getAttribute("src"), alt: el.getAttribute("alt") || "" };
    });
    overlay.hidden = false;
    document.body.style.overflow = "hidden";
    show(start);
    closeBtn.focus();
  }

  function close() {
    overlay.hidden = true;
    document.body.style.overflow = "";
    img.removeAttribute("src");
  }

  document.querySelectorAll(".series").forEach(function (series) {
    series.querySelectorAll(".thumb").forEach(function (thumb, i) {
      thumb.addEventListener("click", function () { open(series, i); });
    });
  });

  closeBtn.addEventListener("click", close);
  document.addEventListener("keydown", function (e) {
    if (overlay.hidden) return;
    if (e.key === "Escape") { close(); }
    else if (e.key === "ArrowDown" || e.key === "ArrowRight" || e.key === "PageDown") { show(index + 1); e.preventDefault(); }
    else if (e.key === "ArrowUp" || e.key === "ArrowLeft" || e.key === "PageUp") { show(index - 1); e.preventDefault(); }
    else if (e.key === "Home") { show(0); } else if (e.key === "End") { show(stack.length - 1); }
  });
  overlay.addEventListener("wheel", function (e) {
    e.preventDefault();
    show(index + (e.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  var dragY = null;
  img.addEventListener("pointerdown", function (e) { dragY = e.clientY; img.setPointerCapture(e.pointerId); });
  img.addEventListener("pointermove", function (e) {
    if (dragY === null) return;
    var step = Math.trunc((e.clientY - dragY) / 8);
    if (step !== 0) { show(index + step); dragY = e.clientY; }
  });
  img.addEventListener("pointerup", function () { dragY = null; });
  img.addEventListener("dragstart", function (e) { e.preventDefault(); });
})();
