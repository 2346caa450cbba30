/* 今日数据页：GET /api/desk/stats?day=YYYY-MM-DD（店铺时区的一天）。转人工按原因、首次响应中位数与 P90、
 * SLA 超时按类型、交还机器人、人工结束、顾客取消、错题本新增。看今天时，有新的转人工等事件或每分钟刷新一次。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var CFG = D.CFG;
  var $ = D.$, h = D.h, api = D.api;
  var SLA_ORDER = ["first_response", "next_response", "resolution"];
  var COUNTED = {queued: 1, cancelled: 1, replied: 1, handed_back: 1, closed: 1, sla_breach: 1, corrected: 1};

  var state = {day: CFG.day || "", shown: null, seq: 0, refreshTimer: null};

  function isToday() { return !state.day || state.day === CFG.today; }

  function mmss(seconds) { return seconds === null || seconds === undefined ? "—" : D.duration(seconds); }

  function shift(day, days) {
    var d = new Date(day + "T12:00:00Z");
    d.setUTCDate(d.getUTCDate() + days);
    return d.toISOString().slice(0, 10);
  }

  function setDay(day) {
    state.day = day && day !== CFG.today ? day : "";
    var url = window.location.pathname + (state.day ? "?day=" + state.day : "");
    history.replaceState(null, "", url);
    load();
  }

  function load() {
    var seq = ++state.seq;
    return api("GET", "/api/desk/stats" + (state.day ? "?day=" + encodeURIComponent(state.day) : "")).then(function (result) {
      if (seq !== state.seq) { return; }
      $("stats-error").hidden = true;
      render(result.data);
    }).catch(function (error) {
      if (seq !== state.seq) { return; }
      $("stats-error").textContent = "数据加载失败：" + error.message;
      $("stats-error").hidden = false;
    });
  }

  function card(name, value, sub, kind) {
    var el = document.querySelector(".stat-card[data-stat=" + name + "]");
    el.querySelector(".stat-value").textContent = value;
    el.querySelector(".stat-sub").textContent = sub || "";
    el.classList.toggle("stat-danger", kind === "danger");
    el.classList.toggle("stat-good", kind === "good");
  }

  // horizontal bars: [[label, n, key]] largest first
  function bars(box, rows, emptyText, kind) {
    var max = rows.reduce(function (m, r) { return Math.max(m, r[1]); }, 0);
    if (!rows.length || !max) { D.fill(box, h("p", {"class": "empty", text: emptyText})); return; }
    var total = rows.reduce(function (n, r) { return n + r[1]; }, 0);
    D.fill(box, rows.map(function (r) {
      var fill = h("span", {"class": "bar-fill" + (kind ? " bar-" + kind : "")});
      fill.style.width = Math.max(2, Math.round(r[1] / max * 100)) + "%";  // CSSOM: allowed by the page's CSP
      return h("div", {"class": "bar-row", dataset: {key: r[2]}},
        h("span", {"class": "bar-label", text: r[0], title: r[2]}),
        h("span", {"class": "bar-track"}, fill),
        h("span", {"class": "bar-value"}, h("strong", {text: r[1]}),
          h("span", {"class": "muted small", text: " " + Math.round(r[1] / total * 100) + "%"})));
    }));
  }

  function render(data) {
    state.shown = data;
    var today = data.day === CFG.today;
    $("stats-title").textContent = today ? "今日数据" : data.day + " 数据";
    $("day").value = data.day;
    $("day-next").disabled = !!CFG.today && data.day >= CFG.today;
    $("day-today").disabled = today;
    $("stats-updated").textContent = (today ? "实时 · " : "") + "更新于 " + D.when(new Date().toISOString());

    var fr = data.first_response_s || {};
    card("handoffs", String(data.handoffs), "已回复 " + (fr.answered || 0) + " 个");
    card("median", mmss(fr.median), fr.answered ? "从转人工到客服首次回复" : "当天还没有客服回复");
    card("p90", mmss(fr.p90), fr.answered ? "90% 的会话在此时间内得到回复" : "");
    var breachKinds = SLA_ORDER.filter(function (k) { return (data.sla_breaches_by_kind || {})[k]; }).map(function (k) {
      return D.slaKindLabel(k) + " " + data.sla_breaches_by_kind[k];
    });
    card("sla_breaches", String(data.sla_breaches), breachKinds.join(" · ") || "没有超时",
         data.sla_breaches ? "danger" : "good");
    card("handed_back", String(data.handed_back), "客服处理后交还机器人");
    card("closed", String(data.closed), "客服结束的会话");
    card("cancelled_by_customer", String(data.cancelled_by_customer), "排队时顾客说不用了");
    card("corrections", String(data.corrections), "当天记入错题本的（意图 / 知识条目 / 新答案）");

    var reasons = Object.keys(data.handoffs_by_reason || {}).map(function (key) {
      return [key === "unknown" ? "未注明原因" : D.reasonLabel(key), data.handoffs_by_reason[key], key];
    }).sort(function (a, b) { return b[1] - a[1]; });
    bars($("reasons"), reasons, "这一天没有转人工");

    var byKind = data.sla_breaches_by_kind || {};
    var kinds = SLA_ORDER.filter(function (k) { return k in byKind; }).concat(Object.keys(byKind).filter(function (k) {
      return SLA_ORDER.indexOf(k) < 0;
    }));
    bars($("breaches"), kinds.map(function (k) { return ["超时未" + D.slaKindLabel(k), byKind[k], k]; }),
         "这一天没有超时", "danger");
  }

  function scheduleRefresh() {
    if (!isToday() || state.refreshTimer) { return; }
    state.refreshTimer = setTimeout(function () { state.refreshTimer = null; load(); }, 1000);
  }

  function init() {
    $("day").addEventListener("change", function () { if (this.value) { setDay(this.value); } });
    $("day-prev").addEventListener("click", function () { setDay(shift($("day").value || CFG.today, -1)); });
    $("day-next").addEventListener("click", function () { setDay(shift($("day").value || CFG.today, 1)); });
    $("day-today").addEventListener("click", function () { setDay(""); });
    if (state.day === CFG.today) { state.day = ""; }
    load();
    D.live({desk: function (event) { if (COUNTED[event.kind]) { scheduleRefresh(); } }, reconnected: scheduleRefresh});
    setInterval(function () { if (isToday()) { load(); } }, 60000);
  }

  init();
}());
