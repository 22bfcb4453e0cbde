// minillm's own glue (not fetched from a registry), loaded after require.js and before embed-amd.js on
// pages with saved widget state. It fixes two mismatches between the widget manager and this book:
//
// 1. embed-amd.js (@jupyter-widgets/html-manager) looks for its Font Awesome fonts next to the URL that
//    require.js assigns to each of its modules, by default the page's own folder. Mapping the module
//    names to _static/html-manager/ makes those fonts load from the book's copy.
// 2. ipywidgets typesets widget text with MathJax 2's `MathJax.Hub.Queue(["Typeset", MathJax.Hub, el])`,
//    but the book loads MathJax 3, which has no Hub. A small Hub.Queue that calls MathJax 3's
//    typesetPromise is added once the page (and the deferred MathJax) has loaded, before any widget
//    renders (the widget manager renders on the same "load" event, registered later).
(function () {
  "use strict";
  var script = document.currentScript;
  if (script && window.require && typeof window.require.config === "function") {
    var dir = new URL("../html-manager", script.src).href; // <book>/_static/html-manager
    window.require.config({
      paths: {
        "@jupyter-widgets": dir,
        "@jupyter-widgets/html-manager/dist": dir
      }
    });
  }

  function addHubQueue() {
    var mj = window.MathJax;
    if (!mj || mj.Hub || !mj.startup) return; // no MathJax 3 on this page, or a real MathJax 2
    mj.Hub = {
      Queue: function () {
        var elements = [];
        Array.prototype.forEach.call(arguments, function (job) {
          if (Array.isArray(job) && job[0] === "Typeset" && job[2]) elements.push(job[2]);
        });
        if (!elements.length) return;
        Promise.resolve(mj.startup.promise)
          .then(function () { return mj.typesetPromise(elements); })
          .catch(function (err) { console.error("MathJax typeset of a widget failed:", err); });
      }
    };
  }
  window.addEventListener("load", addHubQueue);
})();
