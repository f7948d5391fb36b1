/* dpmap website: the map (canvas), "around here", the period slider and the table.
   Reads window.DPMAP_SITE (data/site-data.js; format in dpmap/site/data.py). No network. */
(function () {
  "use strict";
  var D = window.DPMAP_SITE, G = window.dpmapGeo, $ = function (id) { return document.getElementById(id); };
  var VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779",
    "#6ece58", "#b5de2b", "#fde725"];
  var DIVERGING = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582",
    "#d6604d", "#b2182b"];  /* blue = falling, red = rising (RdBu, colour-blind safe) */
  var SUPPRESSED = "suppressed (noisy count below threshold)";
  var PAGE = 100;

  var b64 = G.b64;

  /* ---- a layer's shapes, decoded once (geo.js), plus Web Mercator world coordinates */
  function decode(L) {
    if (L._d) return L._d;
    var d = G.decodeShapes(L), n = d.n, rs = d.rs, ss = d.ss, nv = d.lng.length, i, v;
    /* world pixels at zoom 0: shape centre (Float64) + vertex offsets (Float32) */
    var wc = new Float64Array(2 * n), wo = new Float32Array(2 * nv), wr = new Float32Array(n);
    var merc = function (lo, la) {
      var sn = Math.sin(la * Math.PI / 180);
      return [(lo + 180) / 360 * 256, (0.5 - Math.log((1 + sn) / (1 - sn)) / (4 * Math.PI)) * 256];
    };
    for (i = 0; i < n; i++) {
      var m = merc((d.bbox[4 * i] + d.bbox[4 * i + 2]) / 2, (d.bbox[4 * i + 1] + d.bbox[4 * i + 3]) / 2);
      wc[2 * i] = m[0]; wc[2 * i + 1] = m[1];
      for (v = rs[ss[i]]; v < rs[ss[i + 1]]; v++) {
        var p = merc(d.lng[v], d.lat[v]);
        wo[2 * v] = p[0] - m[0]; wo[2 * v + 1] = p[1] - m[1];
        wr[i] = Math.max(wr[i], Math.abs(wo[2 * v]), Math.abs(wo[2 * v + 1]));
      }
    }
    d.wc = wc; d.wo = wo; d.wr = wr;
    L._d = d;
    return d;
  }

  function layerOf() { return D.layers[S.layer]; }
  /* value/moe/state of the current layer, period, statistic (decoded on demand, cached) */
  function cur() {
    var L = layerOf(), key = S.period + ":" + S.stat;
    L._v = L._v || {};
    if (!L._v[key]) {
      if (S.stat === "trend") {
        var t = L.trend, st = new Uint8Array(L.shapes.n), sl = b64(t.slope, Float32Array);
        for (var i = 0; i < st.length; i++) st[i] = isNaN(sl[i]) ? 2 : 0;
        L._v[key] = { value: sl, moe: b64(t.moe, Float32Array), state: st,
          sig: b64(t.significant, Uint8Array), digits: 2 };
      } else {
        var v = L.values[S.period][S.stat];
        L._v[key] = { value: b64(v.value, Float32Array), moe: b64(v.moe, Float32Array),
          state: b64(v.state, Uint8Array), digits: statInfo().digits };
      }
    }
    return L._v[key];
  }
  function statInfo() {
    var L = layerOf();
    if (S.stat === "trend") return { key: "trend", label: L.trend.label, digits: 2, vmax: L.trend.vmax };
    return L.statistics.filter(function (s) { return s.key === S.stat; })[0];
  }
  /* the colour scale: 0 to the 99th percentile of the published values of every period
     (computed by dpmap: vmax); a trend's: -vmax..vmax of |slope| */
  function scale() {
    var L = layerOf();
    if (S.stat === "trend") return { lo: -L.trend.vmax, hi: L.trend.vmax, diverging: true };
    return { lo: 0, hi: statInfo().vmax, diverging: false };
  }
  function classOf(c, i, sc) {
    if (c.state[i] === 1) return -1;
    var v = c.value[i];
    if (c.state[i] === 2) return -2;
    if (!isFinite(v)) return -3;  // published row without this number: "no published value"
    var pal = sc.diverging ? DIVERGING : VIRIDIS, t = (v - sc.lo) / (sc.hi - sc.lo);
    return Math.max(0, Math.min(pal.length - 1, Math.floor(t * pal.length)));
  }

  /* ---- the canvas layer */
  var hatch = null;
  function hatchPattern(ctx) {
    if (hatch) return hatch;
    var p = document.createElement("canvas"); p.width = p.height = 8;
    var g = p.getContext("2d");
    g.fillStyle = "#e3e3e3"; g.fillRect(0, 0, 8, 8);
    g.strokeStyle = "#8c8c8c"; g.lineWidth = 1.2;
    g.beginPath(); g.moveTo(0, 8); g.lineTo(8, 0); g.moveTo(-2, 2); g.lineTo(2, -2);
    g.moveTo(6, 10); g.lineTo(10, 6); g.stroke();
    hatch = ctx.createPattern(p, "repeat");
    return hatch;
  }
  /* the rings of shape i as subpaths, back to their first vertex (not closePath(), which
     is slow in Chromium's long paths: 60 ms per thousand rings) */
  function trace(ctx, d, i, bx, by, z) {
    var wo = d.wo, rs = d.rs;
    for (var r = d.ss[i], re = d.ss[i + 1]; r < re; r++) {
      var s0 = rs[r], e = rs[r + 1], x0 = bx + wo[2 * s0] * z, y0 = by + wo[2 * s0 + 1] * z;
      ctx.moveTo(x0, y0);
      for (var v = s0 + 1; v < e; v++) ctx.lineTo(bx + wo[2 * v] * z, by + wo[2 * v + 1] * z);
      ctx.lineTo(x0, y0);
    }
  }

  function rgba(hex) {
    var v = parseInt(hex.slice(1), 16);
    return (255 << 24 | (v & 255) << 16 | (v >> 8 & 255) << 8 | v >> 16) >>> 0;  // RGBA bytes
  }
  /* Fill the first ring of every listed cell into the canvas's pixels, sampling pixel
     centres (neighbouring cells tile without gaps or overlaps); a cell that covers no pixel
     centre gets the pixel under its centre. Suppressed cells: a hatch of grey lines. */
  function rasterize(ctx, d, buckets, pal, W, H, dpr, z, ox, oy) {
    var img = ctx.createImageData(W, H), buf = new Uint32Array(img.data.buffer);
    var cols = pal.map(rgba).concat([0, rgba("#ffffff")]), light = rgba("#e3e3e3"), dark = rgba("#8c8c8c");
    var xs = new Float64Array(64), ys = new Float64Array(64), wo = d.wo, rs = d.rs, zd = z * dpr;
    for (var k = 0; k < buckets.length; k++) {
      var list = buckets[k], hatched = k === pal.length, col = cols[k];
      for (var j = 0; j < list.length; j++) {
        var i = list[j], bx = (d.wc[2 * i] * z - ox) * dpr, by = (d.wc[2 * i + 1] * z - oy) * dpr;
        var s0 = rs[d.ss[i]], m = Math.min(64, rs[d.ss[i] + 1] - s0), y0 = Infinity, y1 = -Infinity, v;
        for (v = 0; v < m; v++) {
          xs[v] = bx + wo[2 * (s0 + v)] * zd; ys[v] = by + wo[2 * (s0 + v) + 1] * zd;
          if (ys[v] < y0) y0 = ys[v]; if (ys[v] > y1) y1 = ys[v];
        }
        var filled = 0, ya = Math.max(0, Math.ceil(y0 - 0.5)), yb = Math.min(H - 1, Math.floor(y1 - 0.5));
        for (var y = ya; y <= yb; y++) {
          var yc = y + 0.5, xa = Infinity, xb = -Infinity;
          for (var a = 0, b = m - 1; a < m; b = a++) {
            if ((ys[a] > yc) !== (ys[b] > yc)) {
              var x = xs[b] + (yc - ys[b]) * (xs[a] - xs[b]) / (ys[a] - ys[b]);
              if (x < xa) xa = x; if (x > xb) xb = x;
            }
          }
          var xl = Math.max(0, Math.ceil(xa - 0.5)), xr = Math.min(W - 1, Math.floor(xb - 0.5));
          for (var px = xl; px <= xr; px++) buf[y * W + px] = hatched ? ((px + y) % 6 ? light : dark) : col;
          filled += xr - xl + 1;
        }
        if (filled <= 0) {
          var cx = Math.floor(bx), cy = Math.floor(by);
          if (cx >= 0 && cy >= 0 && cx < W && cy < H) buf[cy * W + cx] = hatched ? light : col;
        }
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  var CanvasLayer = window.L.Layer.extend({
    onAdd: function (map) {
      this._c = window.L.DomUtil.create("canvas", "dpmap-canvas");
      this._c.setAttribute("aria-hidden", "true");
      map.getPanes().overlayPane.appendChild(this._c);
      map.on("moveend zoomend resize viewreset", this.draw, this);
      this.draw();
    },
    onRemove: function (map) {
      this._c.remove(); map.off("moveend zoomend resize viewreset", this.draw, this);
    },
    draw: function () {
      var t0 = performance.now(), map = this._map, size = map.getSize(), dpr = window.devicePixelRatio || 1;
      var cv = this._c, tl = map.containerPointToLayerPoint([0, 0]);
      window.L.DomUtil.setPosition(cv, tl);
      cv.width = size.x * dpr; cv.height = size.y * dpr;
      cv.style.width = size.x + "px"; cv.style.height = size.y + "px";
      var ctx = cv.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      var d = decode(layerOf()), c = cur(), sc = scale(), z = Math.pow(2, map.getZoom());
      var o = tl.add(map.getPixelOrigin()), ox = o.x, oy = o.y;
      var pal = sc.diverging ? DIVERGING : VIRIDIS, K = pal.length;
      var buckets = [], k, i;
      for (k = 0; k < K + 2; k++) buckets.push([]);  // colours, suppressed, no value
      var visible = 0, sumR = 0;
      for (i = 0; i < d.n; i++) {
        var cx = d.wc[2 * i] * z - ox, cy = d.wc[2 * i + 1] * z - oy, r = d.wr[i] * z;
        if (cx + r < 0 || cy + r < 0 || cx - r > size.x || cy - r > size.y) continue;
        var cl = classOf(c, i, sc);
        if (cl === -2) continue;
        buckets[cl === -1 ? K : cl === -3 ? K + 1 : cl].push(i); visible++; sumR += r;
      }
      /* many small cells: scan-convert them into pixels (Canvas paths of hundreds of
         thousands of tiny polygons take seconds in software rendering) */
      if (layerOf().kind === "cells" && visible && sumR / visible * dpr < 8) {
        rasterize(ctx, d, buckets, pal, cv.width, cv.height, dpr, z, ox, oy);
      } else {
        for (k = 0; k <= K + 1; k++) {
          var list = buckets[k];
          if (!list.length) continue;
          ctx.fillStyle = k === K ? hatchPattern(ctx) : k === K + 1 ? "#ffffff" : pal[k];
          ctx.beginPath();
          for (var j = 0; j < list.length; j++) {
            i = list[j];
            trace(ctx, d, i, d.wc[2 * i] * z - ox, d.wc[2 * i + 1] * z - oy, z);
          }
          ctx.fill("evenodd");
          if (sumR / visible > 6) {
            ctx.strokeStyle = "rgba(255,255,255,0.6)"; ctx.lineWidth = 0.5; ctx.stroke();
          }
        }
        if (S.stat === "trend") {  // significant trends: a dark outline
          ctx.beginPath();
          buckets.forEach(function (list) {
            list.forEach(function (i) {
              if (c.sig[i]) trace(ctx, d, i, d.wc[2 * i] * z - ox, d.wc[2 * i + 1] * z - oy, z);
            });
          });
          ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.stroke();
        }
      }
      var ms = performance.now() - t0;
      api.drawTimes.push({ ms: ms, shapes: visible, zoom: map.getZoom() });
      api.lastDrawMs = ms;
      if (!api._drawn) {
        api._drawn = true;
        performance.mark("dpmap-first-draw");
        if (api._resolve) api._resolve();
      }
    }
  });

  /* ---- state, controls */
  var S = { layer: 0, period: 0, stat: null };
  var api = { state: S, drawTimes: [], _drawn: false };
  api.ready = new Promise(function (res) { api._resolve = res; });
  window.dpmapSite = api;

  function fmt(x, digits) { return G.fixed(x, digits); }
  function shown(c, i) {
    if (c.state[i] === 1) return SUPPRESSED;
    if (c.state[i] === 2) return "not in this period's release";
    if (!isFinite(c.value[i])) return "no published value";
    var t = fmt(c.value[i], c.digits);
    if (isFinite(c.moe[i])) t += " ± " + fmt(c.moe[i], c.digits);
    if (S.stat === "trend") t += " per period" + (c.sig[i] ? " (significant)" : "");
    return t;
  }

  function shapeAt(latlng) {
    var d = decode(layerOf()), x = latlng.lng, y = latlng.lat;
    var hits = d.candidates([x, y, x, y]).filter(function (i) { return G.inShape(x, y, d.rings(i)); });
    return hits.length ? hits[0] : -1;
  }

  function aroundSource() {
    var L = layerOf();
    if (!L.around) return null;
    L._a = L._a || {};
    if (!L._a[S.period]) L._a[S.period] = G.aroundSource(D, L, S.period, decode(L));
    return L._a[S.period];
  }

  var aroundLayer = null, aroundRenderer = null;
  api.around = function (lat, lng, radius) {
    var src = aroundSource(), L = layerOf();
    api._last = [lat, lng, radius];
    var r = src ? G.around(src, lat, lng, radius) : { error: L.around_note };
    if (!r.error) r.note = L.around_note;
    showAround(r, lat, lng, radius);
    return r;
  };
  function showAround(r, lat, lng, radius) {
    var box = $("around-answer");
    if (aroundLayer) { aroundLayer.remove(); aroundLayer = null; }
    box.removeAttribute("data-cells"); box.removeAttribute("data-count"); box.removeAttribute("data-count-moe");
    if (r.error) { box.textContent = r.error; box.className = "around-answer error"; return; }
    box.className = "around-answer";
    box.textContent = r.text.charAt(0).toUpperCase() + r.text.slice(1) + ". " + r.note;
    box.setAttribute("data-cells", r.cells.join(","));
    box.setAttribute("data-count", String(r.count));
    box.setAttribute("data-count-moe", String(r.count_moe));
    var Lf = window.L, g = Lf.layerGroup(), d = decode(layerOf());
    aroundRenderer = aroundRenderer || Lf.canvas({ padding: 0.2 });
    var ringLL = function (ring) { return ring.map(function (p) { return [p[1], p[0]]; }); };
    var outlines = (r.shapes || []).map(function (i) { return d.rings(i).map(ringLL); });
    if (outlines.length)
      Lf.polygon(outlines, { color: "#111", weight: 2, fill: false, interactive: false, renderer: aroundRenderer }).addTo(g);
    Lf.polygon(ringLL(G.disk(lat, lng, radius)), { color: "#d7191c", weight: 2, fillOpacity: 0.08,
      dashArray: "4 3", interactive: false, renderer: aroundRenderer }).addTo(g);
    aroundLayer = g.addTo(api.map);
  }

  /* ---- legend */
  function legend() {
    var sc = scale(), pal = sc.diverging ? DIVERGING : VIRIDIS, info = statInfo(), el = $("legend");
    var grad = "linear-gradient(to right," + pal.join(",") + ")";
    el.innerHTML = "";
    var h = document.createElement("div"); h.className = "legend-title"; h.textContent = info.label; el.appendChild(h);
    var bar = document.createElement("div"); bar.className = "legend-bar"; bar.style.background = grad;
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", "colour scale from " + fmt(sc.lo, info.digits) + " to " + fmt(sc.hi, info.digits));
    el.appendChild(bar);
    var ticks = document.createElement("div"); ticks.className = "legend-ticks";
    ticks.innerHTML = "<span></span><span></span>";
    ticks.children[0].textContent = (sc.diverging ? "" : "≤ ") + fmt(sc.lo, info.digits);
    ticks.children[1].textContent = "≥ " + fmt(sc.hi, info.digits);
    el.appendChild(ticks);
    var sw = document.createElement("div"); sw.className = "legend-row";
    sw.innerHTML = '<span class="swatch hatched"></span><span></span>';
    sw.children[1].textContent = SUPPRESSED + " — not zero";
    el.appendChild(sw);
    var c = cur(), missing = false;  // listed only where the map shows such a row
    for (var i = 0; i < c.state.length && !missing; i++) missing = c.state[i] === 0 && !isFinite(c.value[i]);
    if (missing) {
      var nv = document.createElement("div"); nv.className = "legend-row";
      nv.innerHTML = '<span class="swatch missing"></span><span>no published value</span>';
      el.appendChild(nv);
    }
    if (S.stat === "trend") {
      var sg = document.createElement("div"); sg.className = "legend-row";
      sg.innerHTML = '<span class="swatch significant"></span><span>significant trend (outlined)</span>';
      el.appendChild(sg);
    }
    var cap = document.createElement("div"); cap.className = "legend-caption"; cap.textContent = layerOf().caption;
    el.appendChild(cap);
  }

  /* ---- table: rows of the current layer, period and statistic; sort, search, pages */
  var T = { sort: "id", dir: 1, page: 0, rows: [] };
  function tableRows() {
    var c = cur(), d = decode(layerOf()), q = $("table-search").value.trim().toLowerCase(), rows = [];
    for (var i = 0; i < d.n; i++) {
      if (c.state[i] === 2) continue;
      if (q && d.ids[i].toLowerCase().indexOf(q) < 0) continue;
      rows.push(i);
    }
    var key = T.sort, dir = T.dir;
    var val = function (i) {
      if (key === "id") return d.ids[i];
      if (key === "state") return c.state[i];
      var x = key === "value" ? c.value[i] : c.moe[i];
      return isFinite(x) ? x : -Infinity;
    };
    rows.sort(function (a, b) {
      var x = val(a), y = val(b);
      return (x < y ? -1 : x > y ? 1 : (a - b)) * dir;
    });
    T.rows = rows;
    return rows;
  }
  function cellText(i) {
    var c = cur(), d = decode(layerOf()), pub = c.state[i] === 0 && isFinite(c.value[i]);
    return [d.ids[i], pub ? G.fixed(c.value[i], c.digits, false) : "",
      pub && isFinite(c.moe[i]) ? G.fixed(c.moe[i], c.digits, false) : "",
      c.state[i] === 1 ? "suppressed" : pub ? "published" : "no published value"];
  }
  function renderTable() {
    var rows = tableRows(), body = $("data-table").tBodies[0], pages = Math.max(1, Math.ceil(rows.length / PAGE));
    T.page = Math.min(T.page, pages - 1);
    body.innerHTML = "";
    var frag = document.createDocumentFragment();
    rows.slice(T.page * PAGE, (T.page + 1) * PAGE).forEach(function (i) {
      var tr = document.createElement("tr"), t = cellText(i);
      tr.setAttribute("data-id", t[0]);
      t.forEach(function (x, k) {
        var td = document.createElement(k === 0 ? "th" : "td");
        if (k === 0) td.setAttribute("scope", "row");
        td.textContent = x; tr.appendChild(td);
      });
      frag.appendChild(tr);
    });
    body.appendChild(frag);
    $("table-page").textContent = "rows " + (rows.length ? T.page * PAGE + 1 : 0) + "–" +
      Math.min(rows.length, (T.page + 1) * PAGE) + " of " + rows.length;
    $("page-prev").disabled = T.page === 0; $("page-next").disabled = T.page >= pages - 1;
    var heads = document.querySelectorAll("#data-table thead th");
    heads.forEach(function (th) {
      th.setAttribute("aria-sort", th.getAttribute("data-key") === T.sort ? (T.dir > 0 ? "ascending" : "descending") : "none");
    });
    $("col-value").textContent = statInfo().label;
  }
  function csvName() {
    var L = layerOf(), p = L.periods[S.period];
    return [L.key, p === null ? "all" : p, S.stat].join("-").replace(/[^\w.-]+/g, "_") + ".csv";
  }
  function csv() {
    var q = function (x) { return /[",\n]/.test(x) ? '"' + x.replace(/"/g, '""') + '"' : x; };
    var lines = [["id", statInfo().label, "± margin (95%)", "state"].map(q).join(",")];
    T.rows.forEach(function (i) { lines.push(cellText(i).map(q).join(",")); });
    return lines.join("\n") + "\n";
  }
  api.csv = csv;
  function download() {
    var blob = new Blob([csv()], { type: "text/csv;charset=utf-8" }), a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = csvName();
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 1000);
  }

  /* ---- wiring */
  function fillSelect(el, options, value) {
    el.innerHTML = "";
    options.forEach(function (o) {
      var op = document.createElement("option"); op.value = o[0]; op.textContent = o[1]; el.appendChild(op);
    });
    el.value = value;
  }
  function setLayer(k) {
    S.layer = k; var L = layerOf();
    S.period = L.periods.length - 1;
    var stats = L.statistics.map(function (s) { return [s.key, s.label]; });
    if (L.trend) stats.push(["trend", L.trend.label]);
    if (!stats.some(function (s) { return s[0] === S.stat; })) S.stat = stats[0][0];
    fillSelect($("stat-select"), stats, S.stat);
    var slider = $("period-slider"), box = $("period-box");
    box.hidden = L.periods.length < 2;
    slider.min = 0; slider.max = L.periods.length - 1; slider.value = S.period;
    $("around-note").textContent = L.around ? L.around_note : "";
    return show();
  }
  /* inflate what the current layer and period need, then draw (resolves when drawn) */
  function show() {
    var L = layerOf(), p = S.period;
    return G.prepare(L, p).then(function () {
      if (L !== layerOf() || p !== S.period) return;
      refresh();
      if (api._last) api.around.apply(null, api._last);  // the answer follows the slider
    }).catch(function (e) {
      $("around-answer").textContent = "This page could not read its data: " + e;
      throw e;
    });
  }
  function refresh() {
    decode(layerOf());
    var L = layerOf();
    $("period-label").textContent = L.periods[S.period] === null ? "" : L.periods[S.period];
    $("period-slider").setAttribute("aria-valuetext", $("period-label").textContent);
    legend(); renderTable();
    if (api.canvas && api.map) api.canvas.draw();
  }

  function init() {
    var Lf = window.L;
    if (D.layers.length > 1) {
      $("layer-box").hidden = false;
      fillSelect($("layer-select"), D.layers.map(function (l, k) { return [String(k), l.name]; }), "0");
      $("layer-select").addEventListener("change", function (e) { setLayer(+e.target.value); });
    }
    var map = Lf.map("map", { zoomAnimation: false, attributionControl: !!D.tiles, keyboard: true });
    api.map = map;
    if (D.tiles) Lf.tileLayer(D.tiles.url, { attribution: D.tiles.attribution }).addTo(map);
    var bb = D.layers[0].bbox;
    map.fitBounds([[bb[1], bb[0]], [bb[3], bb[2]]]);
    $("stat-select").addEventListener("change", function (e) { S.stat = e.target.value; T.page = 0; refresh(); });
    $("period-slider").addEventListener("input", function (e) { S.period = +e.target.value; show(); });
    $("table-search").addEventListener("input", function () { T.page = 0; renderTable(); });
    $("page-prev").addEventListener("click", function () { T.page--; renderTable(); });
    $("page-next").addEventListener("click", function () { T.page++; renderTable(); });
    $("csv-download").addEventListener("click", download);
    document.querySelectorAll("#data-table thead th button").forEach(function (b) {
      b.addEventListener("click", function () {
        var k = b.parentNode.getAttribute("data-key");
        T.dir = T.sort === k ? -T.dir : 1; T.sort = k; T.page = 0; renderTable();
      });
    });
    var go = function () {
      var lat = parseFloat($("around-lat").value), lng = parseFloat($("around-lng").value);
      api.around(lat, lng, +$("around-radius").value);
    };
    $("around-go").addEventListener("click", go);
    ["around-lat", "around-lng"].forEach(function (id) {
      $(id).addEventListener("keydown", function (e) { if (e.key === "Enter") go(); });
    });
    map.on("click", function (e) {
      if (!api.canvas) return;
      $("around-lat").value = e.latlng.lat.toFixed(6); $("around-lng").value = e.latlng.lng.toFixed(6);
      api.around(e.latlng.lat, e.latlng.lng, +$("around-radius").value);
    });
    var tip = $("tooltip");
    map.on("mousemove", function (e) {
      if (!api.canvas) return;
      var i = shapeAt(e.latlng);
      if (i < 0) { tip.hidden = true; return; }
      tip.textContent = decode(layerOf()).ids[i] + ": " + shown(cur(), i);
      tip.hidden = false;
      tip.style.left = (e.containerPoint.x + 12) + "px"; tip.style.top = (e.containerPoint.y + 12) + "px";
    });
    map.on("mouseout", function () { tip.hidden = true; });
    setLayer(0).then(function () {
      api.canvas = new CanvasLayer();
      api.canvas.addTo(map);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
