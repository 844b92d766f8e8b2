// Sizes as the server's pages say them (`spoken_bytes`, `exact_bytes` in src/http/pages):
// binary units, one decimal under 10, whole numbers from 10; `exact` to the byte. Loaded
// before a page's own script, so every script says a size the same way.
var testdrive = (function () {
  function size(bytes) {
    if (bytes < 1024) return bytes + " bytes";
    var units = ["KiB", "MiB", "GiB", "TiB"], value = bytes / 1024, u = 0;
    while (u + 1 < units.length && Math.round(value * 10) / 10 >= 1023.5) { value /= 1024; u++; }
    var tenths = Math.round(value * 10) / 10;
    return (tenths < 10 && tenths % 1 !== 0 ? tenths.toFixed(1) : String(Math.round(value))) + " " + units[u];
  }
  function exact(bytes) { return bytes.toLocaleString("en-US") + (bytes === 1 ? " byte" : " bytes"); }
  return { size: size, exact: exact };
})();
