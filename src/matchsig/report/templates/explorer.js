/* matchsig view: the page's script (plain ES5-style JavaScript, no library, no network). */
(function () {
  'use strict';
  var now = function () { return (window.performance && performance.now) ? performance.now() : Date.now(); };
  var t0 = now();
  var D = JSON.parse(document.getElementById('matchsig-data').textContent);
  var L = D.layers, H = D.heads, PARTS = D.parts, T = D.tokens.length;
  var qs = D.q_span[0], qe = D.q_span[1], ds = D.d_span[0], de = D.d_span[1];
  var nq = qe - qs, nd = de - ds;
  var $ = function (id) { return document.getElementById(id); };

  // ---- data ---------------------------------------------------------------------------------
  function bytes(b64) {
    var bin = atob(b64), n = bin.length, out = new Uint8Array(n);
    for (var i = 0; i < n; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function unpack(p, rows) {
    var ib = bytes(p.index), index = ib;
    if (p.index_bytes === 2) { // little-endian uint16, decoded by hand (no platform-order assumption)
      index = new Uint16Array(ib.length >> 1);
      for (var i = 0, j = 0; i < index.length; i++, j += 2) index[i] = ib[j] | (ib[j + 1] << 8);
    }
    return { k: p.k, rows: rows, index: index, weight: bytes(p.weight), scale: p.scale, mass: bytes(p.mass) };
  }
  var QD = unpack(D.qd, nq), DQ = unpack(D.dq, nd);

  /** Links of row r (0-based within its part) of head hi: [[target, weight], ...], strongest first. */
  function links(X, hi, r) {
    var k = X.k, base = (hi * X.rows + r) * k, s = X.scale[hi] / 255, out = [];
    for (var t = 0; t < k; t++) {
      var w = X.weight[base + t];
      if (w > 0) out.push([X.index[base + t], w * s]);
    }
    return out;
  }
  function mass(X, hi, r) { return X.mass[hi * X.rows + r] / 255; }

  // ---- state --------------------------------------------------------------------------------
  var S = { layer: 0, head: 0, dir: 'qd', pin: -1, hover: -1, metric: 'max_qd' };
  var cur = null; // derived data of the current head

  function derive(hi) {
    var c = { hi: hi, outQ: [], outD: [], revD: [], revQ: [], inD: new Float32Array(nd), inQ: new Float32Array(nq) };
    var i, j, ls, t;
    for (j = 0; j < nd; j++) c.revD.push([]);
    for (i = 0; i < nq; i++) c.revQ.push([]);
    for (i = 0; i < nq; i++) {
      ls = links(QD, hi, i); c.outQ.push(ls);
      for (t = 0; t < ls.length; t++) {
        j = ls[t][0]; c.revD[j].push([i, ls[t][1]]);
        if (ls[t][1] > c.inD[j]) c.inD[j] = ls[t][1];
      }
    }
    for (j = 0; j < nd; j++) {
      ls = links(DQ, hi, j); c.outD.push(ls);
      for (t = 0; t < ls.length; t++) {
        i = ls[t][0]; c.revQ[i].push([j, ls[t][1]]);
        if (ls[t][1] > c.inQ[i]) c.inQ[i] = ls[t][1];
      }
    }
    var byW = function (a, b) { return b[1] - a[1]; };
    for (j = 0; j < nd; j++) c.revD[j].sort(byW);
    for (i = 0; i < nq; i++) c.revQ[i].sort(byW);
    c.maxQD = QD.scale[hi]; c.maxDQ = DQ.scale[hi];
    return c;
  }

  // ---- helpers ------------------------------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function fmt(x, d) { return (x === null || x === undefined || !isFinite(x)) ? '–' : x.toFixed(d === undefined ? 3 : d); }
  function pct(x) { return (100 * x).toFixed(x < 0.1 ? 1 : 0) + '%'; }
  function heat(v) { // v in [0, 1] -> background
    if (!(v > 0)) return '';
    return 'rgba(220, 38, 38, ' + (0.06 + 0.8 * Math.sqrt(Math.min(1, v))).toFixed(3) + ')';
  }
  function isQ(p) { return p >= qs && p < qe; }
  function isD(p) { return p >= ds && p < de; }
  function tokText(p) { return D.text[p]; }
  function dirLabel(d) { return d === 'qd' ? 'Q\u2190D' : 'D\u2190Q'; }

  // ---- header, notes ------------------------------------------------------------------------
  function renderMeta() {
    var m = D.meta, parts = [];
    var add = function (k, v) { if (v !== undefined && v !== null && v !== '') parts.push([k, String(v)]); };
    add('model', m.model); add('qid', m.qid); add('docid', m.docid); add('grade', m.grade);
    add('tokens', nq + ' query + ' + nd + ' document (' + T + ' in all)');
    add('layers \u00d7 heads', L + ' \u00d7 ' + H);
    var box = $('meta');
    parts.forEach(function (kv, n) {
      if (n) box.appendChild(document.createTextNode(' \u00b7 '));
      box.appendChild(document.createTextNode(kv[0] + ' '));
      box.appendChild(el('b', null, kv[1]));
    });
    var base = scoreOf('none');
    var sb = $('score-box');
    sb.appendChild(document.createTextNode('score '));
    sb.appendChild(el('b', null, fmt(base, 4)));
    sb.appendChild(document.createTextNode(m.score ? '  (' + m.score + ')' : m.num_labels === 1 ? '  (logit)' : '  (log P(relevant))'));
    var notes = $('notes');
    (D.notes || []).forEach(function (n) { notes.appendChild(el('div', null, n)); });
    var leg = $('legend');
    var encoderNames = PARTS[0] === 'CLS';
    [[encoderNames ? '[CLS]' : PARTS[0], 0, PARTS[0]], ['query', 1, 'Q'], [encoderNames ? '[SEP]' : PARTS[2], 2, PARTS[2]],
     ['document', 3, 'D']].forEach(function (x) {
      var s = el('span', 'tk p' + x[1] + (x[1] === 0 || x[1] === 2 ? ' special' : ''), x[0]); s.title = x[2];
      leg.appendChild(s);
    });
    var em = el('span', 'tk em', 'exact match'); em.title = 'token also present on the other side';
    leg.appendChild(em);
    var ht = el('span', 'tk', 'attention'); ht.style.background = heat(0.6);
    leg.appendChild(ht);
  }

  // ---- tokens -------------------------------------------------------------------------------
  var spans = new Array(T);
  function renderTokens() {
    var qBox = $('query'), dBox = $('document');
    var fq = document.createDocumentFragment(), fd = document.createDocumentFragment();
    for (var p = 0; p < T; p++) {
      var part = D.part[p], special = !(part === 1 || part === 3);
      var s = el('span', 'tk p' + part + (special ? ' special' : '') + (D.exact[p] ? ' em' : ''), D.text[p]);
      s.setAttribute('data-pos', p);
      spans[p] = s;
      var box = p < ds ? fq : fd;
      if (D.space[p] && p > 0 && p !== ds) box.appendChild(document.createTextNode(' ')); // real spaces: copy-paste keeps them
      box.appendChild(s);
    }
    qBox.appendChild(fq); dBox.appendChild(fd);
    var onOver = function (ev) {
      var p = posOf(ev.target); if (p < 0) return;
      S.hover = p; shade(); showTokenTip(p, ev);
    };
    var onMove = function (ev) { if (!$('tip').hidden) placeTip(ev); };
    var onOut = function (ev) {
      var p = posOf(ev.target); if (p < 0) return;
      S.hover = -1; shade(); hideTip();
    };
    var onClick = function (ev) {
      var p = posOf(ev.target); if (p < 0) return;
      S.pin = (S.pin === p) ? -1 : p; shade();
      if (S.pin >= 0) reveal(S.pin);
    };
    [qBox, dBox].forEach(function (b) {
      b.addEventListener('mouseover', onOver); b.addEventListener('mouseout', onOut);
      b.addEventListener('mousemove', onMove); b.addEventListener('click', onClick);
    });
  }
  function posOf(t) {
    if (!t || !t.getAttribute) return -1;
    var v = t.getAttribute('data-pos');
    return v === null ? -1 : +v;
  }

  /** Scroll the document so that the strongest link of token p (or p itself) is in view. */
  function reveal(p) {
    var target = p;
    if (isQ(p) && cur) {
      var ls = S.dir === 'qd' ? cur.outQ[p - qs] : cur.revQ[p - qs];
      if (ls && ls.length) target = ds + ls[0][0];
    }
    if (isD(target) && spans[target] && spans[target].scrollIntoView) {
      var box = $('document'), r = spans[target].getBoundingClientRect(), b = box.getBoundingClientRect();
      if (r.top < b.top || r.bottom > b.bottom) box.scrollTop += r.top - b.top - b.height / 3;
    }
  }

  /** Shade every token for the current head, direction and focus token. */
  function shade() {
    var c = cur, f = S.hover >= 0 ? S.hover : S.pin, v = new Float32Array(T), p, i, j, ls, t, mx;
    var explain;
    if (f >= 0 && !(isQ(f) || isD(f))) f = -1;
    if (f < 0) {
      if (S.dir === 'qd') {
        for (j = 0; j < nd; j++) v[ds + j] = c.maxQD > 0 ? c.inD[j] / c.maxQD : 0;
        for (i = 0; i < nq; i++) v[qs + i] = mass(QD, c.hi, i);
        explain = 'Q\u2190D: each document token is shaded by the strongest attention a query token pays it; each query token by the share of its attention that goes to the document.';
      } else {
        for (i = 0; i < nq; i++) v[qs + i] = c.maxDQ > 0 ? c.inQ[i] / c.maxDQ : 0;
        for (j = 0; j < nd; j++) v[ds + j] = mass(DQ, c.hi, j);
        explain = 'D\u2190Q: each query token is shaded by the strongest attention a document token pays it; each document token by the share of its attention that goes to the query.';
      }
    } else {
      var fromQ = isQ(f), r = fromQ ? f - qs : f - ds;
      if (S.dir === 'qd') ls = fromQ ? c.outQ[r] : c.revD[r];
      else ls = fromQ ? c.revQ[r] : c.outD[r];
      var off = fromQ ? ds : qs;
      mx = 0;
      for (t = 0; t < ls.length; t++) mx = Math.max(mx, ls[t][1]);
      for (t = 0; t < ls.length; t++) v[off + ls[t][0]] = mx > 0 ? ls[t][1] / mx : 0;
      var who = '\u201c' + tokText(f) + '\u201d';
      if (S.dir === 'qd') explain = fromQ ? 'Q\u2190D: the document tokens ' + who + ' attends to most (its top links).'
        : 'Q\u2190D: the query tokens that attend to ' + who + ' (it is among their top links).';
      else explain = fromQ ? 'D\u2190Q: the document tokens that attend to ' + who + ' (it is among their top links).'
        : 'D\u2190Q: the query tokens ' + who + ' attends to most (its top links).';
      explain += ' Darker = stronger, relative to the strongest link shown.';
    }
    for (p = 0; p < T; p++) {
      var s = spans[p], bg = (p === f) ? '' : heat(v[p]), fg = (p !== f && v[p] > 0.45) ? '#fff' : '';
      if (s.style.backgroundColor !== bg) s.style.backgroundColor = bg;
      if (s.style.color !== fg) s.style.color = fg;
      var on = p === f;
      if (s.classList.contains('focus') !== on) s.classList.toggle('focus', on);
    }
    $('explain').textContent = explain + (S.pin >= 0 ? ' (pinned: Esc to unpin)' : ' Hover a token for its links; click to pin.');
    drawHeat(f);
  }

  // ---- tooltip ------------------------------------------------------------------------------
  var tip = null;
  function linkTable(title, ls, off, limit) {
    var box = document.createDocumentFragment();
    box.appendChild(el('div', 'sub', title));
    if (!ls.length) { box.appendChild(el('div', null, 'none among the top links')); return box; }
    var tb = el('table'), mx = ls[0][1];
    ls.slice(0, limit).forEach(function (x) {
      var tr = el('tr'), name = tokText(off + x[0]);
      var a = el('td', null, name); if (D.exact[off + x[0]]) a.style.color = '#fbbf24';
      tr.appendChild(a); tr.appendChild(el('td', null, fmt(x[1], 3)));
      var b = el('td', 'bar'), sp = el('span'); sp.style.width = (mx > 0 ? 100 * x[1] / mx : 0).toFixed(0) + '%';
      b.appendChild(sp); tr.appendChild(b); tb.appendChild(tr);
    });
    box.appendChild(tb);
    return box;
  }
  function showTokenTip(p, ev) {
    tip = tip || $('tip');
    tip.textContent = '';
    var part = PARTS[D.part[p]];
    var head = el('div', 'h', '\u201c' + D.tokens[p] + '\u201d');
    tip.appendChild(head);
    var info = part + ' token ' + p + (D.exact[p] ? ' \u00b7 exact match' : '');
    tip.appendChild(el('div', null, info));
    var c = cur;
    if (isQ(p)) {
      var i = p - qs;
      tip.appendChild(el('div', null, 'puts ' + pct(mass(QD, c.hi, i)) + ' of its attention on the document'));
      tip.appendChild(linkTable('Q\u2190D: its top links, p(Q\u1d62\u2190D\u2c7c)', c.outQ[i], ds, 8));
      tip.appendChild(linkTable('D\u2190Q: document tokens attending to it', c.revQ[i], ds, 6));
    } else if (isD(p)) {
      var j = p - ds;
      tip.appendChild(el('div', null, 'puts ' + pct(mass(DQ, c.hi, j)) + ' of its attention on the query'));
      tip.appendChild(linkTable('D\u2190Q: its top links, p(D\u2c7c\u2190Q\u1d62)', c.outD[j], qs, 8));
      tip.appendChild(linkTable('Q\u2190D: query tokens attending to it', c.revD[j], qs, 6));
    }
    tip.hidden = false;
    placeTip(ev);
  }
  function placeTip(ev) {
    tip = tip || $('tip');
    var x = ev.clientX + 14, y = ev.clientY + 14, w = tip.offsetWidth, h = tip.offsetHeight;
    if (x + w > window.innerWidth - 8) x = Math.max(8, ev.clientX - w - 14);
    if (y + h > window.innerHeight - 8) y = Math.max(8, ev.clientY - h - 14);
    tip.style.left = x + 'px'; tip.style.top = y + 'px';
  }
  function hideTip() { (tip || $('tip')).hidden = true; }

  // ---- grid ---------------------------------------------------------------------------------
  var cells = [];
  var contrast = {}; // hi -> rows
  var METRICS = [];
  function setupContrast() {
    (D.contrast || []).forEach(function (r) {
      if (r.layer < 0 || r.layer >= L || r.head < 0 || r.head >= H) return;
      var hi = r.layer * H + r.head;
      (contrast[hi] = contrast[hi] || []).push(r);
    });
  }
  // patching overlay (matchsig patch --site head): hi -> row; the heads of largest |effect| are marked
  var patching = {}, PATCH_TOP = [], PATCH_MARKED = 5;
  function setupPatching() {
    (D.patching || []).forEach(function (r) {
      if (r.layer < 0 || r.layer >= L || r.head < 0 || r.head >= H) return;
      patching[r.layer * H + r.head] = r;
    });
    PATCH_TOP = Object.keys(patching).map(Number).filter(function (hi) {
      var v = patching[hi].effect_mean; return v !== null && v !== undefined && isFinite(v);
    }).sort(function (a, b) {
      return Math.abs(patching[b].effect_mean) - Math.abs(patching[a].effect_mean) || a - b;
    });
  }
  function patchText(r) {
    return fmt(r.effect_mean, 3) + (r.effect_sd !== null && r.effect_sd !== undefined ? ' \u00b1 ' + fmt(r.effect_sd, 3) : '') +
      (r.n_pairs !== null && r.n_pairs !== undefined ? ' (' + r.n_pairs + ' pairs)' : '');
  }
  function kindsOf(hi) {
    var k = {};
    (contrast[hi] || []).forEach(function (r) { if (r.kind && r.kind !== 'none') k[r.kind] = true; });
    return k;
  }
  function setupMetrics() {
    var st = D.stats;
    var add = function (id, label, values, diverging) { METRICS.push({ id: id, label: label, v: values, div: !!diverging }); };
    var flat = function (a) { var o = []; a.forEach(function (row) { row.forEach(function (x) { o.push(x); }); }); return o; };
    add('max_qd', 'M(Q\u2190D) of this pair', flat(st.max_qd));
    add('max_dq', 'M(D\u2190Q) of this pair', flat(st.max_dq));
    add('exact_qd', 'exact-match share Q\u2190D', flat(st.exact_qd));
    add('exact_dq', 'exact-match share D\u2190Q', flat(st.exact_dq));
    var dirs = {};
    (D.contrast || []).forEach(function (r) { dirs[r.direction || ''] = true; });
    Object.keys(dirs).sort().forEach(function (d) {
      [['delta_relevant', 'contrast \u0394 rel\u2212easy'], ['delta_hard', 'contrast \u0394 hard\u2212easy']].forEach(function (f) {
        var v = new Array(L * H), any = false;
        for (var x = 0; x < v.length; x++) v[x] = null;
        (D.contrast || []).forEach(function (r) {
          if ((r.direction || '') === d && r[f[0]] !== null && r[f[0]] !== undefined) { v[r.layer * H + r.head] = r[f[0]]; any = true; }
        });
        if (any) add('c:' + f[0] + ':' + d, f[1] + (d ? ' ' + d.replace('<-', '\u2190') : ''), v, true);
      });
    });
    if (PATCH_TOP.length || (D.patching || []).length) {
      var pv = new Array(L * H), diag = '';
      for (var y = 0; y < pv.length; y++) { pv[y] = patching[y] ? patching[y].effect_mean : null; if (patching[y]) diag = patching[y].diagnostic || ''; }
      add('patching', 'patching effect' + (diag ? ' (' + diag + ')' : ''), pv, true);
    }
    var sel = $('metric');
    if (C) add('circuit', 'circuit |edge score| (' + (C.diagnostic || '') + ')', Array.prototype.slice.call(CW));
    METRICS.forEach(function (m) { var o = el('option', null, m.label); o.value = m.id; sel.appendChild(o); });
    sel.addEventListener('change', function () { S.metric = sel.value; paintGrid(); });
  }
  function metric() { for (var i = 0; i < METRICS.length; i++) if (METRICS[i].id === S.metric) return METRICS[i]; return METRICS[0]; }
  function renderGrid() {
    var g = $('grid');
    g.style.gridTemplateColumns = '26px repeat(' + H + ', 20px)';
    var f = document.createDocumentFragment();
    f.appendChild(el('div', 'ax', 'L\\H'));
    for (var h = 0; h < H; h++) f.appendChild(el('div', 'ax', String(h)));
    for (var l = 0; l < L; l++) {
      f.appendChild(el('div', 'ax', String(l)));
      for (h = 0; h < H; h++) {
        var hi = l * H + h, k = kindsOf(hi);
        var c = el('div', 'cell' + (k.syntactic && k.semantic ? ' both' : k.syntactic ? ' syn' : k.semantic ? ' sem' : (Object.keys(k).length ? ' unc' : '')));
        c.setAttribute('data-layer', l); c.setAttribute('data-head', h); c.setAttribute('role', 'gridcell');
        if (C && CIN['a' + l + '.h' + h]) c.classList.add('cn');
        if (PATCH_TOP.indexOf(hi) >= 0 && PATCH_TOP.indexOf(hi) < PATCH_MARKED) { c.classList.add('pt'); c.setAttribute('data-patch-rank', PATCH_TOP.indexOf(hi) + 1); }
        cells[hi] = c; f.appendChild(c);
      }
    }
    g.appendChild(f);
    g.addEventListener('click', function (ev) {
      var t = ev.target;
      if (t && t.classList && t.classList.contains('cell')) { select(+t.getAttribute('data-layer'), +t.getAttribute('data-head')); g.focus(); }
    });
    paintGrid();
  }
  function paintGrid() {
    // diverging metrics (contrast deltas): 0 is white, scaled by the largest |value|;
    // the pair's own statistics: scaled from their smallest to their largest value
    var m = metric(), mx = 0, mn = Infinity, v, ok = function (x) { return x !== null && x !== undefined && isFinite(x); };
    for (var i = 0; i < m.v.length; i++) if (ok(m.v[i])) { mx = Math.max(mx, m.div ? Math.abs(m.v[i]) : m.v[i]); mn = Math.min(mn, m.v[i]); }
    var lo = m.div ? 0 : (isFinite(mn) ? mn : 0), span = mx - lo;
    for (i = 0; i < L * H; i++) {
      v = m.v[i];
      var c = cells[i], bg = '#f3f4f6';
      if (ok(v)) {
        var a = span > 0 ? (m.div ? Math.abs(v) : v - lo) / span : 0.5;
        bg = (m.div && v < 0) ? 'rgba(37, 99, 235, ' + (0.08 + 0.92 * a).toFixed(3) + ')' : 'rgba(' + (m.div ? '220, 38, 38' : '13, 148, 136') + ', ' + (0.08 + 0.92 * a).toFixed(3) + ')';
      }
      c.style.background = bg;
      var l = Math.floor(i / H), h = i % H;
      var tt = 'layer ' + l + ', head ' + h + ': ' + m.label + ' = ' + fmt(v, 4);
      if (patching[i]) tt += '\npatching effect ' + patchText(patching[i]);
      (contrast[i] || []).forEach(function (r) { tt += '\n' + (r.direction || '') + ' ' + r.kind + (r.sign ? (r.sign > 0 ? ' (+)' : ' (\u2212)') : '') + ' (\u0394rel ' + fmt(r.delta_relevant, 4) + ', \u0394hard ' + fmt(r.delta_hard, 4) + ')'; });
      c.title = tt;
    }
    var leg = $('grid-legend');
    leg.textContent = '';
    var ramp = el('span', 'ramp');
    ramp.style.background = m.div ? 'linear-gradient(90deg, rgb(37,99,235), #fff, rgb(220,38,38))' : 'linear-gradient(90deg, rgba(13,148,136,.08), rgb(13,148,136))';
    leg.appendChild(el('span', null, m.div ? '\u2212' + fmt(mx, 3) : fmt(lo, 3)));
    leg.appendChild(ramp);
    leg.appendChild(el('span', null, fmt(mx, 3)));
    if ((D.contrast || []).length) {
      var a = el('span'); var s1 = el('span', 'sw'); s1.style.boxShadow = 'inset 0 0 0 2px var(--syn)'; a.appendChild(s1); a.appendChild(document.createTextNode('syntactic')); leg.appendChild(a);
      var b = el('span'); var s2 = el('span', 'sw'); s2.style.boxShadow = 'inset 0 0 0 2px var(--sem)'; b.appendChild(s2); b.appendChild(document.createTextNode('semantic')); leg.appendChild(b);
      var u = el('span'); var s3 = el('span', 'sw'); s3.style.boxShadow = 'inset 0 0 0 2px var(--unc)'; u.appendChild(s3); u.appendChild(document.createTextNode('matching, unclassified')); leg.appendChild(u);
    } else {
      leg.appendChild(el('span', null, '\u00b7 no contrast run: no highlighted heads'));
    }
    if (PATCH_TOP.length) {
      var p = el('span', 'patch-top'); var s4 = el('span', 'sw pt-sw'); p.appendChild(s4);
      p.appendChild(document.createTextNode('top patching heads:'));
      PATCH_TOP.slice(0, PATCH_MARKED).forEach(function (hi) {
        var a2 = el('a', 'patch-head', Math.floor(hi / H) + '/' + (hi % H) + ' (' + fmt(patching[hi].effect_mean, 2) + ')');
        a2.href = '#'; a2.setAttribute('data-hi', hi);
        a2.addEventListener('click', function (ev) { ev.preventDefault(); select(Math.floor(hi / H), hi % H); });
        p.appendChild(document.createTextNode(' ')); p.appendChild(a2);
      });
      leg.appendChild(p);
    }
  }

  // ---- head selection -----------------------------------------------------------------------
  function select(l, h) {
    l = Math.max(0, Math.min(L - 1, l)); h = Math.max(0, Math.min(H - 1, h));
    var prev = S.layer * H + S.head;
    if (cells[prev]) cells[prev].classList.remove('sel');
    S.layer = l; S.head = h;
    var hi = l * H + h;
    cells[hi].classList.add('sel');
    cur = derive(hi);
    $('head-label').textContent = 'Layer ' + l + ' \u00b7 Head ' + h;
    document.body.setAttribute('data-layer', l); document.body.setAttribute('data-head', h);
    $('heat-title').textContent = 'Attention of layer ' + l + ', head ' + h;
    var st = D.stats, info = $('head-info');
    info.textContent = '';
    var tb = el('table');
    var row = function (k, v) { var tr = el('tr'); tr.appendChild(el('td', null, k)); tr.appendChild(el('td', null, v)); tb.appendChild(tr); };
    row('M(Q\u2190D) / M(D\u2190Q)', fmt(st.max_qd[l][h]) + ' / ' + fmt(st.max_dq[l][h]));
    row('exact-match share Q\u2190D / D\u2190Q', fmt(st.exact_qd[l][h]) + ' / ' + fmt(st.exact_dq[l][h]));
    if (patching[hi]) row('patching effect' + (patching[hi].diagnostic ? ' (' + patching[hi].diagnostic + ')' : ''), patchText(patching[hi]) +
      (PATCH_TOP.indexOf(hi) >= 0 ? ', rank ' + (PATCH_TOP.indexOf(hi) + 1) + ' of ' + PATCH_TOP.length + ' by |effect|' : ''));
    (contrast[hi] || []).forEach(function (r) {
      row('contrast ' + (r.direction || '').replace('<-', '\u2190'), r.kind + (r.sign ? (r.sign > 0 ? ' (+)' : ' (\u2212)') : '') + ': \u0394rel ' + fmt(r.delta_relevant, 4) + ' (p ' + fmt(r.p_relevant, 3) +
        '), \u0394hard ' + fmt(r.delta_hard, 4) + ' (p ' + fmt(r.p_hard, 3) + ')');
    });
    info.appendChild(tb);
    if (C && CIN['a' + l + '.h' + h]) row('circuit', 'in the ' + (C.diagnostic || '') + ' circuit: |edge score| ' + fmt(CW[hi], 4));
    if (!$('tip').hidden && S.hover >= 0) hideTip();
    markCircuitHead();
    shade();
  }
  function step(dh) {
    var hi = S.layer * H + S.head + dh;
    hi = Math.max(0, Math.min(L * H - 1, hi));
    select(Math.floor(hi / H), hi % H);
  }
  function setDir(d) {
    S.dir = d;
    $('dir-qd').classList.toggle('on', d === 'qd'); $('dir-dq').classList.toggle('on', d === 'dq');
    $('dir-qd').setAttribute('aria-pressed', d === 'qd'); $('dir-dq').setAttribute('aria-pressed', d === 'dq');
    shade();
  }

  // ---- heatmap ------------------------------------------------------------------------------
  var HM = null;
  function drawHeat(focus) {
    var cv = $('heat'), wrap = $('heat-wrap'), ctx = cv.getContext('2d');
    var labelW = 96, top = 18, gap = 22;
    var avail = Math.max(200, wrap.clientWidth - labelW - 4);
    var cw = Math.max(2, Math.min(18, avail / Math.max(1, nd)));
    var rh = Math.max(4, Math.min(16, Math.floor(200 / Math.max(1, nq))));
    var bh = nq * rh, W = Math.ceil(labelW + cw * nd + 4), Ht = top + bh + gap + bh + 6;
    var dpr = window.devicePixelRatio || 1;
    if (cv.width !== Math.round(W * dpr) || cv.height !== Math.round(Ht * dpr)) {
      cv.width = Math.round(W * dpr); cv.height = Math.round(Ht * dpr);
      cv.style.width = W + 'px'; cv.style.height = Ht + 'px';
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, Ht);
    HM = { labelW: labelW, top: top, gap: gap, cw: cw, rh: rh, bh: bh };
    var c = cur, y2 = top + bh + gap, i, j, t, ls;
    ctx.fillStyle = '#f8fafc';
    ctx.fillRect(labelW, top, cw * nd, bh); ctx.fillRect(labelW, y2, cw * nd, bh);
    // exact-match document columns: a tick above each block
    ctx.fillStyle = '#d97706';
    for (j = 0; j < nd; j++) if (D.exact[ds + j]) { ctx.fillRect(labelW + j * cw, top - 4, Math.max(1, cw - (cw > 3 ? 1 : 0)), 3); ctx.fillRect(labelW + j * cw, y2 - 4, Math.max(1, cw - (cw > 3 ? 1 : 0)), 3); }
    var cell = function (x, y, v) {
      ctx.fillStyle = 'rgba(220, 38, 38, ' + Math.sqrt(Math.min(1, v)).toFixed(3) + ')';
      ctx.fillRect(x, y, cw > 3 ? cw - 0.5 : cw, rh > 5 ? rh - 1 : rh);
    };
    for (i = 0; i < nq; i++) {
      ls = c.outQ[i];
      for (t = 0; t < ls.length; t++) cell(labelW + ls[t][0] * cw, top + i * rh, c.maxQD > 0 ? ls[t][1] / c.maxQD : 0);
    }
    for (j = 0; j < nd; j++) {
      ls = c.outD[j];
      for (t = 0; t < ls.length; t++) cell(labelW + j * cw, y2 + ls[t][0] * rh, c.maxDQ > 0 ? ls[t][1] / c.maxDQ : 0);
    }
    ctx.font = '600 11px system-ui, sans-serif'; ctx.fillStyle = '#111827'; ctx.textBaseline = 'alphabetic';
    ctx.fillText('Q\u2190D', 4, top - 5); ctx.fillText('D\u2190Q', 4, y2 - 5);
    ctx.font = '10px system-ui, sans-serif'; ctx.textBaseline = 'middle';
    if (rh >= 8) {
      for (i = 0; i < nq; i++) {
        ctx.fillStyle = D.exact[qs + i] ? '#b45309' : '#374151';
        var s = tokText(qs + i); if (s.length > 14) s = s.slice(0, 13) + '\u2026';
        ctx.fillText(s, 4, top + i * rh + rh / 2); ctx.fillText(s, 4, y2 + i * rh + rh / 2);
      }
    }
    if (focus >= 0) {
      ctx.strokeStyle = '#111827'; ctx.lineWidth = 1.5;
      if (isQ(focus)) { i = focus - qs; ctx.strokeRect(labelW, top + i * rh, cw * nd, rh); ctx.strokeRect(labelW, y2 + i * rh, cw * nd, rh); }
      else if (isD(focus)) { j = focus - ds; ctx.strokeRect(labelW + j * cw, top, cw, bh); ctx.strokeRect(labelW + j * cw, y2, cw, bh); }
    }
  }
  function heatHit(ev) {
    if (!HM) return null;
    var r = $('heat').getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
    var j = Math.floor((x - HM.labelW) / HM.cw), block = null, i;
    if (y >= HM.top && y < HM.top + HM.bh) { block = 'qd'; i = Math.floor((y - HM.top) / HM.rh); }
    else if (y >= HM.top + HM.bh + HM.gap && y < HM.top + 2 * HM.bh + HM.gap) { block = 'dq'; i = Math.floor((y - HM.top - HM.bh - HM.gap) / HM.rh); }
    if (!block || i < 0 || i >= nq) return null;
    if (x < HM.labelW) return { block: block, i: i, j: -1 };
    if (j < 0 || j >= nd) return null;
    return { block: block, i: i, j: j };
  }
  function setupHeat() {
    var cv = $('heat');
    cv.addEventListener('mousemove', function (ev) {
      var h = heatHit(ev);
      if (!h) { hideTip(); return; }
      if (h.j < 0) { showTokenTip(qs + h.i, ev); return; }
      var w = null, ls = h.block === 'qd' ? cur.outQ[h.i] : cur.outD[h.j], key = h.block === 'qd' ? h.j : h.i;
      for (var t = 0; t < ls.length; t++) if (ls[t][0] === key) w = ls[t][1];
      tip = tip || $('tip'); tip.textContent = '';
      var a = '\u201c' + tokText(qs + h.i) + '\u201d', b = '\u201c' + tokText(ds + h.j) + '\u201d';
      tip.appendChild(el('div', 'h', h.block === 'qd' ? 'Q ' + a + ' \u2190 D ' + b : 'D ' + b + ' \u2190 Q ' + a));
      tip.appendChild(el('div', null, w === null ? 'not among the top links' : 'p = ' + fmt(w, 4)));
      if (D.text && D.tokens[qs + h.i] === D.tokens[ds + h.j]) tip.appendChild(el('div', null, 'exact match'));
      tip.hidden = false; placeTip(ev);
    });
    cv.addEventListener('mouseleave', hideTip);
    cv.addEventListener('click', function (ev) {
      var h = heatHit(ev); if (!h) return;
      var p = (h.j < 0 || h.block === 'qd') ? qs + h.i : ds + h.j; // Q<-D rows pin the query token, D<-Q cells the document token
      S.pin = S.pin === p ? -1 : p; shade();
      if (S.pin >= 0) reveal(h.j >= 0 ? ds + h.j : S.pin);
    });
    var pending = false;
    window.addEventListener('resize', function () {
      if (pending) return; pending = true;
      (window.requestAnimationFrame || setTimeout)(function () { pending = false; shade(); });
    });
  }

  // ---- ablation table -----------------------------------------------------------------------
  var SCORES = {};
  function scoreOf(name) { return Object.prototype.hasOwnProperty.call(SCORES, name) ? SCORES[name] : null; }
  function renderAblations() {
    var box = $('ablations'), base = scoreOf('none');
    var b = el('div', 'base');
    b.appendChild(document.createTextNode('unablated score: ')); b.appendChild(el('b', null, fmt(base, 4)));
    box.appendChild(b);
    var cols = PARTS.concat(['*']), rows = PARTS.concat(D.decoder ? ['DEC'] : []), mx = 0, x, y, s;
    for (x = 0; x < rows.length; x++) for (y = 0; y < cols.length; y++) {
      s = scoreOf(rows[x] + '<-' + cols[y]);
      if (s !== null && base !== null) mx = Math.max(mx, Math.abs(s - base));
    }
    var tb = el('table'), tr = el('tr');
    tr.appendChild(el('th', 'rowh', 'X \\ Y'));
    cols.forEach(function (c) { tr.appendChild(el('th', null, c === '*' ? 'All' : c)); });
    tb.appendChild(tr);
    for (x = 0; x < rows.length; x++) {
      tr = el('tr');
      tr.appendChild(el('th', 'rowh', rows[x]));
      for (y = 0; y < cols.length; y++) {
        var name = rows[x] + '<-' + cols[y], td = el('td');
        s = scoreOf(name);
        if (s === null) {
          var impossible = D.causal && cols[y] !== '*' && y > x;
          td.textContent = impossible ? '\u2013' : '\u00b7';
          td.title = name + (impossible ? ': impossible (the causal mask lets no ' + rows[x] + ' token read ' + cols[y] + ')' : ': not computed');
          tr.appendChild(td); continue;
        }
        var dl = base === null ? null : s - base;
        td.appendChild(el('span', 's', fmt(s, 3)));
        td.appendChild(el('span', 'dl', dl === null ? '' : (dl >= 0 ? '+' : '\u2212') + fmt(Math.abs(dl), 3)));
        if (dl !== null && mx > 0 && Math.abs(dl) > 1e-9) {
          var a = 0.06 + 0.7 * Math.abs(dl) / mx;
          td.style.background = dl < 0 ? 'rgba(220, 38, 38, ' + a.toFixed(3) + ')' : 'rgba(37, 99, 235, ' + a.toFixed(3) + ')';
        } else td.style.background = '#f8fafc';
        td.title = name.replace('<-', '\u2190') + ' ablated: score ' + fmt(s, 4) + (dl === null ? '' : ', \u0394 ' + fmt(dl, 4));
        td.setAttribute('data-ablation', name);
        tr.appendChild(td);
      }
      tb.appendChild(tr);
    }
    box.appendChild(tb);
  }

  // ---- circuit (matchsig circuit's circuit.json) ----------------------------------------------
  // nodes: 'input', 'score', 'a{l}.h{h}' (heads; a receiving head ends in .q/.k/.v), 'm{l}' (MLPs)
  var C = D.circuit || null, CIN = {}, CW = null, CSVG = 'http://www.w3.org/2000/svg';
  var CG = { col: 40, row: 54, left: 58, top: 26 };
  function circuitHeadIndex(name) {
    var m = /^a(\d+)\.h(\d+)/.exec(name);
    return m ? (+m[1]) * H + (+m[2]) : -1;
  }
  function setupCircuit() {
    if (!C) return;
    C.nodes.forEach(function (n) { CIN[n] = true; });
    CW = new Float64Array(L * H); // per head: the summed |score| of the sent edges it sends or receives
    C.edges.forEach(function (e) {
      [e[0], e[1]].forEach(function (n) { var hi = circuitHeadIndex(n); if (hi >= 0) CW[hi] += Math.abs(e[2]); });
    });
  }
  function cpos(name) { // (x, y) in pixels: as the report's figure, input at the bottom, score on top
    var base = name.charAt(0) === 'a' ? name.split('.').slice(0, 2).join('.') : name.split('.')[0];
    var colX = function (c) { return CG.left + c * CG.col; };
    var rowY = function (r) { return CG.top + (L + 1 - r) * CG.row; };
    if (base === 'input') return [colX((H - 1) / 2), rowY(0)];
    if (base === 'score') return [colX((H - 1) / 2), rowY(L + 1)];
    if (base.charAt(0) === 'm') return [colX(H + 0.5), rowY(+base.slice(1) + 1.5)];
    var hi = circuitHeadIndex(base);
    return [colX(hi % H), rowY(Math.floor(hi / H) + 1)];
  }
  function svg(tag, attrs, parent) {
    var e = document.createElementNS(CSVG, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function drawCircuit() {
    var wrap = $('circuit-wrap'), n = +$('circuit-n').value;
    wrap.textContent = '';
    var W = CG.left + (H + 1.5) * CG.col, Hh = CG.top * 2 + (L + 1) * CG.row;
    var root = svg('svg', { width: W, height: Hh, viewBox: '0 0 ' + W + ' ' + Hh, role: 'img', 'aria-label': 'circuit' }, wrap);
    var r, x;
    for (r = 0; r <= L + 1; r++) {
      var ty = CG.top + (L + 1 - r) * CG.row;
      var lab = svg('text', { x: 4, y: ty + 3, fill: '#667085' }, root);
      lab.textContent = r === 0 ? 'input' : r === L + 1 ? 'score' : 'layer ' + (r - 1);
    }
    for (x = 0; x < H; x++) {
      var hl = svg('text', { x: CG.left + x * CG.col, y: Hh - 4, fill: '#667085', 'text-anchor': 'middle' }, root);
      hl.textContent = String(x);
    }
    var ml = svg('text', { x: CG.left + (H + 0.5) * CG.col, y: Hh - 4, fill: '#667085', 'text-anchor': 'middle' }, root);
    ml.textContent = 'MLP';
    var shown = C.edges.slice(0, n), top = 0;
    shown.forEach(function (e) { top = Math.max(top, Math.abs(e[2])); });
    top = top || 1;
    var shift = { q: -0.18, k: 0, v: 0.18 }, g = svg('g', { id: 'circuit-edges' }, root);
    shown.forEach(function (e) {
      var a = cpos(e[0]), b = cpos(e[1]), parts = e[1].split('.');
      var dx = (e[1].charAt(0) === 'a' && parts.length === 3) ? shift[parts[2]] * CG.col : 0;
      var line = svg('line', { x1: a[0], y1: a[1], x2: b[0] + dx, y2: b[1], 'class': 'edge',
        stroke: e[2] >= 0 ? '#2563eb' : '#dc2626', 'stroke-opacity': 0.6,
        'stroke-width': (0.4 + 3.0 * Math.abs(e[2]) / top).toFixed(2),
        'data-sender': e[0], 'data-receiver': e[1], 'data-score': e[2] }, g);
      svg('title', {}, line).textContent = e[0] + ' \u2192 ' + e[1] + ': ' + fmt(e[2], 4) + (e[3] ? '' : ' (not on a path from the input to the score)');
    });
    var nodes = ['input', 'score'], l, h;
    for (l = 0; l < L; l++) { for (h = 0; h < H; h++) nodes.push('a' + l + '.h' + h); nodes.push('m' + l); }
    nodes.forEach(function (name) {
      var p = cpos(name), inC = !!CIN[name], hi = circuitHeadIndex(name), node;
      var fill = inC ? '#111827' : '#d1d5db';
      if (name.charAt(0) === 'm') node = svg('rect', { x: p[0] - 5, y: p[1] - 5, width: 10, height: 10, fill: fill }, root);
      else node = svg('circle', { cx: p[0], cy: p[1], r: inC ? 6 : 3.5, fill: fill }, root);
      node.setAttribute('data-node', name);
      svg('title', {}, node).textContent = name + (inC ? ' (in the circuit)' : '') +
        (hi >= 0 ? ': layer ' + Math.floor(hi / H) + ', head ' + (hi % H) + ', |edge score| ' + fmt(CW[hi], 4) : '');
      if (hi >= 0) {
        node.setAttribute('class', 'nd' + (hi === S.layer * H + S.head ? ' sel' : ''));
        node.setAttribute('data-layer', Math.floor(hi / H)); node.setAttribute('data-head', hi % H);
      }
    });
    $('circuit-n-label').textContent = n + ' of ' + C.edges.length + (C.edges.length < C.size ? ' sent (' + C.size + ' in the circuit)' : '');
  }
  function markCircuitHead() {
    if (!C) return;
    var old = document.querySelectorAll('#circuit-wrap .nd.sel');
    for (var i = 0; i < old.length; i++) old[i].classList.remove('sel');
    var now2 = document.querySelector('#circuit-wrap .nd[data-layer="' + S.layer + '"][data-head="' + S.head + '"]');
    if (now2) now2.classList.add('sel');
  }
  function renderCircuit() {
    if (!C) return;
    $('circuit-panel').hidden = false;
    var ci = C.ci || [];
    $('circuit-title').textContent = 'Circuit of ' + (C.diagnostic || '?') + ' (' + C.method + ', ' + C.ablation + ' ablation)';
    $('circuit-info').textContent = C.size + ' edges, ' + C.nodes.length + ' nodes: faithfulness ' + fmt(C.faithfulness, 2) +
      ' (95% CI ' + fmt(ci[0], 2) + ' to ' + fmt(ci[1], 2) + ')' +
      (C.target === null ? '' : C.reached ? ', the smallest circuit reaching ' + C.target : ', target ' + C.target + ' not reached');
    var range = $('circuit-n');
    range.max = Math.max(1, C.edges.length);
    range.value = Math.min(C.edges.length, 60) || 1;
    range.disabled = !C.edges.length;
    range.addEventListener('input', drawCircuit);
    $('circuit-wrap').addEventListener('click', function (ev) {
      var t = ev.target;
      if (t && t.getAttribute && t.getAttribute('data-layer') !== null) select(+t.getAttribute('data-layer'), +t.getAttribute('data-head'));
    });
    drawCircuit();
  }

  // ---- keyboard -----------------------------------------------------------------------------
  function setupKeys() {
    document.addEventListener('keydown', function (ev) {
      var t = ev.target, tag = t && t.tagName;
      if (tag === 'SELECT' || tag === 'INPUT' || tag === 'TEXTAREA' || ev.altKey || ev.ctrlKey || ev.metaKey) return;
      var k = ev.key, done = true;
      if (k === 'ArrowRight') step(1);
      else if (k === 'ArrowLeft') step(-1);
      else if (k === 'ArrowDown') select(S.layer + 1, S.head);
      else if (k === 'ArrowUp') select(S.layer - 1, S.head);
      else if (k === 'x' || k === 'X') setDir(S.dir === 'qd' ? 'dq' : 'qd');
      else if (k === 'Escape') { S.pin = -1; S.hover = -1; hideTip(); shade(); }
      else done = false;
      if (done) ev.preventDefault();
    });
    $('dir-qd').addEventListener('click', function () { setDir('qd'); });
    $('dir-dq').addEventListener('click', function () { setDir('dq'); });
  }

  // ---- start --------------------------------------------------------------------------------
  function initialHead() {
    var best = -1, bv = -1, hi, ks;
    for (hi = 0; hi < L * H; hi++) { ks = kindsOf(hi); if (Object.keys(ks).length) return hi; }
    for (var l = 0; l < L; l++) for (var h = 0; h < H; h++) {
      // the strongest exact-matching head, both ways (ties: the sharper Q<-D attention)
      var v = D.stats.exact_qd[l][h] + D.stats.exact_dq[l][h] + 1e-3 * D.stats.max_qd[l][h];
      if (v > bv) { bv = v; best = l * H + h; }
    }
    return Math.max(0, best);
  }
  (D.scores || []).forEach(function (s) { SCORES[s.name] = s.score; });
  renderMeta();
  setupContrast();
  setupPatching();
  setupCircuit();
  setupMetrics();
  renderTokens();
  renderGrid();
  renderAblations();
  setupHeat();
  renderCircuit();
  setupKeys();
  var first = initialHead();
  S.dir = 'qd'; $('dir-qd').classList.add('on');
  select(Math.floor(first / H), first % H);
  var ms = now() - t0;
  window.matchsig = {
    data: D, renderMs: ms,
    select: select, setDirection: setDir,
    state: function () { return { layer: S.layer, head: S.head, dir: S.dir, pin: S.pin }; },
    circuitEdges: function () {
      return Array.prototype.map.call(document.querySelectorAll('#circuit-edges line'), function (e) {
        return [e.getAttribute('data-sender'), e.getAttribute('data-receiver'), +e.getAttribute('data-score')];
      });
    },
    links: function (dir, l, h, r) { return links(dir === 'dq' ? DQ : QD, l * H + h, r); }
  };
  document.body.setAttribute('data-render-ms', ms.toFixed(1));
  document.body.setAttribute('data-ready', '1');
})();
