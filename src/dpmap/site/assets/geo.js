/* dpmap website: geometry and "around here" arithmetic, shared by the page (site.js) and
   the tests (node). No DOM. Mirrors dpmap.analysis.nearby.around exactly:
   - the disk: 64 vertices at radius / cos(pi/64) on WGS84 geodesics (Vincenty's direct
     formula; pyproj's Geod.fwd agrees to well under a millimetre at these distances);
   - cells: every released cell whose lon/lat polygon intersects the disk polygon (planar,
     in lon/lat, as shapely.intersects); sorted by id;
   - totals: sums in that order; margin: the exact single-cell margin for one cell, else
     z95 * sqrt(sum of variances); coverage: area of (cells ∩ disk) / area of the disk in
     EPSG:6933 (cylindrical equal area on WGS84), at most 1;
   - the sentence: as Around.__str__. */
(function (root) {
  "use strict";
  var A = 6378137.0, F = 1 / 298.257223563, B = A * (1 - F);
  var E2 = F * (2 - F), E = Math.sqrt(E2);

  /* WGS84 direct geodesic (Vincenty 1975): [lng, lat] at distance s (m), azimuth az (deg). */
  function direct(lat, lng, azDeg, s) {
    var rad = Math.PI / 180, a1 = azDeg * rad;
    var sinA1 = Math.sin(a1), cosA1 = Math.cos(a1);
    var tanU1 = (1 - F) * Math.tan(lat * rad), cosU1 = 1 / Math.sqrt(1 + tanU1 * tanU1),
      sinU1 = tanU1 * cosU1;
    var sig1 = Math.atan2(tanU1, cosA1), sinAl = cosU1 * sinA1, cos2Al = 1 - sinAl * sinAl;
    var u2 = cos2Al * (A * A - B * B) / (B * B);
    var AA = 1 + u2 / 16384 * (4096 + u2 * (-768 + u2 * (320 - 175 * u2)));
    var BB = u2 / 1024 * (256 + u2 * (-128 + u2 * (74 - 47 * u2)));
    var sig = s / (B * AA), sigP, cos2sm, sinS, cosS, i = 0;
    do {
      cos2sm = Math.cos(2 * sig1 + sig); sinS = Math.sin(sig); cosS = Math.cos(sig);
      var dSig = BB * sinS * (cos2sm + BB / 4 * (cosS * (-1 + 2 * cos2sm * cos2sm) -
        BB / 6 * cos2sm * (-3 + 4 * sinS * sinS) * (-3 + 4 * cos2sm * cos2sm)));
      sigP = sig; sig = s / (B * AA) + dSig;
    } while (Math.abs(sig - sigP) > 1e-14 && ++i < 200);
    cos2sm = Math.cos(2 * sig1 + sig); sinS = Math.sin(sig); cosS = Math.cos(sig);
    var x = sinU1 * sinS - cosU1 * cosS * cosA1;
    var lat2 = Math.atan2(sinU1 * cosS + cosU1 * sinS * cosA1, (1 - F) * Math.sqrt(sinAl * sinAl + x * x));
    var lam = Math.atan2(sinS * sinA1, cosU1 * cosS - sinU1 * sinS * cosA1);
    var C = F / 16 * cos2Al * (4 + F * (4 - 3 * cos2Al));
    var L = lam - (1 - C) * F * sinAl * (sig + C * sinS * (cos2sm + C * cosS * (-1 + 2 * cos2sm * cos2sm)));
    var lng2 = lng + L / rad;
    lng2 = ((lng2 + 540) % 360) - 180;
    return [lng2, lat2 / rad];
  }

  /* The disk polygon of nearby._disk: n vertices at radius / cos(pi / n). */
  function disk(lat, lng, radius, n) {
    n = n || 64;
    var r = radius / Math.cos(Math.PI / n), ring = [], lo = Infinity, hi = -Infinity;
    for (var k = 0; k < n; k++) {
      var p = direct(lat, lng, 360 * k / n, r);
      ring.push(p); lo = Math.min(lo, p[0]); hi = Math.max(hi, p[0]);
    }
    if (hi - lo > 180 || Math.abs(lat) + radius / 111000 >= 89.9) return null;
    return ring;
  }

  function inRing(x, y, ring) {
    var inside = false;
    for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      var xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
      if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }
  /* even-odd over all rings of a shape */
  function inShape(x, y, rings) {
    var c = 0;
    for (var r = 0; r < rings.length; r++) if (inRing(x, y, rings[r])) c++;
    return c % 2 === 1;
  }
  function orient(a, b, c) {
    var v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
    return v > 0 ? 1 : v < 0 ? -1 : 0;
  }
  function onSeg(a, b, c) {
    return Math.min(a[0], b[0]) <= c[0] && c[0] <= Math.max(a[0], b[0]) &&
      Math.min(a[1], b[1]) <= c[1] && c[1] <= Math.max(a[1], b[1]);
  }
  function segCross(p1, p2, q1, q2) {
    var o1 = orient(p1, p2, q1), o2 = orient(p1, p2, q2), o3 = orient(q1, q2, p1), o4 = orient(q1, q2, p2);
    if (o1 !== o2 && o3 !== o4) return true;
    return (o1 === 0 && onSeg(p1, p2, q1)) || (o2 === 0 && onSeg(p1, p2, q2)) ||
      (o3 === 0 && onSeg(q1, q2, p1)) || (o4 === 0 && onSeg(q1, q2, p2));
  }
  /* shapely.intersects of a shape (rings) and a simple polygon (ring): share any point */
  function intersects(rings, poly) {
    for (var r = 0; r < rings.length; r++) {
      var ring = rings[r];
      for (var i = 0, j = ring.length - 1; i < ring.length; j = i++)
        for (var k = 0, l = poly.length - 1; k < poly.length; l = k++)
          if (segCross(ring[j], ring[i], poly[l], poly[k])) return true;
    }
    if (inShape(poly[0][0], poly[0][1], rings)) return true;
    return inRing(rings[0][0][0], rings[0][0][1], poly);
  }

  /* EPSG:6933: cylindrical equal area on WGS84, standard parallel 30 degrees */
  function ea(p) {
    var rad = Math.PI / 180, s0 = Math.sin(30 * rad);
    var k0 = Math.cos(30 * rad) / Math.sqrt(1 - E2 * s0 * s0);
    var s = Math.sin(p[1] * rad);
    var q = (1 - E2) * (s / (1 - E2 * s * s) - 1 / (2 * E) * Math.log((1 - E * s) / (1 + E * s)));
    return [A * k0 * p[0] * rad, A * q / (2 * k0)];
  }
  function area(ring) {
    var s = 0, pts = ring.map(ea);
    for (var i = 0, j = pts.length - 1; i < pts.length; j = i++)
      s += (pts[j][0] + pts[i][0]) * (pts[j][1] - pts[i][1]);
    return Math.abs(s) / 2;
  }
  /* Sutherland-Hodgman: the part of ring inside the convex polygon clip (counter-clockwise) */
  function clip(ring, convex) {
    var out = ring;
    for (var i = 0, j = convex.length - 1; i < convex.length && out.length; j = i++) {
      var a = convex[j], b = convex[i], inp = out;
      out = [];
      for (var k = 0, l = inp.length - 1; k < inp.length; l = k++) {
        var p = inp[k], q = inp[l], pin = orient(a, b, p) >= 0, qin = orient(a, b, q) >= 0;
        if (pin !== qin) {
          var dx = p[0] - q[0], dy = p[1] - q[1], ex = b[0] - a[0], ey = b[1] - a[1];
          var t = ((a[0] - q[0]) * ey - (a[1] - q[1]) * ex) / (dx * ey - dy * ex);
          out.push([q[0] + t * dx, q[1] + t * dy]);
        }
        if (pin) out.push(p);
      }
    }
    return out;
  }

  /* Python's f"{x:,.{d}f}" (round half to even on exact ties), and "-0" shown as "0" */
  function fixed(x, d, sep) {
    var m = Math.abs(x) * Math.pow(10, d), s;
    if (m - Math.floor(m) === 0.5 && m < 9e15) {
      var f = Math.floor(m), r = f % 2 === 0 ? f : f + 1;
      s = (r / Math.pow(10, d)).toFixed(d); if (x < 0) s = "-" + s;
    } else s = x.toFixed(d);
    if (sep !== false) {
      var parts = s.split("."), neg = parts[0][0] === "-", int = neg ? parts[0].slice(1) : parts[0];
      int = int.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
      s = (neg ? "-" : "") + int + (parts.length > 1 ? "." + parts[1] : "");
    }
    return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s;
  }
  function g3(x) { return String(parseFloat(x.toPrecision(3))); }
  function formatArea(km2) { return km2 >= 100 ? fixed(km2, 0) : g3(km2); }
  function distance(m) { return m < 1000 ? String(m) + " m" : String(m / 1000) + " km"; }
  function g6(x) { return String(parseFloat(x.toPrecision(6))); }

  /* numpy's sum of a float64 array (pairwise: 8 accumulators from 8 values on; n <= 128) */
  function npSum(a) {
    var n = a.length, i, res;
    if (n < 8) { res = -0.0; for (i = 0; i < n; i++) res += a[i]; return res; }
    var r = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
    for (i = 8; i < n - (n % 8); i += 8) for (var j = 0; j < 8; j++) r[j] += a[i + j];
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[i];
    return res;
  }

  /* Around.__str__ */
  function sentence(r, noun, value, bounds) {
    var lo = bounds ? bounds[0] : 0, hi = bounds ? bounds[1] : Infinity;
    var showC = function (x) { return Math.max(x, 0); };
    var showS = function (x) { return lo >= 0 ? Math.max(x, 0) : hi <= 0 ? Math.min(x, 0) : x; };
    var n = r.cells.length, digits = r.count_moe >= 1 ? 0 : 1;
    var cells = n === 1 ? "the one whole H3 cell" : "the " + n + " whole H3 cells";
    var verb = n === 1 ? "overlaps" : "overlap", rad = distance(r.radius_m);
    var text = "about " + fixed(showC(r.count), digits) + " ± " + fixed(r.count_moe, digits) + " " +
      noun + " in " + cells + " (" + formatArea(r.area_km2) + " km²) that " + verb + " the " + rad +
      " circle — not a count within " + rad;
    var moved = showC(r.count) !== r.count;
    if (r.sum !== undefined) {
      var d = r.sum_moe >= 1 ? 0 : 1;
      text += "; their " + (value || "value") + " adds up to about " + fixed(showS(r.sum), d) +
        " ± " + fixed(r.sum_moe, d);
      moved = moved || showS(r.sum) !== r.sum;
    }
    if (r.coverage < 0.995)
      text += " (the circle reaches beyond the published area: released cells cover " +
        fixed(r.coverage * 100, 0, false) + "% of it)";
    (r.categories || []).forEach(function (c) {
      moved = moved || showC(c.count) !== c.count || (c.sum !== undefined && showS(c.sum) !== c.sum);
    });
    if (moved) {
      var rule = (r.sum === undefined || lo >= 0) ? "noisy totals below 0 are shown as 0"
        : hi <= 0 ? "noisy counts below 0, and noisy sums above 0, are shown as 0"
          : "noisy counts below 0 are shown as 0 (sums can be negative and are shown as they are)";
      text += " (" + rule + ")";
    }
    (r.categories || []).forEach(function (c) {
      var d = c.count_moe >= 1 ? 0 : 1;
      text += "\n  " + c.category + ": about " + fixed(showC(c.count), d) + " ± " + fixed(c.count_moe, d);
      if (c.sum !== undefined) {
        var ds = c.sum_moe >= 1 ? 0 : 1;
        text += ", " + (value || "value") + " about " + fixed(showS(c.sum), ds) + " ± " + fixed(c.sum_moe, ds);
      }
    });
    return text;
  }

  function hiddenRefusal(nCells, nHidden) {
    var some = nCells === 1 ? "the map cell needed here is hidden"
      : nHidden === nCells ? "all " + nCells + " map cells needed here are hidden"
        : nHidden + " of the " + nCells + " map cells needed here are hidden";
    return "this map cannot answer for this place: " + some + " because too few records fall " +
      "in them to show their numbers, and the publisher did not include the numbers needed to " +
      "add hidden cells up without bias; ask the publisher for a version of the map that " +
      "includes them";
  }

  /* around(src, lat, lng, radius): src = {rings(i), candidates(bbox) -> [i], released(i),
     id(i), area(i), stats: {count: {est, var, hidden, single_moe}, sum?}, z95, noun, value,
     bounds} */
  function around(src, lat, lng, radius) {
    var bad = function (t) { return { error: t }; };
    if (typeof lat !== "number" || !isFinite(lat)) return bad("lat must be a finite number, got " + lat);
    if (typeof lng !== "number" || !isFinite(lng)) return bad("lng must be a finite number, got " + lng);
    if (!(radius > 0) || !isFinite(radius)) return bad("radius_m must be > 0 metres, got " + radius + "; e.g. radius_m=500");
    if (lat < -90 || lat > 90) return bad("lat must be in [-90, 90] degrees, got " + lat);
    if (lng < -180 || lng > 180) return bad("lng must be in [-180, 180] degrees, got " + lng);
    var own = src.candidates([lng, lat, lng, lat]).filter(function (i) {
      return src.released(i) && inShape(lng, lat, src.rings(i));
    });
    if (!own.length)
      return bad("the point (" + g6(lat) + ", " + g6(lng) + ") is outside the released area (it " +
        "lies in no released H3 cell); pick a point inside the release's region");
    var poly = disk(lat, lng, radius);
    if (!poly) return bad("the circle crosses the antimeridian or reaches a pole, which around() " +
      "does not support; use a smaller radius_m");
    var bb = [Infinity, Infinity, -Infinity, -Infinity];
    poly.forEach(function (p) {
      bb[0] = Math.min(bb[0], p[0]); bb[1] = Math.min(bb[1], p[1]);
      bb[2] = Math.max(bb[2], p[0]); bb[3] = Math.max(bb[3], p[1]);
    });
    var cand = src.candidates(bb).filter(function (i) {
      return src.released(i) && intersects(src.rings(i), poly);
    });
    cand.sort(function (a, b) { var x = src.id(a), y = src.id(b); return x < y ? -1 : x > y ? 1 : 0; });
    var count = src.stats.count, nc = src.categories ? src.categories.length : 1, nHidden = 0;
    cand.forEach(function (i) {
      for (var k = 0; k < nc; k++) if (count.hidden[i * nc + k]) { nHidden++; break; }
    });
    if (nHidden) return bad(hiddenRefusal(cand.length, nHidden));
    var ccw = poly.slice().reverse();  // azimuths run clockwise: reverse for the clip
    var covered = 0, areaKm2 = 0;
    cand.forEach(function (i) {
      src.rings(i).forEach(function (ring) { covered += area(clip(ring, ccw)); });
      areaKm2 += src.area(i);
    });
    var out = { cells: cand.map(src.id), area_km2: areaKm2,
      coverage: Math.min(1, covered / area(poly)), radius_m: radius, lat: lat, lng: lng };
    /* per category: sums over the cells in id order (as numpy's bincount), then the total
       over categories (as numpy's sum) with Z95·√(Σ var), or the exact single-cell margin */
    var single = cand.length === 1, per = {};
    ["count", "sum"].forEach(function (s) {
      var st = src.stats[s];
      if (!st) return;
      var t = new Float64Array(nc), v = new Float64Array(nc);
      cand.forEach(function (i) {
        for (var k = 0; k < nc; k++) { t[k] += st.est[i * nc + k]; v[k] += st["var"][i * nc + k]; }
      });
      var moe = Array.prototype.map.call(v, function (x) {
        return single && st.single_moe !== null ? st.single_moe : src.z95 * Math.sqrt(x);
      });
      per[s] = { t: t, moe: moe };
      out[s] = npSum(t);
      out[s + "_moe"] = nc === 1 ? moe[0] : src.z95 * Math.sqrt(npSum(v));
    });
    if (src.categories) {
      out.categories = src.categories.map(function (c, k) {
        var o = { category: c, count: per.count.t[k], count_moe: per.count.moe[k] };
        if (per.sum) { o.sum = per.sum.t[k]; o.sum_moe = per.sum.moe[k]; }
        return o;
      });
    }
    out.text = sentence(out, src.noun, src.value, src.bounds);
    Object.defineProperty(out, "shapes", { value: cand, enumerable: false });  // for drawing
    return out;
  }


  /* Typed arrays arrive as base64 of gzip (dpmap/site/data.py); prepare() inflates those a
     layer's period needs, in place, with the browser's DecompressionStream (no network);
     b64() then hands them out as typed arrays. */
  function b64(x, T) {
    if (ArrayBuffer.isView(x)) return x;
    throw new Error("dpmap site: an array was used before prepare() inflated it");
  }
  function inflate(text) {
    var bin = atob(text), u8 = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
    var stream = new Blob([u8]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }
  function unpack(obj, types) {
    return Promise.all(Object.keys(types).map(function (k) {
      if (!obj || typeof obj[k] !== "string") return null;
      return inflate(obj[k]).then(function (buf) {
        obj[k] = types[k] === "text" ? (buf.byteLength ? new TextDecoder().decode(buf).split("\n") : [])
          : new types[k](buf);
      });
    }));
  }
  /* inflate what period p of layer L needs: shapes, that period's values and around rows,
     the trend */
  function prepare(L, p) {
    var jobs = [unpack(L.shapes, { ids: "text", centre: Int32Array, offsets: Int16Array,
      ring_start: Uint32Array, shape_start: Uint32Array, area_km2: Float32Array })];
    Object.keys(L.values[p]).forEach(function (s) {
      jobs.push(unpack(L.values[p][s], { value: Float32Array, moe: Float32Array, state: Uint8Array }));
    });
    if (L.around) Object.keys(L.around.periods[p]).forEach(function (s) {
      jobs.push(unpack(L.around.periods[p][s], { est: Float64Array, "var": Float64Array, hidden: Uint8Array }));
    });
    if (L.trend) jobs.push(unpack(L.trend, { slope: Float32Array, moe: Float32Array, significant: Uint8Array }));
    return Promise.all(jobs);
  }

  /* A layer's shapes (format in dpmap/site/data.py): lon/lat vertices, bboxes, a grid index */
  function decodeShapes(L) {
    var s = L.shapes, n = s.n, c = b64(s.centre, Int32Array), off = b64(s.offsets, Int16Array);
    var rs = b64(s.ring_start, Uint32Array), ss = b64(s.shape_start, Uint32Array);
    var u = Math.round(s.unit / 1e-7), nv = off.length / 2, i, v;
    var lng = new Float64Array(nv), lat = new Float64Array(nv), bbox = new Float64Array(4 * n);
    for (i = 0; i < n; i++) {
      var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (v = rs[ss[i]]; v < rs[ss[i + 1]]; v++) {
        /* integers first: a vertex shared by two shapes decodes identically in both */
        lng[v] = (c[2 * i] + off[2 * v] * u) * 1e-7; lat[v] = (c[2 * i + 1] + off[2 * v + 1] * u) * 1e-7;
        if (lng[v] < x0) x0 = lng[v]; if (lng[v] > x1) x1 = lng[v];
        if (lat[v] < y0) y0 = lat[v]; if (lat[v] > y1) y1 = lat[v];
      }
      bbox[4 * i] = x0; bbox[4 * i + 1] = y0; bbox[4 * i + 2] = x1; bbox[4 * i + 3] = y1;
    }
    /* a uniform grid over the layer's bbox: shapes listed in every grid cell their bbox meets */
    var bb = L.bbox, gs = Math.max(Math.sqrt((bb[2] - bb[0]) * (bb[3] - bb[1]) / Math.max(n, 1)) * 2, 1e-9);
    var W = Math.ceil((bb[2] - bb[0]) / gs) + 1, H = Math.ceil((bb[3] - bb[1]) / gs) + 1;
    var gx = function (x) { return Math.min(W - 1, Math.max(0, Math.floor((x - bb[0]) / gs))); };
    var gy = function (y) { return Math.min(H - 1, Math.max(0, Math.floor((y - bb[1]) / gs))); };
    var start = new Int32Array(W * H + 1), fill = new Int32Array(W * H), items = null, a, b, pass;
    for (pass = 0; pass < 2; pass++) {
      for (i = 0; i < n; i++)
        for (a = gx(bbox[4 * i]); a <= gx(bbox[4 * i + 2]); a++)
          for (b = gy(bbox[4 * i + 1]); b <= gy(bbox[4 * i + 3]); b++) {
            if (pass === 0) start[a + b * W + 1]++;
            else items[start[a + b * W] + fill[a + b * W]++] = i;
          }
      if (pass === 0) {
        for (i = 0; i < W * H; i++) start[i + 1] += start[i];
        items = new Int32Array(start[W * H]);
      }
    }
    return {
      n: n, rs: rs, ss: ss, lng: lng, lat: lat, bbox: bbox, ids: s.ids, area: b64(s.area_km2, Float32Array),
      rings: function (i) {
        var out = [];
        for (var r = ss[i]; r < ss[i + 1]; r++) {
          var ring = [];
          for (var q = rs[r]; q < rs[r + 1]; q++) ring.push([lng[q], lat[q]]);
          out.push(ring);
        }
        return out;
      },
      /* shapes whose bbox meets box = [minLng, minLat, maxLng, maxLat] */
      candidates: function (box) {
        var seen = new Set(), out = [];
        if (box[2] < bb[0] || box[0] > bb[2] || box[3] < bb[1] || box[1] > bb[3]) return out;
        for (var a = gx(box[0]); a <= gx(box[2]); a++)
          for (var b = gy(box[1]); b <= gy(box[3]); b++)
            for (var t = start[a + b * W]; t < start[a + b * W + 1]; t++) {
              var j = items[t];
              if (seen.has(j) || bbox[4 * j] > box[2] || bbox[4 * j + 2] < box[0] ||
                bbox[4 * j + 1] > box[3] || bbox[4 * j + 3] < box[1]) continue;
              seen.add(j); out.push(j);
            }
        return out;
      }
    };
  }

  /* What around() needs of period p of layer L (D: the DPMAP_SITE object; d: decodeShapes(L)) */
  function aroundSource(D, L, p, d) {
    var a = L.around, per = a.periods[p], stats = {};
    Object.keys(per).forEach(function (s) {
      stats[s] = { est: b64(per[s].est, Float64Array), "var": b64(per[s]["var"], Float64Array),
        hidden: b64(per[s].hidden, Uint8Array), single_moe: per[s].single_moe };
    });
    var st = b64(L.values[p][L.statistics[0].key].state, Uint8Array);
    return { rings: d.rings, candidates: d.candidates, released: function (i) { return st[i] !== 2; },
      id: function (i) { return d.ids[i]; }, area: function (i) { return d.area[i]; }, stats: stats,
      z95: D.z95, noun: D.noun, value: a.value, bounds: a.value_bounds, categories: a.categories };
  }

  var api = { b64: b64, prepare: prepare, decodeShapes: decodeShapes, aroundSource: aroundSource, direct: direct, disk: disk, inShape: inShape, intersects: intersects, clip: clip,
    area: area, fixed: fixed, formatArea: formatArea, sentence: sentence, around: around,
    hiddenRefusal: hiddenRefusal };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.dpmapGeo = api;
})(typeof window !== "undefined" ? window : this);
