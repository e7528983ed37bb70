// The catalog page (docs/catalog.md): search narrows the table, a click on a header sorts it.
// The address can carry the state: #q=words&sort=<column index or name>&dir=asc|desc.
(function () {
  "use strict";

  function value(row, column) {
    var cell = row.cells[column];
    return cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
  }

  function compare(a, b) {
    var x = parseFloat(a), y = parseFloat(b);
    if (!isNaN(x) && !isNaN(y) && String(x) === a && String(y) === b) return x - y;
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }

  function init() {
    var table = document.getElementById("pk-catalog");
    if (!table) return;
    var input = document.getElementById("pk-search");
    var count = document.getElementById("pk-count");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);

    function filter() {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      rows.forEach(function (row) {
        var text = row.textContent.toLowerCase();
        var match = words.every(function (word) { return text.indexOf(word) !== -1; });
        row.hidden = !match;
        if (match) shown += 1;
      });
      count.textContent = shown + " of " + rows.length + " methods";
    }

    function sort(column, descending) {
      var order = rows.slice().sort(function (a, b) {
        var result = compare(value(a, column), value(b, column));
        return descending ? -result : result;
      });
      order.forEach(function (row) { body.appendChild(row); });
      headers.forEach(function (th, i) {
        th.setAttribute("aria-sort", i === column ? (descending ? "descending" : "ascending") : "none");
      });
    }

    headers.forEach(function (th, i) {
      th.style.cursor = "pointer";
      th.title = "Sort by " + th.textContent;
      th.addEventListener("click", function () {
        sort(i, th.getAttribute("aria-sort") === "ascending");
      });
    });
    input.addEventListener("input", filter);

    var state = new URLSearchParams(window.location.hash.slice(1));
    if (state.has("q")) input.value = state.get("q");
    if (state.has("sort")) {
      var wanted = state.get("sort");
      var column = headers.findIndex(function (th, i) { return String(i) === wanted || th.textContent === wanted; });
      if (column >= 0) sort(column, state.get("dir") === "desc");
    }
    filter();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
